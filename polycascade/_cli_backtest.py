"""`polycascade backtest`: replay recorded outcomes through the live code, beside five baselines."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .catalog import Catalog
from .errors import ConfigError
from .tasks import Preferences

out = Console()


def backtest(
    traces: Annotated[
        Path, typer.Option("--traces", help="CSV, JSONL or Parquet (optionally .gz): one row per (task, model).")
    ],
    policy: Annotated[
        str | None, typer.Option("--policy", help="Policy file or preset: its rules and routing knobs.")
    ] = None,
    models_file: Annotated[
        Path | None, typer.Option("--models", help="Models file for vendors and prices the traces lack.")
    ] = None,
    train_fraction: Annotated[float, typer.Option("--train-fraction", min=0.0, max=0.95)] = 0.5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    do_sweep: Annotated[
        bool, typer.Option("--sweep", help="Sweep threshold × max_rungs × explore; Pareto table and plot.")
    ] = False,
    plot_path: Annotated[Path, typer.Option("--plot", help="Where --sweep writes its PNG.")] = Path(
        "backtest-sweep.png"
    ),
    target_cost: Annotated[
        float | None,
        typer.Option(
            "--target-cost",
            min=0.0,
            max=1.0,
            help="Spend this share of the best single model's cost per task (on the train split; e.g. 0.15): "
            "the answer value is paced to it over the test split.",
        ),
    ] = None,
    max_rungs: Annotated[
        int | None, typer.Option("--max-rungs", min=1, help="Answers per task at most (default: the policy's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="With --sweep: one self-contained page with the interactive Pareto front."),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="Labels of the HTML page: en or ja.")] = "en",
    max_latency: Annotated[
        float | None,
        typer.Option(
            "--max-latency",
            min=0.001,
            help="Replay every task with a p95 latency bound in seconds "
            "(learned from the traces' latency_s as the replay goes).",
        ),
    ] = None,
) -> None:
    """What a policy would have cost and how often it would have been right, on recorded outcomes."""
    from polycascade.backtest.traces import load_traces
    from polycascade.policies.config import load_policy

    from .governor import DEFAULT_POLICY

    if max_latency is not None and (do_sweep or target_cost is not None):
        raise ConfigError("--max-latency replays one setting: leave out --sweep and --target-cost")
    if html is not None:
        from ._page import shell

        if not do_sweep:
            raise ConfigError("--html draws the sweep's frontier: add --sweep")
        shell(lang)  # an unknown language fails before the replay
    catalog = Catalog.load(models_file)
    loaded = load_policy(policy, catalog, resolve_models=False).policy if policy else DEFAULT_POLICY
    with ThreadPoolExecutor(max_workers=1) as reader:
        # pyarrow reads and checks the file mostly without the GIL: import the replay meanwhile
        reading = reader.submit(load_traces, traces, catalog)
        from polycascade.backtest import run_backtest
        from polycascade.backtest.target import with_routing

        data = reading.result()
    if max_rungs is not None:
        loaded = with_routing(loaded, max_rungs=max_rungs)
    for issue in data.issues[:20]:
        print(f"bad row: {issue}", file=sys.stderr)
    if len(data.issues) > 20:
        print(f"… and {len(data.issues) - 20} more bad rows", file=sys.stderr)
    try:
        if do_sweep:
            from polycascade.backtest.sweep import DEFAULT_GRID, plot, sweep

            result = sweep(data, loaded, DEFAULT_GRID, train_fraction=train_fraction, seed=seed)
            result["plot"] = str(plot(result, plot_path))
            if html is not None:
                _write_page(result, html, lang)
        elif target_cost is not None:
            from polycascade.backtest.target import backtest_at_cost

            result = backtest_at_cost(data, loaded, target_cost, train_fraction=train_fraction, seed=seed)
        else:
            prefer = Preferences(max_latency_s=max_latency) if max_latency is not None else None
            result = run_backtest(data, loaded, train_fraction=train_fraction, seed=seed, prefer=prefer)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    elif do_sweep:
        _print_sweep(result)
    else:
        _print_result(result)


def _write_page(result: dict[str, Any], path: Path, lang: str) -> None:
    from ._page import render
    from ._sweep_page import sweep_page

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(sweep_page(result, lang)), encoding="utf-8")
    result["html"] = str(path)


def _print_result(result: dict[str, Any]) -> None:
    split = result["split"]
    out.print(f"{result['traces']}: {result['rows']} rows · test {split['test_tasks']} tasks, train "
              f"{split['train_tasks']} (seed {split['seed']}) · policy {result['policy']}")  # fmt: skip
    rows = {"polycascade": result["polycascade"], **result["baselines"]}
    timed = all("latency_p50_s" in r for r in rows.values())  # the traces recorded every call's latency
    table = Table(title="test split")
    for column in ("strategy", "accuracy", "total $", "$ per correct", "vs best single", "escalations"):
        table.add_column(column)
    for column in ("p50 s", "p95 s") if timed else ():
        table.add_column(column)
    for name, r in rows.items():
        latency = (f"{r['latency_p50_s']:.2f}", f"{r['latency_p95_s']:.2f}") if timed else ()
        table.add_row(name, f"{r['accuracy']:.1%}", r["total_cost_usd"], str(r["cost_per_correct_usd"]),
                      f"{r['cost_vs_best_single']:.1%}" if r["cost_vs_best_single"] is not None else "-",
                      f"{r['escalation_rate']:.1%}", *latency)  # fmt: skip
    out.print(table)
    for name, r in result["baselines"].items():
        out.print(f"  {name}: {r['models']}")
    ours = result["polycascade"]
    shares = ", ".join(f"{v} {d['spend_share']:.0%}" for v, d in ours["by_vendor"].items())
    out.print(f"spend by vendor: {shares}")
    out.print(f"policy violations: {ours['violations']}")
    if pacing := result.get("pacing"):
        out.print(f"paced to ${pacing['target_cost_per_task_usd']} per task: "
                  f"{pacing['target_cost_vs_best_single']:.0%} of what {pacing['best_single_on_train']} cost on "
                  "the train split; the answer value ended at "
                  f"${result['paced_answer_value_usd']:g}")  # fmt: skip


def _print_sweep(result: dict[str, Any]) -> None:
    table = Table(title="Pareto front (cost vs accuracy)")
    for column in ("settings", "accuracy", "total $", "vs best single", "violations"):
        table.add_column(column)
    for p in result["pareto"]:
        knobs = ", ".join(f"{k}={v}" for k, v in p["knobs"].items())
        violations = str(sum(p["violations"].values()))
        table.add_row(knobs, f"{p['accuracy']:.1%}", p["total_cost_usd"], f"{p['cost_vs_best_single']:.1%}",
                      violations)  # fmt: skip
    out.print(table)
    for name, b in result["baselines"].items():
        out.print(f"  {name}: {b['accuracy']:.1%} at ${b['total_cost_usd']} ({b['models']})")
    out.print(f"plot: {result['plot']}")
    if "html" in result:
        out.print(f"page: {result['html']}")
