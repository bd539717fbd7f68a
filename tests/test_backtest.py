"""Backtesting: traces in, the live cascade replayed, five baselines beside it."""

from __future__ import annotations

import asyncio
import csv
import gc
import gzip
import json
import random
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from polycascade import ConfigError, Task
from polycascade.agents.evaluators import Consensus
from polycascade.backtest import load_traces, run_backtest, split
from polycascade.backtest._heap import collector_paused
from polycascade.backtest.replay import ReplayGateway, _score
from polycascade.catalog import Catalog
from polycascade.governor import DEFAULT_POLICY, Governor
from polycascade.graphs.cascade import Cascade, CascadeSettings
from polycascade.ledger import MemoryLedger, Tally
from polycascade.policies.config import RoutingConfig, ShareCap
from polycascade.policies.routing import RoutingSettings

from .conftest import run_cli

SHIPPED = Path(__file__).parents[1] / "examples" / "traces" / "mmlu_pro.csv.gz"
MODELS = [  # (model, vendor, accuracy, cost per call)
    ("tiny", "DeepSeek", 0.45, "0.0001"),
    ("small", "Mistral", 0.6, "0.0003"),
    ("large", "OpenAI", 0.85, "0.003"),
]
CATEGORIES = ["math", "law"]


def synthetic(path: Path, tasks: int = 120, *, verdict: bool = False, seed: int = 7) -> Path:
    """A small trace file with only the required columns plus cost_usd, vendor and verdict/answer."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        columns = ["task_id", "model", "correct", "cost_usd", "vendor", "category"]
        columns += ["verdict"] if verdict else ["answer"]
        w = csv.writer(f)
        w.writerow(columns)
        for t in range(tasks):
            gold = rng.choice("ABCD")
            for model, vendor, accuracy, cost in MODELS:
                right = rng.random() < accuracy
                answer = gold if right else rng.choice([c for c in "ABCD" if c != gold])
                evidence = ("pass" if right == (rng.random() < 0.9) else "fail") if verdict else answer
                w.writerow([f"t{t}", model, int(right), cost, vendor, CATEGORIES[t % 2], evidence])
    return path


def test_loads_csv_jsonl_parquet_and_gzip_alike(tmp_path: Path) -> None:
    csv_file = synthetic(tmp_path / "t.csv", 10)
    rows = list(csv.DictReader(csv_file.open()))
    jsonl = tmp_path / "t.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    a, b, c = load_traces(csv_file), load_traces(jsonl), load_traces(parquet)
    assert a.rows == b.rows == c.rows == 30 and a.tasks.keys() == b.tasks.keys() == c.tasks.keys()
    assert a.tasks["t3"].outcomes["large"] == b.tasks["t3"].outcomes["large"] == c.tasks["t3"].outcomes["large"]
    assert a.models["large"].jurisdiction == "US"  # from the vendor table: no jurisdiction column


def test_bad_rows_are_reported_with_their_lines_and_skipped(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(
        "task_id,model,correct,cost_usd,vendor\n"
        "a,m1,1,0.001,OpenAI\n"
        "b,m1,2,0.001,OpenAI\n"  # correct out of range
        ",m1,1,0.001,OpenAI\n"  # no task id
        "c,m1,1,-3,OpenAI\n"  # negative cost
        "d,unpriced-model,1,,OpenAI\n"  # no cost and no catalog price
    )
    traces = load_traces(f)
    assert traces.rows == 1
    assert [issue.split(": ", 1)[0] for issue in traces.issues] == [f"{f}:{n}" for n in (3, 4, 5, 6)]
    assert "never guessed" in traces.issues[-1]


def test_missing_required_columns_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("task,model,score\n1,a,1\n")
    with pytest.raises(ConfigError, match=r"missing required column\(s\) task_id, correct"):
        load_traces(f)
    result = run_cli("backtest", "--traces", str(f))
    assert result.returncode == 2 and "task_id" in result.stderr


def test_missing_cost_comes_from_tokens_and_the_catalog(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("task_id,model,correct,input_tokens,output_tokens\n1,gpt-4o-mini,1,1000,100\n")
    outcome = load_traces(f).tasks["1"].outcomes["gpt-4o-mini"]
    assert outcome.cost == Catalog.bundled()["gpt-4o-mini"].cost(1000, 100)


def test_the_split_is_deterministic_and_seeded() -> None:
    ids = [str(i) for i in range(1000)]
    assert split(ids, 0.5, 0) == split(list(reversed(ids)), 0.5, 0)
    assert split(ids, 0.5, 0) != split(ids, 0.5, 1)
    assert 400 < len(split(ids, 0.5, 0)[0]) < 600


@pytest.mark.parametrize("verdict", [False, True])
def test_a_minimal_file_backtests_with_all_baselines(tmp_path: Path, verdict: bool) -> None:
    traces = load_traces(synthetic(tmp_path / "t.csv", verdict=verdict))
    result = run_backtest(traces, DEFAULT_POLICY)
    assert set(result["baselines"]) == {"best_single", "cheapest", "oracle", "threshold", "cascade"}
    b = result["baselines"]
    assert b["best_single"]["models"] == "large" and b["cheapest"]["models"] == "tiny"
    for other in b.values():
        assert b["oracle"]["accuracy"] >= other["accuracy"]
    ours = result["polycascade"]
    assert ours["violations"] == {"residency": 0, "budget": 0, "vendor_share": 0}
    assert 0 < ours["accuracy"] <= 1 and ours["tasks"] == result["split"]["test_tasks"]


def test_replay_never_reads_correct_on_the_test_split(tmp_path: Path) -> None:
    traces = load_traces(synthetic(tmp_path / "t.csv"))
    _, test = split(list(traces.tasks), 0.5, 0)
    flipped = load_traces(synthetic(tmp_path / "t.csv"))
    for task_id in test:
        trace = flipped.tasks[task_id]
        trace.outcomes = {m: replace(o, correct=1 - o.correct) for m, o in trace.outcomes.items()}
    a, b = run_backtest(traces, DEFAULT_POLICY), run_backtest(flipped, DEFAULT_POLICY)
    ours_a, ours_b = a["polycascade"], b["polycascade"]
    assert ours_a["total_cost_usd"] == ours_b["total_cost_usd"]  # the same calls were made
    assert ours_a["escalation_rate"] == ours_b["escalation_rate"]
    assert ours_a["by_vendor"] == ours_b["by_vendor"]
    assert ours_a["accuracy"] != ours_b["accuracy"]  # only the scoring saw the flip


@pytest.mark.parametrize("answer_value", [None, 0.0004])  # by threshold; by worth (stops on some tasks)
def test_the_direct_driver_and_langgraph_make_the_same_decisions(tmp_path: Path, answer_value: float | None) -> None:
    traces = load_traces(synthetic(tmp_path / "t.csv", 30))
    settings = CascadeSettings(routing=RoutingSettings(answer_value=answer_value))

    def make() -> Cascade:
        ledger = MemoryLedger()
        gateway = ReplayGateway(traces, Catalog(traces.models.values()), ledger)
        pool = list(traces.models.values())
        return Cascade(gateway, pool, evaluator=Consensus(), governor=Governor(ledger=ledger), settings=settings)

    async def both() -> list[str]:
        a, b = make(), make()
        stops = []
        for task_id, trace in traces.tasks.items():
            task = Task("", kind=trace.category, id=task_id, input_tokens=100, max_tokens=100)
            via_graph, direct = await a.run(task), await b.run_direct(task)
            assert [(x.model, x.verdict) for x in via_graph.attempts] == [(x.model, x.verdict) for x in direct.attempts]
            assert via_graph.total_cost == direct.total_cost and via_graph.stop_reason == direct.stop_reason
            stops.append(direct.stop_reason)
        return stops

    stops = asyncio.run(both())
    if answer_value is not None:  # some answers were kept without a second opinion, and said so
        assert any("keep the answer so far" in s for s in stops), stops


def test_cli_json_and_sweep_plot(tmp_path: Path) -> None:
    traces = synthetic(tmp_path / "t.csv", 60)
    result = run_cli("backtest", "--traces", str(traces), "--json", "--seed", "3")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["split"]["seed"] == 3 and "cascade" in data["baselines"]
    png = tmp_path / "sweep.png"
    swept = run_cli("backtest", "--traces", str(traces), "--sweep", "--plot", str(png), "--json")
    assert swept.returncode == 0, swept.stderr
    sweep = json.loads(swept.stdout)
    assert len(sweep["points"]) == 36 and sweep["pareto"]
    assert {p["knobs"].get("answer_value_usd") for p in sweep["points"]} == {None, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_shipped_traces_replay_with_zero_violations() -> None:
    traces = load_traces(SHIPPED)
    assert traces.rows == 174_180 and not traces.issues
    result = run_backtest(traces, DEFAULT_POLICY, train_fraction=0.9)  # a tenth as test: quick
    assert result["polycascade"]["violations"] == {"residency": 0, "budget": 0, "vendor_share": 0}
    assert result["baselines"]["best_single"]["models"] == "gpt-4o-2024-05-13"


def test_the_columnar_fast_path_reads_exactly_what_the_row_path_reads(tmp_path: Path) -> None:
    header = "task_id,model,correct,category,vendor,verdict,answer,input_tokens,output_tokens,cost_usd,latency_s"
    lines = [
        "t1, gpt-4o-mini ,1,math,OpenAI,pass,B,1000,100,,0.5",  # cost from tokens × the catalog price
        "t1,tiny,0.25,math,DeepSeek,FAIL,,10,5,0.0001,",
        "t2,tiny,0,,DeepSeek,,C,,,0.00012345678,1.25",  # blank category → general; blanks → None
        "t2,gpt-4o-mini,1.0,law,,yes,C,12.0,3,0.002,",  # vendor from the catalog; tokens as floats
        "t1,tiny,1,law,DeepSeek,pass,A,10,5,0.0002,",  # t1 again, out of order: this row stands, math stays
    ]
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("\n".join([header, *lines]) + "\n")
    jsonl = tmp_path / "t.jsonl"  # read row by row: the reference
    names = header.split(",")
    jsonl.write_text("".join(json.dumps(dict(zip(names, line.split(","), strict=True))) + "\n" for line in lines))
    from polycascade.backtest._columnar import convert
    from polycascade.backtest.traces import _read

    assert convert(_read(csv_file).table, Catalog.bundled()) is not None  # the file does take the fast path
    fast, rows = load_traces(csv_file), load_traces(jsonl)
    assert fast.tasks == rows.tasks and fast.models == rows.models and not fast.issues
    assert list(fast.tasks) == ["t1", "t2"] and list(fast.tasks["t1"].outcomes) == ["gpt-4o-mini", "tiny"]
    assert fast.tasks["t2"].category == "general" and fast.tasks["t1"].category == "math"
    assert fast.tasks["t1"].outcomes["tiny"].verdict is True and fast.rows == 5
    assert str(fast.tasks["t2"].outcomes["tiny"].cost) == "0.00012345678"  # the file's own digits, as read
    assert fast.tasks["t1"].outcomes["gpt-4o-mini"].cost == Catalog.bundled()["gpt-4o-mini"].cost(1000, 100)


def _consensus_cascade(
    path: Path, rows: list[tuple[str, str, str, str]], history: dict
) -> tuple[Cascade, MemoryLedger]:
    path.write_text("task_id,model,correct,cost_usd,vendor,answer\n" + "".join(
        f"t1,{m},{int(a == 'C')},{c},{v},{a}\n" for m, v, a, c in rows
    ))  # fmt: skip
    traces = load_traces(path)
    ledger = MemoryLedger()
    gateway = ReplayGateway(traces, Catalog(traces.models.values()), ledger)
    pool = list(traces.models.values())
    return Cascade(gateway, pool, evaluator=Consensus(), governor=Governor(ledger=ledger), history=history), ledger


def test_after_a_disagreement_the_arbiter_may_share_a_vendor_and_agreement_teaches_nothing(tmp_path: Path) -> None:
    rows = [("tiny", "DeepSeek", "A", "0.0001"), ("small", "Mistral", "C", "0.0003"), ("pro", "DeepSeek", "C", "0.003")]
    history = {("general", "tiny"): Tally(40, 60), ("general", "small"): Tally(60, 40), ("general", "pro"): Tally(9, 1)}
    cascade, ledger = _consensus_cascade(tmp_path / "t.csv", rows, history)
    result = asyncio.run(cascade.run_direct(Task("", id="t1", input_tokens=100, max_tokens=100)))
    assert [a.model for a in result.attempts] == ["small", "tiny", "pro"]  # pro: DeepSeek, like tiny
    assert (
        result.status == "verified"
        and result.answer == "C"
        and "agrees with small" in result.stop_reason + str(result.chosen.verdict if result.chosen else "")
    )
    assert asyncio.run(ledger.tallies()) == {}  # agreement steered the climb but taught the router nothing
    assert _score("general", "t1", result, cascade.gateway).escalated  # type: ignore[arg-type]
    second_opinion_only = replace(result, attempts=result.attempts[:2])
    assert not _score("general", "t1", second_opinion_only, cascade.gateway).escalated  # type: ignore[arg-type]


def test_when_every_opinion_disagrees_the_strongest_rung_answers(tmp_path: Path) -> None:
    rows = [("tiny", "DeepSeek", "A", "0.0001"), ("small", "Mistral", "B", "0.0003"), ("large", "OpenAI", "C", "0.003")]
    history = {
        ("general", "tiny"): Tally(40, 60),
        ("general", "small"): Tally(60, 40),
        ("general", "large"): Tally(9, 1),
    }
    cascade, _ = _consensus_cascade(tmp_path / "t.csv", rows, history)
    result = asyncio.run(cascade.run_direct(Task("", id="t1", input_tokens=100, max_tokens=100)))
    assert [a.model for a in result.attempts] == ["small", "tiny", "large"]  # the pair, then the arbiter
    assert result.attempts[0].verdict is not None and not result.attempts[0].verdict.verifies
    assert result.status == "unverified" and result.model == "large" and result.answer == "C"


def test_replaying_task_kinds_in_parallel_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from polycascade.backtest import shards

    monkeypatch.setattr(shards, "MIN_TASKS_PER_WORKER", 10)
    traces = load_traces(synthetic(tmp_path / "t.csv", 200))
    serial = run_backtest(traces, DEFAULT_POLICY, workers=1, with_baselines=False)
    parallel = run_backtest(traces, DEFAULT_POLICY, workers=2, with_baselines=False)
    assert (serial["replay"]["workers"], parallel["replay"]["workers"]) == (1, 2)
    assert serial["polycascade"] == parallel["polycascade"]
    capped = DEFAULT_POLICY.model_copy(update={"vendor_share": ShareCap(max_share=0.9)})
    coupled = run_backtest(traces, capped, workers=2, with_baselines=False)["replay"]
    assert coupled == {"workers": 1, "why_one_worker": "the vendor share cap couples every task"}


def test_a_bad_verdict_is_reported_by_line_and_the_rest_loads(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("task_id,model,correct,cost_usd,vendor,verdict\na,m1,1,0.001,OpenAI,pass\nb,m1,0,0.001,OpenAI,maybe\n")
    traces = load_traces(f)
    assert traces.rows == 1 and traces.tasks["a"].outcomes["m1"].verdict is True
    assert traces.issues == [f"{f}:3: verdict must be pass/fail, got 'maybe'"]


def test_pair_agreement_is_counted_on_the_train_split_as_the_live_check_compares(tmp_path: Path) -> None:
    from polycascade.backtest.agreement import agreement_from

    f = tmp_path / "t.csv"
    rows = [  # task, model, vendor, answer, correct, output tokens
        ("t1", "a", "A", "B", 1, 10), ("t1", "b", "B", " b.", 1, 30), ("t1", "c", "C", "C", 0, 50),
        ("t2", "a", "A", "B", 0, 10), ("t2", "b", "B", "D", 1, 30), ("t2", "c", "C", "D", 1, 70),
        ("t3", "a", "A", "", 0, 10), ("t3", "b", "B", "", 0, 30), ("t3", "c", "C", "A", 1, 90),
    ]  # fmt: skip
    f.write_text(
        "task_id,model,vendor,answer,correct,cost_usd,output_tokens,category\n"
        + "".join(f"{t},{m},{v},{a},{c},0.001,{o},qa\n" for t, m, v, a, c, o in rows)
    )
    record = agreement_from(load_traces(f), ["t1", "t2", "t3"])["qa"]
    ab = record.pair("b", "a")
    assert ab is not None and (ab.tasks, ab.agree_right, ab.disagree) == (3, 1.0, 2)  # " b." is "B"; blanks never agree
    assert ab.right_when_disputed == {"b": 1.0, "c": 2.0}  # when a and b disagreed (t2, t3)
    bc = record.pair("b", "c")
    assert bc is not None and (bc.agree_right, bc.disagree) == (1.0, 2)  # t2 agreed; t1, t3 not
    assert bc.right_when_disputed == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert record.output_tokens == {"a": 10.0, "b": 30.0, "c": 70.0}
    assert record.accuracy == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 2 / 3})
    assert record.pooled is not None and record.pooled.pair("a", "b") == ab  # one kind: every kind is this one


def test_what_a_third_and_fourth_answer_did_after_a_dispute_is_counted(tmp_path: Path) -> None:
    from polycascade.backtest.agreement import agreement_from

    f = tmp_path / "t.csv"
    rows = [  # task, model, vendor, answer, correct; g is of a's vendor: agreeing with a settles nothing
        ("t1", "a", "A", "X", 0), ("t1", "b", "B", "Y", 1), ("t1", "c", "C", "Y", 1), ("t1", "g", "A", "Y", 1),
        ("t2", "a", "A", "X", 1), ("t2", "b", "B", "Y", 0), ("t2", "c", "C", "Z", 0), ("t2", "g", "A", "X", 1),
        ("t3", "a", "A", "X", 0), ("t3", "b", "B", "X", 0), ("t3", "c", "C", "Z", 1), ("t3", "g", "A", "X", 0),
    ]  # fmt: skip
    f.write_text(
        "task_id,model,vendor,answer,correct,cost_usd,category\n"
        + "".join(f"{t},{m},{v},{a},{c},0.001,qa\n" for t, m, v, a, c in rows)
    )
    ab = agreement_from(load_traces(f), ["t1", "t2", "t3"])["qa"].pair("a", "b")
    assert ab is not None and ab.disagree == 2  # t1, t2
    assert ab.settled_right == {"c": 1.0, "g": 1.0}  # t1: both matched b, and b was right
    assert ab.unsettled == {"c": 1.0, "g": 1.0}  # t2: c matched nobody; g matched only its own vendor's a
    assert ab.right_after == {("c", "g"): 1.0}  # t2: after c settled nothing, g was right


def test_a_policy_with_an_answer_value_replays_by_worth(tmp_path: Path) -> None:
    traces = load_traces(synthetic(tmp_path / "t.csv", 300))
    policy = DEFAULT_POLICY.model_copy(update={"routing": RoutingConfig(answer_value_usd=Decimal("0.05"))})
    by_worth = run_backtest(traces, policy, with_baselines=False, workers=1)
    by_threshold = run_backtest(traces, DEFAULT_POLICY, with_baselines=False, workers=1)["polycascade"]
    ours = by_worth["polycascade"]
    assert ours["violations"] == {"residency": 0, "budget": 0, "vendor_share": 0}
    assert by_worth["settings"]["answer_value_usd"] == 0.05
    assert ours != by_threshold  # a different policy, and it shows
    cheap = policy.model_copy(update={"routing": RoutingConfig(answer_value_usd=Decimal("0.000001"))})
    stingy = run_backtest(traces, cheap, with_baselines=False, workers=1)["polycascade"]
    assert Decimal(stingy["total_cost_usd"]) < Decimal(ours["total_cost_usd"])  # a cheap answer: one call, kept
    assert stingy["escalation_rate"] == 0


def test_target_cost_paces_spend_to_a_share_of_the_best_single_models(tmp_path: Path) -> None:
    traces = synthetic(tmp_path / "t.csv", 3000)
    result = run_cli("backtest", "--traces", str(traces), "--target-cost", "0.3", "--max-rungs", "4", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    pacing = data["pacing"]
    assert pacing["best_single_on_train"] == "large" and pacing["target_cost_vs_best_single"] == 0.3
    assert data["settings"]["target_cost_usd"] == pytest.approx(float(pacing["target_cost_per_task_usd"]))
    assert data["settings"]["max_rungs"] == 4
    assert data["replay"]["why_one_worker"].startswith("one pacer")  # one budget over every task
    assert 0.27 <= data["polycascade"]["cost_vs_best_single"] <= 0.3  # spent, and not overspent
    assert data["paced_answer_value_usd"] > 0
    text = run_cli("backtest", "--traces", str(traces), "--target-cost", "0.3")
    assert "paced to $" in text.stdout and "of what large cost on the train split" in text.stdout


@pytest.mark.parametrize("routing", [None, RoutingConfig(target_cost_usd=Decimal("0.001"))])
def test_a_replay_leaves_no_cyclic_garbage(tmp_path: Path, routing: RoutingConfig | None) -> None:
    """Replays run with the cycle collector paused (`backtest._heap`): safe while they create no
    reference cycles, failed calls included."""
    traces = load_traces(synthetic(tmp_path / "t.csv", 200))
    for trace in list(traces.tasks.values())[::7]:
        del trace.outcomes["small"]  # a provider failure: an exception caught by the cascade
    policy = DEFAULT_POLICY if routing is None else DEFAULT_POLICY.model_copy(update={"routing": routing})
    gc.collect()
    with collector_paused():
        result = run_backtest(traces, policy, workers=1)
        assert gc.collect() == 0
    assert result["polycascade"]["tasks"] == result["split"]["test_tasks"]


def test_recorded_latency_gives_each_strategy_its_p50_and_p95(tmp_path: Path) -> None:
    """Traces with `latency_s`: each task's calls, one after another, at the percentiles per strategy."""
    plain = synthetic(tmp_path / "t.csv", 80)
    rows = list(csv.DictReader(plain.open()))
    seconds = {m[0]: 0.4 + 2.0 * i for i, m in enumerate(MODELS)}  # the dearer, the slower
    timed = tmp_path / "timed.csv"
    with timed.open("w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], "latency_s"])
        w.writeheader()
        w.writerows({**r, "latency_s": seconds[r["model"]]} for r in rows)
    result = json.loads(run_cli("backtest", "--traces", str(timed), "--json").stdout)
    best = result["baselines"]["best_single"]
    assert best["latency_p50_s"] == best["latency_p95_s"] == seconds[best["models"]]  # one call each
    cascade = result["baselines"]["cascade"]
    assert cascade["latency_p95_s"] >= cascade["latency_p50_s"] >= min(seconds.values())
    ours = result["polycascade"]
    assert 0 < ours["latency_p50_s"] <= ours["latency_p95_s"]
    table = run_cli("backtest", "--traces", str(timed)).stdout
    assert "p50 s" in table and "p95 s" in table
    untimed = json.loads(run_cli("backtest", "--traces", str(plain), "--json").stdout)
    assert "latency_p50_s" not in untimed["polycascade"]  # none recorded: none made up
    bound = json.loads(run_cli("backtest", "--traces", str(timed), "--max-latency", "3", "--json").stdout)
    mine = bound["polycascade"]
    assert mine["latency_p95_s"] <= 3 and "OpenAI" not in mine["by_vendor"]  # the large model takes 4.4 s
    assert mine["accuracy"] > 0 and bound["baselines"]["best_single"]["latency_p95_s"] > 3
    both = run_cli("backtest", "--traces", str(timed), "--max-latency", "3", "--sweep")
    assert both.returncode == 2 and "--max-latency replays one setting" in both.stderr
