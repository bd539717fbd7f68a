"""Backtest benchmark: the default policy's result on the shipped traces, and replay speed.

    python bench/bench_backtest.py      # writes the "backtest" section of bench/RESULTS.md

Quality: the default policy, other settings and the policy paced to 15% of the best single
model's cost, against the five baselines on the shipped MMLU-Pro traces; the paced policy on six
splits. Speed (in a fresh interpreter): 1,000,000 rows (the shipped traces repeated under new
task ids) loaded and replayed, beside a bare scan of the same file in the same run. Exits
non-zero only if a figure cannot be measured; a missed target is reported, not fatal.
"""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import publish

from polycascade.backtest import TraceSet, backtest_at_cost, load_traces, run_backtest
from polycascade.backtest.target import with_routing
from polycascade.governor import DEFAULT_POLICY
from polycascade.policies.config import Policy

SHIPPED = Path(__file__).parents[1] / "examples" / "traces" / "mmlu_pro.csv.gz"
THRESHOLDS = [(0.65, 3), (0.7, 3), (0.75, 3), (0.7, 4)]
VALUES = [0.05, 0.06, 0.07, 0.08]  # USD per correct answer
TARGET = 0.15  # of the best single model's cost
SEEDS = range(6)
TARGET_ROWS = 1_000_000


def quality() -> list[str]:
    traces = load_traces(SHIPPED)
    result = run_backtest(traces, DEFAULT_POLICY)
    best = result["baselines"]["best_single"]
    rows = {"polycascade (default policy)": result["polycascade"], **result["baselines"]}
    variants: dict[str, Policy] = {
        f"threshold {t}, {r} rungs": with_routing(DEFAULT_POLICY, threshold=t, max_rungs=r) for t, r in THRESHOLDS
    }
    variants |= {
        f"plans by worth, answer value ${v}, 4 rungs": with_routing(DEFAULT_POLICY, answer_value_usd=v, max_rungs=4)
        for v in VALUES
    }
    for label, policy in variants.items():
        rows[f"polycascade ({label})"] = run_backtest(traces, policy, with_baselines=False)["polycascade"]
    for rungs in (3, 4):
        paced = backtest_at_cost(traces, with_routing(DEFAULT_POLICY, max_rungs=rungs), TARGET)
        label = f"paced to {TARGET:.0%} of the best single's train cost, {rungs} rungs"
        rows[f"polycascade ({label}; value ended at ${paced['paced_answer_value_usd']:.3f})"] = paced["polycascade"]
    lines = [f"Shipped traces: {traces.rows:,} rows, test split {result['split']['test_tasks']:,} tasks (seed 0).", ""]
    lines += ["| strategy | accuracy | cost on test split | vs best single | escalations |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['accuracy']:.1%} | ${r['total_cost_usd']} | {r['cost_vs_best_single']:.1%} | "
            f"{r['escalation_rate']:.0%} |"
        )
    policies = {name: r for name, r in rows.items() if name.startswith("polycascade")}
    winners = [name for name, r in policies.items() if _meets(r, best)]
    lines += [
        "",
        "Policy violations: "
        + (
            "none in any polycascade row"
            if all(not any(r["violations"].values()) for r in policies.values())
            else str({n: r["violations"] for n, r in policies.items()})
        )
        + ".",
        f"Target — the best single model's accuracy ({best['accuracy']:.1%}) at ≤ {TARGET:.0%} of its cost, zero "
        f"violations, seed 0: **{'met by ' + ', '.join(winners) if winners else 'not met'}**.",
        "",
        *by_seed(traces),
    ]
    return lines


def _meets(r: dict, best: dict) -> bool:
    within = r["cost_vs_best_single"] <= TARGET and not any(r["violations"].values())
    return within and r["accuracy"] >= best["accuracy"]


def by_seed(traces: TraceSet) -> list[str]:
    """The paced policy on other splits: one split's margin is within a split's noise."""
    policy = with_routing(DEFAULT_POLICY, max_rungs=4)
    lines = [
        f"Paced to {TARGET:.0%}, 4 rungs, on other splits (`--seed`):",
        "",
        "| seed | best single | polycascade | vs best single | margin (points) | target |",
        "|---|---|---|---|---|---|",
    ]
    margins = []
    for seed in SEEDS:
        result = backtest_at_cost(traces, policy, TARGET, seed=seed)
        ours, best = result["polycascade"], result["baselines"]["best_single"]
        margins.append(ours["accuracy"] - best["accuracy"])
        lines.append(
            f"| {seed} | {best['accuracy']:.2%} | {ours['accuracy']:.2%} | {ours['cost_vs_best_single']:.1%} | "
            f"{margins[-1] * 100:+.2f} | {'met' if _meets(ours, best) else 'missed'} |"
        )
    met = sum(1 for m in margins if m >= 0)
    mean = sum(margins) / len(margins) * 100
    lines += ["", f"Mean margin {mean:+.2f} points; met on {met} of {len(margins)} splits."]
    return lines


def replicate(rows: int, path: Path) -> int:
    with gzip.open(SHIPPED, "rt", newline="") as src:
        header, *body = list(csv.reader(src))
    written = 0
    with gzip.open(path, "wt", newline="", compresslevel=1) as out:
        w = csv.writer(out)
        w.writerow(header)
        copy = 0
        while written < rows:
            for r in body:
                if written == rows:
                    break
                w.writerow([f"{copy}-{r[0]}", *r[1:]])
                written += 1
            copy += 1
    return written


def bare_scan(path: Path, runs: int = 3) -> float:
    """The floor: read every row and add up `correct`, nothing else. The best of `runs`: on a
    shared VM one scan varies by half from run to run, and a floor should not."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with gzip.open(path, "rt", newline="") as f:
            reader = csv.reader(f)
            column = next(reader).index("correct")
            total = sum(float(r[column]) for r in reader)
        assert total > 0
        times.append(time.perf_counter() - started)
    return min(times)


def speed() -> list[str]:
    """Measured in a fresh interpreter, as `polycascade backtest` runs, not beside what the
    quality runs left on the heap."""
    f = json.loads(_run(sys.executable, __file__, "--speed-json"))
    names = ("rows", "scan", "loaded", "one_worker", "total", "workers", "command")
    rows, scan, loaded, one, total, workers, command = (f[name] for name in names)
    return [
        f"{rows:,} rows ({f['tasks']:,} tasks × 15 models); test split {f['replayed']:,} tasks replayed through the "
        "live cascade nodes, governor and evaluator, plus the five baselines.",
        "",
        "| step | seconds | rows/s |",
        "|---|---|---|",
        f"| baseline: bare scan of the file (read rows, sum `correct`; best of 3) | {scan:.1f} | {rows / scan:,.0f} |",
        f"| load and validate the traces | {loaded:.1f} | {rows / loaded:,.0f} |",
        f"| load + replay + baselines, one process | {one:.1f} | {rows / one:,.0f} |",
        f"| load + replay + baselines (polycascade backtest, {workers} workers) | {total:.1f} | {rows / total:,.0f} |",
        f"| the `polycascade backtest --json` command, start-up included | {command:.1f} | {rows / command:,.0f} |",
        "",
        f"Ratio to the bare scan: {total / scan:.1f}×. Target 1M rows ≤ 10 s: "
        f"**{'met' if total <= 10 else 'not met'}** ({total:.1f} s).",
    ]


def speed_figures() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "million.csv.gz"
        rows = replicate(TARGET_ROWS, path)
        scan = bare_scan(path)
        started = time.perf_counter()
        traces = load_traces(path)
        loaded = time.perf_counter() - started
        result = run_backtest(traces, DEFAULT_POLICY)
        total = time.perf_counter() - started
        started = time.perf_counter()
        run_backtest(traces, DEFAULT_POLICY, workers=1)
        one_worker = loaded + time.perf_counter() - started
        command = cli_seconds(path)
    return {
        "rows": rows, "tasks": len(traces.tasks), "replayed": result["split"]["test_tasks"],
        "workers": result["replay"]["workers"], "scan": scan, "loaded": loaded, "one_worker": one_worker,
        "total": total, "command": command,
    }  # fmt: skip


def cli_seconds(path: Path) -> float:
    """What a user waits for: the `polycascade backtest` command, start-up and output included."""
    started = time.perf_counter()
    _run(str(Path(sys.executable).with_name("polycascade")), "backtest", "--traces", str(path), "--json")
    return time.perf_counter() - started


def _run(*command: str) -> str:
    """The command's output; if it fails, an error with its stderr (check=True would drop it)."""
    child = subprocess.run(command, capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {child.stderr.strip()[-2000:]}")
    return child.stdout


def main() -> int:
    return publish(
        "backtest",
        "Backtest",
        {"Policies on the shipped traces": quality, "Replay speed": speed},
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--speed-json"]:
        print(json.dumps(speed_figures()))
        raise SystemExit(0)
    raise SystemExit(main())
