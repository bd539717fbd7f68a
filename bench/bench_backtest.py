"""Backtest benchmark: the default policy's result on the shipped traces, and replay speed.

    python bench/bench_backtest.py      # writes the "backtest" section of bench/RESULTS.md

Quality: the default policy (and the sweep's settings) against the five baselines on the shipped
MMLU-Pro traces. Speed: 1,000,000 rows (the shipped traces repeated under new task ids) loaded
and replayed, beside a bare scan of the same file in the same run. Exits non-zero only if a
figure cannot be measured; a missed target is reported, not fatal.
"""

from __future__ import annotations

import csv
import gzip
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import publish

from backtest import load_traces, run_backtest, tune_answer_value
from policies.config import RoutingConfig
from polycascade.governor import DEFAULT_POLICY

SHIPPED = Path(__file__).parents[1] / "examples" / "traces" / "mmlu_pro.csv.gz"
THRESHOLDS = [(0.65, 3), (0.7, 3), (0.75, 3), (0.7, 4)]
VALUES = ["0.05", "0.07", "0.08", "0.1"]  # USD per correct answer
TARGET_ROWS = 1_000_000


def quality() -> tuple[list[str], dict]:
    traces = load_traces(SHIPPED)
    result = run_backtest(traces, DEFAULT_POLICY)
    lines = [f"Shipped traces: {traces.rows:,} rows, test split {result['split']['test_tasks']:,} tasks (seed 0).", ""]
    lines += ["| strategy | accuracy | cost on test split | vs best single | escalations |", "|---|---|---|---|---|"]
    rows = {"polycascade (default policy)": result["polycascade"], **result["baselines"]}
    variants = {f"threshold {t}, {r} rungs": RoutingConfig(threshold=t, max_rungs=r) for t, r in THRESHOLDS}
    variants |= {f"plans by worth, answer value ${v}": RoutingConfig(answer_value_usd=Decimal(v)) for v in VALUES}
    for label, routing in variants.items():
        policy = DEFAULT_POLICY.model_copy(update={"routing": routing})
        rows[f"polycascade ({label})"] = run_backtest(traces, policy, with_baselines=False)["polycascade"]
    tuned = tune_answer_value(traces, DEFAULT_POLICY, 0.15)  # the value chosen without looking at the test split
    value = tuned["tuning"]["chosen_answer_value_usd"]
    rows[f"polycascade (plans by worth, value chosen on train for ≤ 15%: ${value:g})"] = tuned["polycascade"]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['accuracy']:.1%} | ${r['total_cost_usd']} | {r['cost_vs_best_single']:.1%} | "
            f"{r['escalation_rate']:.0%} |"
        )
    ours, best = result["polycascade"], result["baselines"]["best_single"]
    policies = {name: r for name, r in rows.items() if name.startswith("polycascade")}
    winners = [
        name
        for name, r in policies.items()
        if r["accuracy"] >= best["accuracy"] and r["cost_vs_best_single"] <= 0.15 and not any(r["violations"].values())
    ]
    closest = max(
        (r for r in policies.values() if r["cost_vs_best_single"] <= 0.15), key=lambda r: r["accuracy"], default=ours
    )
    lines += [
        "",
        "Policy violations: "
        + (
            "none in any polycascade row"
            if all(not any(r["violations"].values()) for r in policies.values())
            else str({n: r["violations"] for n, r in policies.items()})
        )
        + ".",
        f"Target — the best single model's accuracy ({best['accuracy']:.1%}) at ≤ 15% of its cost, zero "
        f"violations: **{'met by ' + ', '.join(winners) if winners else 'not met'}** (default policy: "
        f"{ours['accuracy']:.1%} at {ours['cost_vs_best_single']:.1%}; most accurate within 15%: "
        f"{closest['accuracy']:.1%} at {closest['cost_vs_best_single']:.1%}).",
    ]
    return lines, result


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


def bare_scan(path: Path) -> float:
    """The floor: read every row and add up `correct`, nothing else."""
    started = time.perf_counter()
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f)
        column = next(reader).index("correct")
        total = sum(float(r[column]) for r in reader)
    assert total > 0
    return time.perf_counter() - started


def speed() -> list[str]:
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
    replayed, workers = result["split"]["test_tasks"], result["replay"]["workers"]
    return [
        f"{rows:,} rows ({len(traces.tasks):,} tasks × 15 models); test split {replayed:,} tasks replayed through the "
        "live cascade nodes, governor and evaluator, plus the five baselines.",
        "",
        "| step | seconds | rows/s |",
        "|---|---|---|",
        f"| baseline: bare scan of the file (read rows, sum `correct`) | {scan:.1f} | {rows / scan:,.0f} |",
        f"| load and validate the traces | {loaded:.1f} | {rows / loaded:,.0f} |",
        f"| load + replay + baselines, one process | {one_worker:.1f} | {rows / one_worker:,.0f} |",
        f"| load + replay + baselines (polycascade backtest, {workers} workers) | {total:.1f} | {rows / total:,.0f} |",
        "",
        f"Ratio to the bare scan: {total / scan:.1f}×. Target 1M rows ≤ 10 s: "
        f"**{'met' if total <= 10 else 'not met'}** ({total:.1f} s).",
    ]


def main() -> int:
    return publish(
        "backtest",
        "Backtest",
        {"Default policy on the shipped traces": lambda: quality()[0], "Replay speed": speed},
    )


if __name__ == "__main__":
    raise SystemExit(main())
