"""The ledger: one row per model call, and the aggregate queries policies decide on.

Implementations: `MemoryLedger` (tests, one process), `SQLiteLedger` (default: a file in WAL
mode) and `PostgresLedger` (shared by many processes). All pass the same conformance suite
(`tests/test_ledger_conformance.py`).
Money is stored as integer picodollars (1e-12 USD), exact for any price quoted to six decimals
per million tokens, so sums in SQL stay exact; the API speaks `Decimal`.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol, runtime_checkable

from ._accounts import Accounts, LocalAccounts
from .records import frozen, replace
from .types import Tally  # policies import it from there: they may not reach this module's backends

__all__ = [
    "IN_FLIGHT",
    "CallRecord",
    "Ledger",
    "MemoryLedger",
    "Outcome",
    "SpendRow",
    "Tally",
    "new_call_id",
]

PICO = Decimal("1e-12")
Outcome = str  # "ok", the error class name (e.g. "RateLimited"), or IN_FLIGHT
IN_FLIGHT = "in_flight"  # reserved and maybe sent, no outcome yet: counted at its reserved cost until one comes


def new_call_id() -> str:
    return os.urandom(8).hex()  # 64 random bits, as uuid4().hex[:16] gave, at a fifth of the cost


def to_pico(amount: Decimal) -> int:
    return int((amount / PICO).to_integral_value(ROUND_HALF_EVEN))


def from_pico(pico: int) -> Decimal:
    return (Decimal(pico) * PICO).normalize() if pico else Decimal(0)


@frozen
class CallRecord:
    call_id: str
    model: str
    vendor: str
    jurisdiction: str
    outcome: Outcome
    run_id: str = "adhoc"
    task_id: str = ""
    node: str = ""
    task_kind: str = "general"
    data_class: str = "internal"
    tenant: str = "default"
    host_jurisdiction: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_s: float = 0.0
    attempts: int = 1
    verdict: bool | None = None
    score: float | None = None
    evaluator: str | None = None
    decision: Mapping[str, Any] | None = None
    ts: float = field(default_factory=time.time)


@frozen
class SpendRow:
    """Spend and call count for one group (a vendor, a jurisdiction …)."""

    calls: int
    cost: Decimal


@runtime_checkable
class Ledger(Protocol):
    async def write(self, rec: CallRecord) -> None: ...

    async def set_verdict(self, call_id: str, passed: bool, score: float | None, evaluator: str) -> None: ...

    async def get(self, call_id: str) -> CallRecord | None: ...

    async def close_in_flight(self, call_id: str, outcome: Outcome | None, cost: Decimal) -> None:
        """End a row still in flight that no call replaced: remove it (`outcome=None`: nothing was
        sent), or keep it as `outcome` at `cost`. A row with an outcome is left as it is."""
        ...

    async def calls(self, *, run_id: str | None = None, task_id: str | None = None) -> list[CallRecord]: ...

    def stream(
        self, *, since: float | None = None, until: float | None = None, **where: Any
    ) -> AsyncIterator[CallRecord]:
        """Every call from `since` until before `until`, oldest first, read in pages (constant memory:
        an export of millions of calls). `where` filters by equality, as in `spend_by`."""
        ...

    async def spend_by(self, key: str, *, since: float | None = None, **where: Any) -> dict[str, SpendRow]:
        """Spend and calls grouped by `key` (a `GROUP_KEYS` column), from `since` on.

        `where` filters on columns by equality (run_id=…, task_id=…, tenant=…), and
        `api_only=True` leaves out self-hosted calls.
        """
        ...

    async def tallies(self, task_kind: str | None = None) -> dict[tuple[str, str], Tally]:
        """Evaluator verdicts per (task kind, model)."""
        ...

    async def prune(self, before: float) -> int:
        """Remove every call recorded before `before` (retention: `polycascade ledger prune`); returns
        how many. The running totals lose them too."""
        ...

    async def totals(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a read-only statement over the calls (`{calls}`) and their running totals
        (`{hourly}`, `{denials}`, `{tasks}`: see `_ledger_rollup`), in SQL common to SQLite and
        PostgreSQL with `?` parameters. Reports aggregate there rather than over every call in Python."""
        ...

    async def close(self) -> None: ...

    def accounts(self, clock: Callable[[], float], refresh_s: float) -> Accounts:
        """Where the governor keeps committed money over this ledger: in the process, or shared by
        every process that writes it (PostgreSQL)."""
        ...


GROUP_KEYS = frozenset(
    {"vendor", "jurisdiction", "model", "tenant", "task_kind", "run_id", "task_id", "host_jurisdiction", "data_class"}
)
SELF_HOSTED = "self"  # host_jurisdiction of calls to self-hosted models


def check_group_key(key: str, where: dict[str, Any] | None = None) -> str:
    for column in (key, *(k for k in (where or {}) if k != "api_only")):
        if column not in GROUP_KEYS:
            raise ValueError(f"cannot group or filter spend by {column!r}; use one of {sorted(GROUP_KEYS)}")
    return key


class MemoryLedger:
    """A ledger in a Python list: for tests and one-off scripts."""

    def __init__(self) -> None:
        self._rows: dict[str, CallRecord] = {}
        self._tallies: dict[tuple[str, str], Tally] = {}  # kept up to date: routing reads it per decision
        self._by_task: dict[str, list[str]] = defaultdict(list)  # a task budget loads its task's spend per task

    async def write(self, rec: CallRecord) -> None:
        earlier = self._rows.get(rec.call_id)
        self._untally(earlier)
        if earlier is None:
            self._by_task[rec.task_id].append(rec.call_id)
        self._rows[rec.call_id] = rec
        self._tally(rec, +1)

    async def set_verdict(self, call_id: str, passed: bool, score: float | None, evaluator: str) -> None:
        if call_id in self._rows:
            self._untally(self._rows[call_id])
            self._rows[call_id] = replace(self._rows[call_id], verdict=passed, score=score, evaluator=evaluator)
            self._tally(self._rows[call_id], +1)

    def _untally(self, rec: CallRecord | None) -> None:
        if rec is not None:
            self._tally(rec, -1)

    def _tally(self, rec: CallRecord, sign: int) -> None:
        if rec.verdict is None:
            return
        key = (rec.task_kind, rec.model)
        t = self._tallies.get(key, Tally())
        self._tallies[key] = Tally(t.passes + sign * rec.verdict, t.fails + sign * (not rec.verdict))

    async def get(self, call_id: str) -> CallRecord | None:
        return self._rows.get(call_id)

    async def close_in_flight(self, call_id: str, outcome: Outcome | None, cost: Decimal) -> None:
        row = self._rows.get(call_id)
        if row is None or row.outcome != IN_FLIGHT:
            return
        if outcome is None:
            del self._rows[call_id]
            self._by_task[row.task_id].remove(call_id)
        else:
            self._rows[call_id] = replace(row, outcome=outcome, cost=cost)

    async def calls(self, *, run_id: str | None = None, task_id: str | None = None) -> list[CallRecord]:
        return [
            r
            for r in self._candidates(task_id)
            if (run_id is None or r.run_id == run_id) and (task_id is None or r.task_id == task_id)
        ]

    async def stream(
        self, *, since: float | None = None, until: float | None = None, **where: Any
    ) -> AsyncIterator[CallRecord]:
        check_group_key("vendor", where)
        rows = sorted(self._candidates(where.get("task_id")), key=lambda r: r.ts)
        for r in rows:
            if _within(r.ts, since, until) and all(getattr(r, c) == v for c, v in where.items() if v is not None):
                yield r

    def _candidates(self, task_id: str | None) -> Iterable[CallRecord]:
        """Every call, or only the task's (from the index) when a filter names one."""
        if task_id is None:
            return self._rows.values()
        return [self._rows[c] for c in self._by_task.get(task_id, ())]

    async def spend_by(self, key: str, *, since: float | None = None, **where: Any) -> dict[str, SpendRow]:
        check_group_key(key, where)
        api_only = where.pop("api_only", False)
        rows = (
            r
            for r in self._candidates(where.get("task_id"))
            if (since is None or r.ts >= since)
            and not (api_only and r.host_jurisdiction == SELF_HOSTED)
            and all(getattr(r, column) == value for column, value in where.items() if value is not None)
        )
        return _group(rows, key)

    async def tallies(self, task_kind: str | None = None) -> dict[tuple[str, str], Tally]:
        return {
            key: t
            for key, t in self._tallies.items()
            if (task_kind is None or key[0] == task_kind) and (t.passes or t.fails)
        }

    async def prune(self, before: float) -> int:
        old = [r for r in self._rows.values() if r.ts < before]
        for rec in old:
            self._untally(rec)
            del self._rows[rec.call_id]
            self._by_task[rec.task_id].remove(rec.call_id)
        return len(old)

    async def totals(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        from ._ledger_sqlite import SQLiteLedger  # imports this module

        snapshot = SQLiteLedger(":memory:")  # the same tables and triggers, filled in time order
        try:
            for rec in sorted(self._rows.values(), key=lambda r: r.ts):
                await snapshot.write(rec)
            return await snapshot.totals(statement, *args)
        finally:
            await snapshot.close()

    async def close(self) -> None:
        pass

    def accounts(self, clock: Callable[[], float], refresh_s: float) -> Accounts:
        return LocalAccounts(self, clock, refresh_s, shared=False)  # nobody else writes a ledger in memory


def _within(ts: float, since: float | None, until: float | None) -> bool:
    return (since is None or ts >= since) and (until is None or ts < until)


def _group(rows: Iterable[CallRecord], key: str) -> dict[str, SpendRow]:
    calls: dict[str, int] = defaultdict(int)
    pico: dict[str, int] = defaultdict(int)
    for r in rows:
        group = getattr(r, key)
        calls[group] += 1
        pico[group] += to_pico(r.cost)
    return {g: SpendRow(calls[g], from_pico(pico[g])) for g in calls}
