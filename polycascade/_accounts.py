"""Where the governor keeps committed money: in this process (here), or shared in PostgreSQL
(`_ledger_postgres.PostgresAccounts`). Each ledger says which (`Ledger.accounts`).

Committed money = spend settled in the ledger + the maximum cost of every call in flight.
`exclusive()` makes a decision and its reservation atomic: an asyncio lock in one process; a
transaction holding a PostgreSQL advisory lock across processes and machines.
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
    from .ledger import Ledger

__all__ = ["Accounts", "LocalAccounts", "Reserved"]

Load = Callable[[], Awaitable[Decimal]]


@frozen
class Reserved:
    id: str
    vendor: str
    api: bool  # self-hosted calls do not count towards vendor shares
    amount: Decimal
    scopes: tuple[str, ...]


class Accounts(Protocol):
    def exclusive(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def committed(self, scope: str, settled: Load) -> Decimal: ...

    async def vendor_committed(self, since: float) -> tuple[dict[str, Decimal], dict[str, int]]: ...

    async def reserve(self, r: Reserved) -> None: ...

    async def release(self, r: Reserved, cost: Decimal) -> bool: ...


class LocalAccounts:
    """One process: settled spend from the ledger (reloaded every `refresh_s`) plus what we settled since."""

    def __init__(self, ledger: Ledger, clock: Callable[[], float], refresh_s: float, *, shared: bool) -> None:
        self.ledger, self.clock, self.refresh_s = ledger, clock, refresh_s
        # a budget's baseline is reloaded to see what other processes spent; when nobody else writes the
        # ledger (`shared=False`, a ledger in memory), the first load plus what this process settled stays
        # exact, and a long replay does not rescan every call every `refresh_s`
        self._reload_budgets = shared
        self.reservations: dict[str, Reserved] = {}
        self._baselines: dict[str, tuple[float, Decimal]] = {}
        self._settled: dict[str, Decimal] = defaultdict(Decimal)
        self._vendor_base: tuple[float, dict[str, tuple[Decimal, int]]] | None = None
        self._vendor_settled: dict[str, tuple[Decimal, int]] = defaultdict(lambda: (Decimal(0), 0))
        self._locks: dict[int, asyncio.Lock] = {}

    def exclusive(self) -> asyncio.Lock:
        loop_id = id(asyncio.get_running_loop())  # one lock per event loop: sync wrappers make new loops
        lock = self._locks.get(loop_id)
        if lock is None:
            lock = self._locks[loop_id] = asyncio.Lock()
        return lock

    async def committed(self, scope: str, settled: Load) -> Decimal:
        base = self._baselines.get(scope)
        if base is None or (self._reload_budgets and self.clock() - base[0] > self.refresh_s):
            base = self._baselines[scope] = (self.clock(), await settled())
            self._settled[scope] = Decimal(0)  # the ledger now includes what we had settled
        reserved = sum((r.amount for r in self.reservations.values() if scope in r.scopes), Decimal(0))
        return base[1] + self._settled[scope] + reserved

    async def vendor_committed(self, since: float) -> tuple[dict[str, Decimal], dict[str, int]]:
        now = self.clock()
        if self._vendor_base is None or now - self._vendor_base[0] > self.refresh_s:
            rows = await self.ledger.spend_by("vendor", since=since, api_only=True)
            self._vendor_base = (now, {v: (r.cost, r.calls) for v, r in rows.items()})
            self._vendor_settled.clear()
        spend: dict[str, Decimal] = defaultdict(Decimal)
        calls: dict[str, int] = defaultdict(int)
        for source in (self._vendor_base[1], self._vendor_settled):
            for vendor, (cost, n) in source.items():
                spend[vendor] += cost
                calls[vendor] += n
        for r in self.reservations.values():
            if r.api:
                spend[r.vendor] += r.amount
                calls[r.vendor] += 1
        return dict(spend), dict(calls)

    async def reserve(self, r: Reserved) -> None:
        self.reservations[r.id] = r

    async def release(self, r: Reserved, cost: Decimal) -> bool:
        if self.reservations.pop(r.id, None) is None:
            return False
        for scope in r.scopes:
            self._settled[scope] += cost
        if r.api:
            spent, calls = self._vendor_settled[r.vendor]
            self._vendor_settled[r.vendor] = (spent + cost, calls + 1)
        return True
