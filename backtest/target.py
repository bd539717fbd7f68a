"""Backtest at a spend target: a share of the best single model's cost, learned on the train split.

The target per task is that share of the best single model's mean cost on the train split, less
`HEADROOM`: the share is a ceiling, and a pacer ends within a percent or so either side of its aim
over a few thousand tasks. The replay paces the answer value to spend it (`policies.pacing`),
starting from where pacing over the train split left it (split again by the next seed: learn on
one half, pace over the other); started far from where it settles, a pacer over- or underspends
by its climb. The test split is never consulted to set the target or the start.

Why pace rather than choose one answer value: plans change in steps (a task kind switches to a
dearer model at some value), so a fixed value stops short of the target or overshoots it; the
pacer settles on the step and mixes the two plans to spend the budget (see `bench/RESULTS.md`).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from polycascade.policies.config import Policy

from .baselines import Stats, best_single
from .run import run_backtest, split
from .traces import TraceSet

__all__ = ["HEADROOM", "backtest_at_cost", "with_routing"]

HEADROOM = Decimal("0.02")  # the target is a ceiling: aim this share below it, about the pacer's error


def with_routing(policy: Policy, **knobs: Any) -> Policy:
    """The policy with these routing knobs (e.g. `answer_value_usd=0.05`); floats become Decimal."""
    decimals = {k: Decimal(str(v)) if isinstance(v, float) else v for k, v in knobs.items()}
    return policy.model_copy(update={"routing": policy.routing.model_copy(update=decimals)})


def backtest_at_cost(
    traces: TraceSet, policy: Policy, cost_ratio: float, *, train_fraction: float = 0.5, seed: int = 0
) -> dict[str, Any]:
    """The backtest paced to spend `cost_ratio` × the best single model's cost per task, with `pacing`."""
    train, _ = split(list(traces.tasks), train_fraction, seed)
    stats = Stats(traces, train)
    best = best_single(stats, traces)
    target = Decimal(str(cost_ratio)) * stats.mean_cost(best) * (1 - HEADROOM)
    if not target:
        raise ValueError(f"the best single model on the train split ({best}) cost nothing: no spend to aim at")
    paced = with_routing(policy, target_cost_usd=target)
    inner = replace(traces, tasks={task_id: traces.tasks[task_id] for task_id in train})
    warm_up = run_backtest(inner, paced, train_fraction=0.5, seed=seed + 1, with_baselines=False)
    start = warm_up["paced_answer_value_usd"]
    result = run_backtest(traces, with_routing(paced, answer_value_usd=start), train_fraction=train_fraction, seed=seed)
    result["pacing"] = {
        "target_cost_vs_best_single": cost_ratio,
        "best_single_on_train": best,
        "target_cost_per_task_usd": str(target.quantize(Decimal("1e-9"))),
        "start_answer_value_usd": start,  # where pacing over the train split left it
    }
    return result
