"""Where the governor keeps committed money: in this process (here), or shared in PostgreSQL
(`_ledger_postgres.PostgresAccounts`). Each ledger says which (`Ledger.accounts`).

Committed money = spend settled in the ledger + the maximum cost of every call in flight.
In one process an asyncio lock (`exclusive()`) makes a decision and its reservation atomic. Across
processes (PostgreSQL) each budget scope is a row, and a reservation a guarded update of its rows
(`… WHERE committed + amount <= limit`): workers decide in parallel, and one that decided on a
stale view finds no room, and decides again (`reserve` names the scope). Only a vendor share cap,
which weighs every vendor's spend against the total, still makes decisions take turns.

Over a ledger on disk (`durable`), each reservation is also written as a ledger row in flight, at
its reserved cost, before the call goes out; the call's own row replaces it. A process killed
mid-call leaves that row behind, so whoever reads the ledger next (a resumed run, another worker)
counts money that may have been spent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from .records import frozen

if TYPE_CHECKING:
    from .ledger import CallRecord, Ledger

__all__ = ["Accounts", "LocalAccounts", "Reserved"]

Load = Callable[[], Awaitable[Decimal]]


@frozen
class Reserved:
    id: str
    vendor: str
    api: bool  # self-hosted calls do not count towards vendor shares
    amount: Decimal
    scopes: tuple[str, ...]
    limits: tuple[Decimal, ...] = ()  # each scope's budget, in the same order


class Accounts(Protocol):
    durable: bool  # reservations are written to the ledger as rows in flight (`reserve` wants the row)

    def exclusive(self, coupled: bool = True) -> contextlib.AbstractAsyncContextManager[None]:
        """Around one decision and its reservation; `coupled`: the decision weighs every vendor's
        spend (a share cap), so no other may be made at the same time anywhere."""
        ...

    async def committed(self, scope: str, settled: Load) -> Decimal: ...

    async def vendor_committed(self, since: float) -> tuple[dict[str, Decimal], dict[str, int]]: ...

    async def reserve(self, r: Reserved, row: CallRecord | None = None) -> str | None:
        """Commit `r` (and its ledger row in flight); None when done, else the scope that had no
        room left (another worker took it since the decision looked)."""
        ...

    async def release(self, r: Reserved, cost: Decimal) -> bool: ...


@frozen
class _Baseline:
    """Spend loaded from the ledger at `at`, which already counts the rows in flight of `live`."""

    at: float
    spent: Decimal
    live: frozenset[str]


class LocalAccounts:
    """One process: settled spend from the ledger (reloaded every `refresh_s`) plus what we settled since.

    Over a ledger on disk, a baseline loaded while our own calls were in flight holds their rows at
    the reserved cost: those reservations are not added again, and settling one adds only what its
    cost differs from the reservation."""

    def __init__(self, ledger: Ledger, clock: Callable[[], float], refresh_s: float, *, shared: bool) -> None:
        self.ledger, self.clock, self.refresh_s = ledger, clock, refresh_s
        # a budget's baseline is reloaded to see what other processes spent; when nobody else writes the
        # ledger (`shared=False`, a ledger in memory), the first load plus what this process settled stays
        # exact, and a long replay does not rescan every call every `refresh_s`
        self.durable = self._reload_budgets = shared
        self.reservations: dict[str, Reserved] = {}
        self._baselines: dict[str, _Baseline] = {}
        self._settled: dict[str, Decimal] = defaultdict(Decimal)
        self._vendor_base: tuple[_Baseline, dict[str, tuple[Decimal, int]]] | None = None
        self._vendor_settled: dict[str, tuple[Decimal, int]] = defaultdict(lambda: (Decimal(0), 0))
        self._locks: dict[int, asyncio.Lock] = {}

    def exclusive(self, coupled: bool = True) -> asyncio.Lock:
        loop_id = id(asyncio.get_running_loop())  # one lock per event loop: sync wrappers make new loops
        lock = self._locks.get(loop_id)
        if lock is None:
            lock = self._locks[loop_id] = asyncio.Lock()
        return lock

    def _mark(self, spent: Decimal) -> _Baseline:
        return _Baseline(self.clock(), spent, frozenset(self.reservations) if self.durable else frozenset())

    async def committed(self, scope: str, settled: Load) -> Decimal:
        base = self._baselines.get(scope)
        if base is None or (self._reload_budgets and self.clock() - base.at > self.refresh_s):
            base = self._baselines[scope] = self._mark(await settled())
            self._settled[scope] = Decimal(0)  # the ledger now includes what we had settled
        reserved = sum(
            (r.amount for r in self.reservations.values() if scope in r.scopes and r.id not in base.live), Decimal(0)
        )
        return base.spent + self._settled[scope] + reserved

    async def vendor_committed(self, since: float) -> tuple[dict[str, Decimal], dict[str, int]]:
        if self._vendor_base is None or self.clock() - self._vendor_base[0].at > self.refresh_s:
            rows = await self.ledger.spend_by("vendor", since=since, api_only=True)
            self._vendor_base = (self._mark(Decimal(0)), {v: (r.cost, r.calls) for v, r in rows.items()})
            self._vendor_settled.clear()
        base, loaded = self._vendor_base
        spend: dict[str, Decimal] = defaultdict(Decimal)
        calls: dict[str, int] = defaultdict(int)
        for source in (loaded, self._vendor_settled):
            for vendor, (cost, n) in source.items():
                spend[vendor] += cost
                calls[vendor] += n
        for r in self.reservations.values():
            if r.api and r.id not in base.live:
                spend[r.vendor] += r.amount
                calls[r.vendor] += 1
        return dict(spend), dict(calls)

    async def reserve(self, r: Reserved, row: CallRecord | None = None) -> str | None:
        if row is not None:
            await self.ledger.write(row)
        self.reservations[r.id] = r
        return None  # under the lock the decision saw everything committed: there is room

    async def release(self, r: Reserved, cost: Decimal) -> bool:
        if self.reservations.pop(r.id, None) is None:
            return False
        for scope in r.scopes:
            base = self._baselines.get(scope)
            self._settled[scope] += cost - (r.amount if base is not None and r.id in base.live else 0)
        if r.api:
            counted = self._vendor_base is not None and r.id in self._vendor_base[0].live
            spent, calls = self._vendor_settled[r.vendor]
            self._vendor_settled[r.vendor] = (spent + cost - (r.amount if counted else 0), calls + (not counted))
        return True
