"""Sweep policy knobs over one split: a Pareto table of cost vs accuracy, and a plot."""

from __future__ import annotations

import itertools
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from polycascade.errors import ConfigError
from polycascade.graphs.cascade import CascadeSettings
from polycascade.policies.config import Policy

from .run import run_backtest
from .traces import TraceSet

__all__ = ["DEFAULT_GRID", "pareto", "plot", "sweep"]

DEFAULT_GRID: list[dict[str, list[Any]]] = [  # each grid is a product of its knobs' values
    {"threshold": [0.5, 0.6, 0.65, 0.7, 0.75], "max_rungs": [2, 3, 4], "explore": [False, True]},
    {"answer_value_usd": [0.02, 0.03, 0.05, 0.07, 0.1, 0.15]},  # plans by worth, where answers pass by agreement
]


POINT_FIELDS = ("accuracy", "total_cost_usd", "cost_vs_best_single", "escalation_rate", "violations", "by_kind")


def sweep(
    traces: TraceSet, policy: Policy, grids: list[dict[str, list[Any]]], *, train_fraction: float, seed: int
) -> dict[str, Any]:
    base = CascadeSettings.from_policy(policy)
    points = []
    for knobs in (dict(zip(g, values, strict=True)) for g in grids for values in itertools.product(*g.values())):
        settings = replace(
            base,
            routing=replace(base.routing, threshold=knobs.get("threshold", base.routing.threshold),
                            explore=knobs.get("explore", base.routing.explore),
                            answer_value=knobs.get("answer_value_usd", base.routing.answer_value)),
            max_rungs=knobs.get("max_rungs", base.max_rungs),
        )  # fmt: skip
        result = run_backtest(
            traces, policy, train_fraction=train_fraction, seed=seed, settings=settings, with_baselines=False
        )
        points.append({"knobs": knobs, **{k: result["polycascade"][k] for k in POINT_FIELDS}})
    baselines = run_backtest(traces, policy, train_fraction=train_fraction, seed=seed, with_baselines=True)["baselines"]
    front = pareto(points)
    for p in points:
        p["pareto"] = p in front
    return {"grid": grids, "points": points, "pareto": front, "baselines": baselines}


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both cost (lower) and accuracy (higher), cheapest first."""
    ordered = sorted(points, key=lambda p: (Decimal(p["total_cost_usd"]), -p["accuracy"]))
    front, best = [], -1.0
    for p in ordered:
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def plot(result: dict[str, Any], path: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'polycascade[backtest]'") from None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    xs = [float(p["total_cost_usd"]) for p in result["points"]]
    ax.scatter(xs, [p["accuracy"] for p in result["points"]], s=18, color="#9aa7b8", label="polycascade settings")
    front = result["pareto"]
    ax.plot([float(p["total_cost_usd"]) for p in front], [p["accuracy"] for p in front], "-o", color="#1f6feb",
            markersize=4, label="polycascade Pareto front")  # fmt: skip
    markers = {"best_single": "s", "cheapest": "v", "oracle": "*", "threshold": "D", "cascade": "P"}
    for name, b in result["baselines"].items():
        ax.scatter(
            [float(b["total_cost_usd"])], [b["accuracy"]], marker=markers.get(name, "x"), s=80, label=name, zorder=3
        )
    if best := result["baselines"].get("best_single"):
        ax.axhline(best["accuracy"], color="#888888", linestyle="--", linewidth=0.8, label="best single's accuracy")
    ax.set_xscale("log")
    ax.set_xlabel("total cost on the test split (USD, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title("Cost vs accuracy: policy settings and baselines")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")  # the baselines sit low and right, the oracle high and left
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
