"""One backtest: split tasks, learn on train, replay test through the live code, compare baselines."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from decimal import Decimal
from typing import Any

from polycascade.graphs.cascade import CascadeSettings
from polycascade.ledger import SpendRow
from polycascade.policies.config import Policy
from polycascade.tasks import Preferences

from ._heap import frozen_heap
from .agreement import agreement_from
from .baselines import Stats, baselines, best_single
from .replay import TaskScore, output_profile
from .shards import replay_split
from .traces import TraceSet

__all__ = ["run_backtest", "split"]


def split(task_ids: list[str], train_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic: a task's side depends only on its id and the seed. Each side is in the order
    of that same hash, which mixes task kinds as live traffic does (a pacer relies on it)."""
    train: list[tuple[float, str]] = []
    test: list[tuple[float, str]] = []
    for task_id in task_ids:
        digest = hashlib.blake2b(f"{seed}:{task_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        (train if u < train_fraction else test).append((u, task_id))
    return [t for _, t in sorted(train)], [t for _, t in sorted(test)]


def run_backtest(
    traces: TraceSet,
    policy: Policy,
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
    settings: CascadeSettings | None = None,
    with_baselines: bool = True,
    workers: int | None = None,
    prefer: Preferences | None = None,
) -> dict[str, Any]:
    """`workers`: processes for the replay (default: every core; see `backtest.shards`)."""
    with frozen_heap():  # the traces outlive the backtest
        train, test = split(list(traces.tasks), train_fraction, seed)
        if not test:
            raise ValueError(f"the test split is empty (train fraction {train_fraction}); lower --train-fraction")
        settings = settings or CascadeSettings.from_policy(policy)
        max_tokens, output_fraction = output_profile(traces)
        settings = replace(settings, routing=replace(settings.routing, output_fraction=output_fraction))
        agreement = agreement_from(traces, train) if _values_agreement(traces, settings) else None
        stats = Stats(traces, train)
        timed = _recorded_latencies(traces, train) if prefer is not None and prefer.needs_latency else []
        pending = replay_split(
            traces, test, policy, settings, stats.history, max_tokens, workers, agreement, prefer, timed
        )
        try:  # while the workers replay
            compared = baselines(traces, stats, test) if with_baselines else {}
        finally:
            replayed = pending.result()  # joins the workers even if the baselines failed
    best = best_single(stats, traces)
    best_cost = sum((o.cost for t in test if (o := traces.tasks[t].outcomes.get(best))), Decimal(0))
    result: dict[str, Any] = {
        "traces": traces.source,
        "rows": traces.rows,
        "bad_rows": traces.issues[:20],
        "bad_row_count": len(traces.issues),
        "split": {"train_tasks": len(train), "test_tasks": len(test), "train_fraction": train_fraction, "seed": seed},
        "policy": policy.name,
        "settings": {
            "threshold": settings.routing.threshold,
            "explore": settings.routing.explore,
            "max_rungs": settings.max_rungs,
            "answer_value_usd": settings.routing.answer_value,
            "target_cost_usd": settings.routing.target_cost,
        },
        "polycascade": {
            **summarise(replayed.scores, best_cost),
            "by_kind": by_kind(replayed.scores),
            **_spend(replayed.spend),
            "violations": replayed.violations,
        },
        "replay": {"workers": replayed.workers, "why_one_worker": replayed.why_serial},
        **({"paced_answer_value_usd": round(replayed.answer_value, 6)} if replayed.answer_value else {}),
    }
    if with_baselines:
        result["baselines"] = {
            name: {"models": models, **summarise(s, best_cost), "by_kind": by_kind(s)}
            for name, (models, s) in compared.items()
        }
    return result


def _values_agreement(traces: TraceSet, settings: CascadeSettings) -> bool:
    """Plans are chosen by worth, and answers checked by agreement: learn how pairs agree."""
    return settings.routing.by_worth and traces.has_answer and not traces.has_verdict


def summarise(scores: list[TaskScore], reference_cost: Decimal) -> dict[str, Any]:
    n = len(scores)
    right = sum(s.correct for s in scores)
    cost = sum((s.cost for s in scores), Decimal(0))
    latencies = sorted(s.latency_s for s in scores if s.latency_s is not None)
    timed = len(latencies) == n > 0  # only where every task's calls were timed
    return {
        "tasks": n,
        "accuracy": round(right / n, 4) if n else 0.0,
        "total_cost_usd": str(cost.quantize(Decimal("1e-6"))),
        "cost_per_correct_usd": str((cost / Decimal(str(right))).quantize(Decimal("1e-8"))) if right else None,
        "cost_vs_best_single": round(float(cost / reference_cost), 4) if reference_cost else None,
        "escalation_rate": round(sum(s.escalated for s in scores) / n, 4) if n else 0.0,
        **({"latency_p50_s": _nearest(latencies, 0.5), "latency_p95_s": _nearest(latencies, 0.95)} if timed else {}),
    }


def _recorded_latencies(traces: TraceSet, train: list[str]) -> list[tuple[str, str, float, int]]:
    """The train split's calls that recorded a latency: what a latency bound starts from."""
    return [
        (o.model, trace.category, o.latency_s, o.output_tokens or 0)
        for trace in (traces.tasks[t] for t in train)
        for o in trace.outcomes.values()
        if o.latency_s
    ]


def _nearest(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile of sorted values."""
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


def by_kind(scores: list[TaskScore]) -> dict[str, Any]:
    """Tasks, accuracy, cost and escalations per task kind (the traces' category)."""
    kinds: dict[str, list[TaskScore]] = {}
    for score in scores:
        kinds.setdefault(score.category, []).append(score)
    return {
        kind: {k: v for k, v in summarise(group, Decimal(0)).items() if k != "cost_vs_best_single"}
        for kind, group in sorted(kinds.items())
    }


def _spend(spend: dict[str, dict[str, SpendRow]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rows in spend.items():
        total = sum((r.cost for r in rows.values()), Decimal(0))
        calls = sum(r.calls for r in rows.values())
        out[f"by_{key}"] = {
            group: {
                "calls": r.calls,
                "call_share": round(r.calls / calls, 4) if calls else 0.0,
                "cost_usd": str(r.cost.quantize(Decimal("1e-6"))),
                "spend_share": round(float(r.cost / total), 4) if total else 0.0,
            }
            for group, r in sorted(rows.items(), key=lambda kv: -kv[1].cost)
        }
    return out
