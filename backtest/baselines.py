"""The strategies our policy is compared with, on the same test split.

- best_single: the model with the best train accuracy, for every task.
- cheapest: the model with the lowest train cost per task.
- oracle: per task, the cheapest model that was correct (a lower bound nobody can deploy).
- threshold: a two-model router in the style of RouteLLM: the weak model where its train accuracy
  on the task's category reaches the threshold, the strong one elsewhere.
- cascade: a fixed cascade in the style of FrugalGPT: weak → mid → strong, each answer accepted
  when the same deployable check as ours passes (recorded verdict, or agreement with the cheapest
  model of another vendor), without learning or policy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from polycascade.agents.evaluators import normalise
from polycascade.catalog import ModelSpec
from polycascade.ledger import Tally

from .replay import TaskScore
from .traces import Outcome, Trace, TraceSet

__all__ = ["Stats", "baselines", "best_single"]


class Stats:
    """Train-split accuracy and mean cost per model, overall and per category; and the pass/fail
    record per (category, model) that the router may learn from (`history`)."""

    def __init__(self, traces: TraceSet, train_ids: Iterable[str]) -> None:
        cells: dict[tuple[str, str], list[Any]] = {}  # (category, model) → [right, n, cost, passes]
        for task_id in train_ids:
            trace = traces.tasks[task_id]
            category = trace.category
            for model, o in trace.outcomes.items():
                cell = cells.get((category, model))
                if cell is None:
                    cell = cells[(category, model)] = [0.0, 0, Decimal(0), 0]
                cell[0] += o.correct
                cell[1] += 1
                cell[2] += o.cost
                cell[3] += o.correct >= 0.5
        self.correct: dict[str, float] = defaultdict(float)
        self.cost: dict[str, Decimal] = defaultdict(Decimal)
        self.n: dict[str, int] = defaultdict(int)
        self.by_category: dict[tuple[str, str], tuple[float, int]] = {}
        self.history: dict[tuple[str, str], Tally] = {}  # what a verdict would have said: passed or not
        for (category, model), (right, n, cost, passes) in cells.items():
            self.by_category[(category, model)] = (right, n)
            self.history[(category, model)] = Tally(passes, n - passes)
            self.correct[model] += right
            self.n[model] += n
            self.cost[model] += cost

    def accuracy(self, model: str, category: str | None = None) -> float:
        if category is not None:
            right, n = self.by_category.get((category, model), (0.0, 0))
            return right / n if n else self.accuracy(model)
        return self.correct[model] / self.n[model] if self.n[model] else 0.0

    def mean_cost(self, model: str) -> Decimal:
        return self.cost[model] / self.n[model] if self.n[model] else Decimal(0)


def best_single(stats: Stats, traces: TraceSet) -> str:
    """The most accurate model on the train split; the cheaper on a tie."""
    return max((m for m in traces.models if stats.n[m]), key=lambda m: (stats.accuracy(m), -stats.mean_cost(m)))


def baselines(
    traces: TraceSet, stats: Stats, test_ids: list[str], threshold: float = 0.5
) -> dict[str, tuple[str, list[TaskScore]]]:
    models = [m for m in traces.models if stats.n[m]]
    best = best_single(stats, traces)
    cheapest = min(models, key=lambda m: (stats.mean_cost(m), -stats.accuracy(m)))
    affordable = [m for m in models if stats.mean_cost(m) <= stats.mean_cost(best) / 10] or [cheapest]
    weak = max(affordable, key=lambda m: (stats.accuracy(m), -stats.mean_cost(m)))
    middle = [m for m in models if stats.mean_cost(weak) < stats.mean_cost(m) < stats.mean_cost(best)]
    mid = max(middle, key=lambda m: (stats.accuracy(m), -stats.mean_cost(m))) if middle else best
    tasks = [traces.tasks[t] for t in test_ids]
    check = _Check(traces, stats)
    return {
        "best_single": (best, [_single(t, best) for t in tasks]),
        "cheapest": (cheapest, [_single(t, cheapest) for t in tasks]),
        "oracle": ("cheapest correct model per task", [_oracle(t) for t in tasks]),
        "threshold": (
            f"{weak} / {best} at {threshold:g}",
            [_single(t, weak if stats.accuracy(weak, t.category) >= threshold else best) for t in tasks],
        ),
        "cascade": (f"{weak} → {mid} → {best}", [_fixed_cascade(t, [weak, mid, best], check) for t in tasks]),
    }


def _score(
    trace: Trace, chosen: Outcome | None, cost: Decimal, answers: int, called: list[Outcome] | None = None
) -> TaskScore:
    """`called`: the outcomes of every call made, one after another (default: the chosen one)."""
    latencies = [o.latency_s for o in (called if called is not None else [chosen] if chosen else [])]
    return TaskScore(
        trace.task_id, trace.category, chosen.model if chosen else None, chosen.correct if chosen else 0.0,
        cost, answers, "unverified", escalated=answers > 1,
        latency_s=sum(latencies) if latencies and None not in latencies else None,  # type: ignore[arg-type]
    )  # fmt: skip


def _single(trace: Trace, model: str) -> TaskScore:
    outcome = trace.outcomes.get(model)
    return _score(trace, outcome, outcome.cost if outcome else Decimal(0), 1)


def _oracle(trace: Trace) -> TaskScore:
    right = [o for o in trace.outcomes.values() if o.correct >= 0.5]
    pool = right or list(trace.outcomes.values())
    chosen = min(pool, key=lambda o: (o.cost, o.model))
    return _score(trace, chosen, chosen.cost, 1)


class _Check:
    """The deployable check, as our cascade uses it: recorded verdict, else cross-vendor agreement."""

    def __init__(self, traces: TraceSet, stats: Stats) -> None:
        self.traces = traces
        self.by_price: list[ModelSpec] = sorted(
            traces.models.values(), key=lambda m: (m.input_price + m.output_price, m.id)
        )

    def __call__(self, trace: Trace, outcome: Outcome) -> tuple[bool, Outcome | None]:
        """Whether `outcome` passes, and the second opinion it took (agreement), if any."""
        if self.traces.has_verdict:
            return bool(outcome.verdict), None
        vendor = self.traces.models[outcome.model].vendor
        other = next((m for m in self.by_price if m.vendor != vendor and m.id in trace.outcomes), None)
        if other is None:
            return False, None
        second = trace.outcomes[other.id]
        agree = normalise(outcome.answer or "") == normalise(second.answer or "") and bool(outcome.answer)
        return agree, second


def _fixed_cascade(trace: Trace, chain: list[str], check: _Check) -> TaskScore:
    cost, answers, last, called = Decimal(0), 0, None, []
    for i, model in enumerate(chain):
        outcome = trace.outcomes.get(model)
        if outcome is None:
            continue
        cost, answers, last = cost + outcome.cost, answers + 1, outcome
        called.append(outcome)
        if i == len(chain) - 1:
            break
        passed, second = check(trace, outcome)
        if second is not None:
            cost += second.cost
            called.append(second)
        if passed:
            break
    return _score(trace, last, cost, answers, called)
