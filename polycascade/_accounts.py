"""Where the governor keeps committed money: in this process, or shared in PostgreSQL.

Committed money = spend settled in the ledger + the maximum cost of every call in flight.
`exclusive()` makes a decision and its reservation atomic: an asyncio lock in one process; a
transaction holding a PostgreSQL advisory lock across processes and machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, Protocol

from ._records import record
from .ledger import Ledger, MemoryLedger, from_pico, to_pico

__all__ = ["Accounts", "LocalAccounts", "PostgresAccounts", "Reserved"]

Load = Callable[[], Awaitable[Decimal]]


@record
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

    def __init__(self, ledger: Ledger, clock: Callable[[], float], refresh_s: float) -> None:
        self.ledger, self.clock, self.refresh_s = ledger, clock, refresh_s
        # a budget's baseline is reloaded to see what other processes spent; nobody else writes a ledger
        # in memory, so there the first load plus what this process settled stays exact (and a long replay
        # does not rescan every call every `refresh_s`)
        self._reload_budgets = not isinstance(ledger, MemoryLedger)
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


class PostgresAccounts:
    """Shared by every worker using the same PostgreSQL ledger: caps and budgets hold across all of them.

    A reservation whose worker died is ignored after `stale_s` (its call, if it happened, is in the
    ledger by then, or never will be).
    """

    def __init__(self, ledger: Any, *, stale_s: float = 900.0, table: str | None = None) -> None:
        self.ledger, self.stale_s = ledger, stale_s
        self.table = table or f"{ledger.table}_reservations"
        self._locks: dict[int, asyncio.Lock] = {}
        self._conns: dict[int, Any] = {}

    async def _conn(self) -> Any:
        """Our own connection per loop: the ledger's writes must not ride inside our transactions."""
        import psycopg

        loop_id = id(asyncio.get_running_loop())
        conn = self._conns.get(loop_id)
        if conn is None or conn.closed:
            from ._ledger_postgres import create_once

            conn = await psycopg.AsyncConnection.connect(self.ledger.url, autocommit=True)
            await create_once(
                conn,
                f"CREATE TABLE IF NOT EXISTS {self.table} (id TEXT PRIMARY KEY, vendor TEXT NOT NULL, api BOOLEAN "
                "NOT NULL, amount_pico BIGINT NOT NULL, scopes TEXT[] NOT NULL, created DOUBLE PRECISION NOT NULL)",
            )
            self._conns[loop_id] = conn
        return conn

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        loop_id = id(asyncio.get_running_loop())
        async with self._locks.setdefault(loop_id, asyncio.Lock()):
            conn = await self._conn()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                yield

    async def _fetch(self, query: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = await self._conn()
        async with conn.cursor() as cur:
            await cur.execute(query, args)
            return list(await cur.fetchall())

    async def committed(self, scope: str, settled: Load) -> Decimal:
        [(pico,)] = await self._fetch(
            f"SELECT COALESCE(SUM(amount_pico), 0) FROM {self.table} WHERE %s = ANY(scopes) AND created > %s",
            (scope, time.time() - self.stale_s),
        )
        return await settled() + from_pico(int(pico))

    async def vendor_committed(self, since: float) -> tuple[dict[str, Decimal], dict[str, int]]:
        rows = await self.ledger.spend_by("vendor", since=since, api_only=True)
        spend = {v: r.cost for v, r in rows.items()}
        calls = {v: r.calls for v, r in rows.items()}
        for vendor, pico, n in await self._fetch(
            f"SELECT vendor, SUM(amount_pico), COUNT(*) FROM {self.table} WHERE api AND created > %s GROUP BY vendor",
            (time.time() - self.stale_s,),
        ):
            spend[vendor] = spend.get(vendor, Decimal(0)) + from_pico(int(pico))
            calls[vendor] = calls.get(vendor, 0) + int(n)
        return spend, calls

    async def reserve(self, r: Reserved) -> None:
        conn = await self._conn()
        await conn.execute(
            f"INSERT INTO {self.table} (id, vendor, api, amount_pico, scopes, created) VALUES (%s, %s, %s, %s, %s, %s)",
            (r.id, r.vendor, r.api, to_pico(r.amount), list(r.scopes), time.time()),
        )

    async def release(self, r: Reserved, cost: Decimal) -> bool:
        async with self._locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock()):
            conn = await self._conn()
            async with conn.cursor() as cur:
                await cur.execute(f"DELETE FROM {self.table} WHERE id = %s", (r.id,))
                return bool(cur.rowcount)
