"""Replay recorded outcomes through the live cascade, governor and evaluators.

`ReplayGateway` is a `Completer` like the real gateway: it answers each request with the
recorded answer and cost for (task, model) and writes the same ledger row. Evaluation uses only
what a deployed system could see: the recorded `verdict`, or agreement with another vendor's
recorded answer. `correct` is used to score the result, never to steer it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from polycascade.agents.evaluators import Consensus, EvalServices, Evaluator, Judged
from polycascade.catalog import Catalog, ModelSpec
from polycascade.completer import call_record
from polycascade.errors import ConfigError, ProviderUnavailable
from polycascade.governor import Governor
from polycascade.graphs.cascade import Cascade, CascadeSettings
from polycascade.ledger import Ledger, MemoryLedger, Tally, new_call_id
from polycascade.policies.agreement import KindRecord
from polycascade.policies.config import Policy
from polycascade.records import frozen
from polycascade.service import assemble
from polycascade.tasks import Preferences, Task, TaskResult, Verdict
from polycascade.types import Completion, CompletionRequest, Usage

from .traces import Outcome, TraceSet

__all__ = ["RecordedVerdict", "ReplayGateway", "TaskScore", "replay"]


class ReplayGateway:
    def __init__(self, traces: TraceSet, catalog: Catalog, ledger: Ledger) -> None:
        self.traces, self.catalog, self.ledger = traces, catalog, ledger

    def outcome(self, task_id: str, model: str) -> Outcome | None:
        trace = self.traces.tasks.get(task_id)
        return trace.outcomes.get(model) if trace else None

    def missing_credentials(self, spec: ModelSpec) -> list[str]:
        return []  # recorded answers need no keys

    async def complete(self, request: CompletionRequest) -> Completion:
        spec = self.catalog[request.model]
        outcome = self.outcome(request.context.task_id, request.model)
        call_id = new_call_id()
        if outcome is None:
            await self.ledger.write(call_record(spec, request, call_id, 0.0, 1, "ProviderUnavailable"))
            raise ProviderUnavailable(f"no recorded outcome for task {request.context.task_id}", model=spec.id)
        completion = Completion(
            call_id=call_id, model=spec.id, vendor=spec.vendor, text=outcome.answer or "", tool_calls=(),
            usage=Usage(outcome.input_tokens or 0, outcome.output_tokens or 0), cost=outcome.cost,
            latency_s=outcome.latency_s or 0.0, attempts=1, finish_reason="stop",
        )  # fmt: skip
        await self.ledger.write(call_record(spec, request, call_id, completion.latency_s, 1, "ok", completion))
        return completion


@dataclass(frozen=True)
class RecordedVerdict:
    """The verdict a deployed evaluator gave, as recorded in the traces."""

    gateway: ReplayGateway
    name: str = "recorded_verdict"

    async def __call__(self, judged: Judged, services: EvalServices) -> Verdict:
        outcome = self.gateway.outcome(judged.task.id, judged.spec.id)
        if outcome is None or outcome.verdict is None:
            return Verdict(False, 0.0, "no recorded verdict", self.name)
        return Verdict(outcome.verdict, 1.0 if outcome.verdict else 0.0, "recorded verdict", self.name)


@frozen
class TaskScore:
    task_id: str
    category: str
    model: str | None  # whose answer was returned
    correct: float
    cost: Decimal
    answers: int  # rungs that answered
    status: str
    escalated: bool  # a check failed and a stronger model answered (a second opinion is not an escalation)
    latency_s: float | None = None  # the recorded latencies of its calls, one after another; None: not recorded


def evaluator_for(traces: TraceSet, gateway: ReplayGateway, pool: Iterable[ModelSpec]) -> Evaluator:
    if traces.has_verdict:
        return RecordedVerdict(gateway)
    if traces.has_answer:
        return Consensus()  # the next rung is the second opinion: no extra call
    raise ConfigError(
        f"{traces.source}: the cascade needs a deployable check: add a 'verdict' column (pass/fail from "
        "your evaluator) or an 'answer' column (for cross-vendor agreement)."
    )


async def replay(
    traces: TraceSet,
    test_ids: Sequence[str],
    policy: Policy,
    settings: CascadeSettings,
    history: Mapping[tuple[str, str], Tally],
    *,
    positions: Sequence[int] | None = None,
    max_tokens: int | None = None,
    agreement: Mapping[str, KindRecord] | None = None,
    prefer: Preferences | None = None,
    latency_seed: Sequence[tuple[str, str, float, int]] = (),
) -> tuple[list[TaskScore], Ledger, Governor, Cascade]:
    """Replay `test_ids` in order; `positions` (each task's place in the whole split) set replay time;
    `prefer`: every task's preferences, its latency bound judged on `latency_seed` (the train split's
    recorded calls) and on the replayed calls as they go."""
    clock = _Clock()
    pool = sorted(traces.models.values(), key=lambda m: (m.input_price + m.output_price, m.id))
    service = assemble(
        pool, policy=policy, catalog=Catalog(pool), ledger=MemoryLedger(), clock=clock,
        completer=lambda catalog, ledger: ReplayGateway(traces, catalog, ledger),
    )  # fmt: skip
    gateway = cast(ReplayGateway, service.gateway)
    if prefer is not None:
        service.governor.seed_latency(latency_seed)
    evaluator = evaluator_for(traces, gateway, service.pool)
    cascade = service.cascade(evaluator=evaluator, settings=settings, history=history, agreement=agreement)
    max_tokens = max_tokens or output_profile(traces)[0]
    scores = []
    for task_id, position in zip(test_ids, positions or range(len(test_ids)), strict=True):
        trace = traces.tasks[task_id]
        clock.now = _Clock.START + position + 1.0
        task = Task(
            "", kind=trace.category, max_tokens=max_tokens, id=task_id,
            run_id="backtest", input_tokens=_input_tokens(trace), prefer=prefer,
        )  # fmt: skip
        scores.append(_score(trace.category, task_id, await cascade.run_direct(task), gateway))
    return scores, service.ledger, service.governor, cascade


def _score(category: str, task_id: str, result: TaskResult, gateway: ReplayGateway) -> TaskScore:
    outcome = gateway.outcome(task_id, result.model) if result.model else None  # the answer the cascade returned
    answers = [a for a in result.attempts if a.answer is not None]
    failed = [i for i, a in enumerate(answers) if a.verdict and a.verdict.verifies and not a.verdict.passed]
    called = [gateway.outcome(task_id, a.model) for a in result.attempts]
    latencies = [o.latency_s for o in called if o is not None]
    return TaskScore(
        task_id, category, result.model, outcome.correct if outcome else 0.0, result.total_cost, len(answers),
        result.status, escalated=bool(failed) and failed[0] < len(answers) - 1,
        latency_s=sum(latencies) if latencies and None not in latencies else None,  # type: ignore[arg-type]
    )  # fmt: skip


def _input_tokens(trace: object) -> int:
    outcomes = getattr(trace, "outcomes", {}).values()
    known = [o.input_tokens for o in outcomes if o.input_tokens is not None]
    return max(known) if known else 1


def output_profile(traces: TraceSet) -> tuple[int, float]:
    """A max_tokens like the one the recorded runs used (the 99th percentile of recorded outputs),
    and the typical output as a share of it (the median's). Counted, not sorted: a million outputs
    take a few thousand distinct lengths."""
    counts = Counter(o.output_tokens for t in traces.tasks.values() for o in t.outcomes.values() if o.output_tokens)
    n = counts.total()
    if not n:
        return 1, 0.5
    p99 = _nth(counts, int(n * 0.99))
    median = (_nth(counts, (n - 1) // 2) + _nth(counts, n // 2)) / 2
    return p99, min(1.0, median / p99)


def _nth(counts: Counter[int], k: int) -> int:
    """The k-th smallest value (from 0) of the multiset `counts`."""
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen > k:
            return value
    raise IndexError(k)


class _Clock:
    """Replay time: one simulated second per task, so windows and cooldowns behave as live."""

    START = 1_700_000_000.0

    def __init__(self) -> None:
        self.now = self.START

    def __call__(self) -> float:
        return self.now
