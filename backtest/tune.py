"""Find the answer value that spends a target share of the best single model's cost, on the train
split alone: the test split is replayed once, with the value chosen, and never consulted to choose.

The train split is split again (same rule, the next seed): for each candidate value, the router
learns on one half and replays the other. The chosen value is the largest whose spend there stays
within the target (the smallest if none does). Not the most accurate one: a higher value buys
accuracy in expectation, and between neighbouring values the measured spend is steady while the
measured accuracy is mostly noise (on the shipped traces, seeds 0–2, this choice did better on
the test split every time).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from policies.config import Policy

from .run import run_backtest, split
from .traces import TraceSet

__all__ = ["VALUES", "tune_answer_value", "with_answer_value"]

VALUES = [0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3]  # USD per correct answer


def with_answer_value(policy: Policy, value: float) -> Policy:
    routing = policy.routing.model_copy(update={"answer_value_usd": Decimal(str(value))})
    return policy.model_copy(update={"routing": routing})


def tune_answer_value(
    traces: TraceSet,
    policy: Policy,
    cost_ratio: float,
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
    values: list[float] = VALUES,
) -> dict[str, Any]:
    """The backtest of the value chosen on the train split, with `tuning`: every trial and the choice."""
    train, _ = split(list(traces.tasks), train_fraction, seed)
    inner = replace(traces, tasks={task_id: traces.tasks[task_id] for task_id in train})
    trials = []
    for value in values:
        ours = run_backtest(
            inner, with_answer_value(policy, value), train_fraction=0.5, seed=seed + 1, with_baselines=False
        )["polycascade"]
        spend = ours["cost_vs_best_single"]
        trials.append({"answer_value_usd": value, "accuracy": ours["accuracy"], "cost_vs_best_single": spend})
    within = [t for t in trials if t["cost_vs_best_single"] is not None and t["cost_vs_best_single"] <= cost_ratio]
    chosen = max(within, key=lambda t: t["answer_value_usd"]) if within else trials[0]
    result = run_backtest(
        traces, with_answer_value(policy, chosen["answer_value_usd"]), train_fraction=train_fraction, seed=seed
    )
    result["tuning"] = {
        "target_cost_vs_best_single": cost_ratio,
        "chosen_answer_value_usd": chosen["answer_value_usd"],
        "met_on_train": bool(within),
        "trials": trials,  # on half the train split, learning from the other half
    }
    return result
