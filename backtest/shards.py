"""Replay the test split on every core, by task kind, when that changes nothing.

The router learns per task kind, so kinds replay independently and give the same result in any
process, unless something couples them: money shared across tasks (a vendor share cap, a run,
day or tenant budget, a spend target), one random stream (exploration), or a missing outcome (a provider failure
opens a vendor's circuit breaker for every kind). Then everything runs in one process.

Workers are forked after the traces are loaded, so a million outcomes are shared, not copied
(the caller keeps them out of the collector's sight, `backtest._heap.frozen_heap`).
Each kind is one job (largest first, to the next free worker) and returns its scores, spend per
vendor and jurisdiction, and policy-violation counts.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from polycascade.catalog import ModelSpec
from polycascade.governor import Governor
from polycascade.graphs.cascade import CascadeSettings
from polycascade.ledger import Ledger, SpendRow, Tally
from polycascade.policies.agreement import KindRecord
from polycascade.policies.config import Policy
from polycascade.sync import run_sync
from polycascade.tasks import Preferences

from ._heap import collector_paused
from .replay import TaskScore, replay
from .traces import TraceSet

__all__ = ["PendingReplay", "Replayed", "replay_split"]

MIN_TASKS_PER_WORKER = 2_000  # below this, forking costs more than it saves
SPEND_KEYS = ("vendor", "jurisdiction")


@dataclass
class Replayed:
    scores: list[TaskScore]
    spend: dict[str, dict[str, SpendRow]]  # "vendor" / "jurisdiction" → group → calls and cost
    violations: dict[str, int]
    workers: int = 1
    why_serial: str | None = field(default=None, compare=False)
    answer_value: float | None = None  # where pacing left it


def replay_split(
    traces: TraceSet,
    test_ids: list[str],
    policy: Policy,
    settings: CascadeSettings,
    history: Mapping[tuple[str, str], Tally],
    max_tokens: int,
    workers: int | None = None,
    agreement: Mapping[str, KindRecord] | None = None,
    prefer: Preferences | None = None,
    latency_seed: Sequence[tuple[str, str, float, int]] = (),
) -> PendingReplay:
    """Start the replay; `.result()` waits for it. Workers, if any, start at once (work meanwhile)."""
    why_serial = coupling(traces, test_ids, policy, settings)
    kinds = _by_kind(traces, test_ids)
    workers = min(workers or _cores(), len(test_ids) // MIN_TASKS_PER_WORKER, len(kinds))

    def job(ids: list[str], positions: list[int]) -> tuple[Any, ...]:
        return (traces, ids, positions, policy, settings, history, max_tokens, agreement, prefer, latency_seed)

    if why_serial is not None or workers < 2:
        serial = job(test_ids, list(range(len(test_ids))))
        return PendingReplay(test_ids, serial=serial, why_serial=why_serial or "one worker is enough for this split")
    positions = {task_id: i for i, task_id in enumerate(test_ids)}
    jobs = [job(ids, [positions[t] for t in ids]) for ids in kinds]
    return PendingReplay(test_ids, jobs=jobs, workers=workers)


class PendingReplay:
    def __init__(
        self,
        test_ids: list[str],
        *,
        jobs: list[tuple[Any, ...]] | None = None,
        serial: tuple[Any, ...] | None = None,
        why_serial: str | None = None,
        workers: int = 1,
    ) -> None:
        self.test_ids, self.serial, self.why_serial, self.workers = test_ids, serial, why_serial, workers
        self.pool: Any = None
        if jobs:
            _stash(jobs)  # before the fork: the workers inherit the jobs instead of unpickling the traces
            self.pool = multiprocessing.get_context("fork").Pool(workers)
            # one job per kind, largest first, each to the next free worker: the load balances itself
            self.parts = self.pool.map_async(_replay_shard_forked, range(len(jobs)), chunksize=1)

    def result(self) -> Replayed:
        if self.serial is not None:
            result = _replay_shard(self.serial)
            result.why_serial = self.why_serial
            return result
        try:
            return _merge(self.parts.get(), self.test_ids, self.workers)
        finally:
            self.pool.close()
            self.pool.join()
            _stash(None)


def _cores() -> int:
    """The cores this process may use (a container's limit, not the host's count, where the OS says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def coupling(traces: TraceSet, test_ids: Sequence[str], policy: Policy, settings: CascadeSettings) -> str | None:
    """Why task kinds cannot replay apart, or None."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return "this platform cannot fork, and copying the traces to workers would cost more than it saves"
    b = policy.budgets
    if policy.vendor_share is not None:
        return "the vendor share cap couples every task"
    shared = (b.per_run_usd, b.per_day_usd, b.default_tenant_day_usd, b.per_run_jpy, b.per_day_jpy,
              b.default_tenant_day_jpy)  # fmt: skip
    if any(limit is not None for limit in shared) or b.per_tenant_day_usd or b.per_tenant_day_jpy:
        return "a run, day or tenant budget couples every task"
    if settings.routing.explore:
        return "exploration draws from one random stream"
    if settings.routing.target_cost is not None:
        return "one pacer spends the target over every task (routing.target_cost)"
    models = len(traces.models)
    if any(len(traces.tasks[t].outcomes) != models for t in test_ids):
        return "a missing outcome fails a call, and a vendor's breaker is shared by every kind"
    return None


_JOBS: list[Any] | None = None


def _stash(jobs: list[Any] | None) -> None:
    global _JOBS
    _JOBS = jobs


def _replay_shard_forked(index: int) -> Replayed:
    assert _JOBS is not None
    return _replay_shard(_JOBS[index])


def _replay_shard(job: tuple[Any, ...]) -> Replayed:
    with collector_paused():  # the ledger grows by a row per call: collections would rescan it for nothing
        return run_sync(_replay_and_report(*job))  # one event loop for the replay and its report


async def _replay_and_report(
    traces: TraceSet, ids: list[str], positions: list[int], policy: Policy, settings: CascadeSettings,
    history: Mapping[tuple[str, str], Tally], max_tokens: int, agreement: Mapping[str, KindRecord] | None,
    prefer: Preferences | None, latency_seed: Sequence[tuple[str, str, float, int]],
) -> Replayed:  # fmt: skip
    scores, ledger, governor, cascade = await replay(
        traces, ids, policy, settings, history, positions=positions, max_tokens=max_tokens, agreement=agreement,
        prefer=prefer, latency_seed=latency_seed,
    )  # fmt: skip
    spend = {key: await ledger.spend_by(key) for key in SPEND_KEYS}
    paced = cascade.pacer.value if cascade.pacer else None
    return Replayed(scores, spend, await audit(ledger, governor, policy, traces.models), answer_value=paced)


def _by_kind(traces: TraceSet, test_ids: list[str]) -> list[list[str]]:
    """The test tasks of each kind, in split order; the kinds with most tasks first."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for task_id in test_ids:
        by_kind[traces.tasks[task_id].category].append(task_id)
    return sorted(by_kind.values(), key=len, reverse=True)


def _merge(parts: list[Replayed], test_ids: list[str], workers: int) -> Replayed:
    order = {task_id: i for i, task_id in enumerate(test_ids)}
    scores = sorted((s for p in parts for s in p.scores), key=lambda s: order[s.task_id])
    spend: dict[str, dict[str, SpendRow]] = {key: {} for key in SPEND_KEYS}
    violations: dict[str, int] = defaultdict(int)
    for part in parts:
        for key, groups in part.spend.items():
            for group, row in groups.items():
                seen = spend[key].get(group, SpendRow(0, Decimal(0)))
                spend[key][group] = SpendRow(seen.calls + row.calls, seen.cost + row.cost)
        for rule, count in part.violations.items():
            violations[rule] += count
    return Replayed(scores, spend, dict(violations), workers=workers)


async def audit(ledger: Ledger, governor: Governor, policy: Policy, specs: Mapping[str, ModelSpec]) -> dict[str, int]:
    """Count policy violations in the ledger, after the fact, whatever the rules did at the time."""
    calls = await ledger.calls()
    residency = sum(1 for c in calls if not governor.residency_allows(specs[c.model], c.data_class))
    budget = 0
    if policy.budgets.per_run_usd is not None:
        by_run: dict[str, Decimal] = defaultdict(Decimal)
        for c in calls:
            by_run[c.run_id] += c.cost
        budget = sum(1 for spent in by_run.values() if spent > policy.budgets.per_run_usd)
    share = 0
    if policy.vendor_share is not None:
        api = [c for c in calls if c.host_jurisdiction != "self"]
        total = sum((c.cost for c in api), Decimal(0))
        tolerance = max((c.cost for c in api), default=Decimal(0)) + policy.vendor_share.min_volume_usd
        by_vendor: dict[str, Decimal] = defaultdict(Decimal)
        for c in api:
            by_vendor[c.vendor] += c.cost
        cap = Decimal(str(policy.vendor_share.max_share))
        share = sum(1 for spent in by_vendor.values() if spent > cap * total + tolerance)
    return {"residency": residency, "budget": budget, "vendor_share": share}
