"""The PostgreSQL ledger: one ledger for many processes and machines (`--ledger postgresql://…`).

Async psycopg; one connection per event loop (sync callers run each call in a fresh loop).
Costs are BIGINT picodollars, summed exactly in SQL like the other backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

from . import _ledger_rollup as rollup
from . import _ledger_sql as sql
from ._accounts import Load, Reserved
from .errors import ConfigError
from .ledger import CallRecord, Outcome, SpendRow, Tally, check_group_key, from_pico, to_pico

_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def create_once(conn: Any, ddl: str) -> None:
    """CREATE … IF NOT EXISTS races between sessions in PostgreSQL: serialise it with an advisory lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('polycascade-schema'))")
        await conn.execute(ddl)


class PostgresLedger:
    @classmethod
    def from_url(cls, url: str) -> PostgresLedger:
        """`postgresql://…[?table=NAME]`: the table is ours to choose; the rest goes to libpq."""
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        table = query.pop("table", "polycascade_calls")
        return cls(urlunsplit(parts._replace(query=urlencode(query))), table=table)

    def __init__(self, url: str, *, table: str = "polycascade_calls") -> None:
        if not _TABLE.match(table):
            raise ConfigError(f"ledger table name {table!r}: use lower-case letters, digits and _")
        self.url, self.table = url, table
        self.upsert = sql.upsert(table, "%s")
        self._conns: dict[int, Any] = {}
        self._tallies = sql.TallyCache()

    async def _conn(self) -> Any:
        loop = id(asyncio.get_running_loop())
        conn = self._conns.get(loop)
        if conn is None or conn.closed:
            try:
                import psycopg
            except ImportError:
                raise ConfigError("the PostgreSQL ledger needs psycopg: pip install 'polycascade[postgres]'") from None
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            except psycopg.OperationalError as exc:
                where = self.url.split("@")[-1]  # never echo a password
                raise ConfigError(
                    f"cannot reach the PostgreSQL ledger at {where}: {str(exc).splitlines()[0]}"
                ) from None
            await self._create(conn)
            self._conns[loop] = conn
        return conn

    async def _create(self, conn: Any) -> None:
        """The tables and triggers; running totals filled once for a ledger written before they existed."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('polycascade-schema'))")
            found = await conn.execute("SELECT to_regclass(%s)", (f"{self.table}_hourly",))
            fresh = (await found.fetchone())[0] is None
            await conn.execute(sql.schema(self.table, real="DOUBLE PRECISION", bigint="BIGINT"))
            await conn.execute(rollup.schema(self.table, rollup.POSTGRES))
            if fresh and await (await conn.execute(f"SELECT 1 FROM {self.table} LIMIT 1")).fetchone():
                for statement in rollup.backfill(self.table, rollup.POSTGRES):
                    await conn.execute(statement)

    async def _run(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = await self._conn()
        async with conn.cursor() as cur:
            await cur.execute(statement, args)
            return list(await cur.fetchall()) if cur.description else []

    async def write(self, rec: CallRecord) -> None:
        await self._run(self.upsert, sql.to_row(rec))
        if rec.verdict is not None:
            self._tallies.forget()

    async def set_verdict(self, call_id: str, passed: bool, score: float | None, evaluator: str) -> None:
        found = await self._run(
            f"WITH before AS (SELECT call_id, verdict FROM {self.table} WHERE call_id = %s) "
            f"UPDATE {self.table} t SET verdict = %s, score = %s, evaluator = %s FROM before "
            "WHERE t.call_id = before.call_id RETURNING t.task_kind, t.model, before.verdict",
            (call_id, int(passed), score, evaluator),
        )
        if found:
            kind, model, before = found[0]
            self._tallies.verdict(kind, model, before, passed)

    async def get(self, call_id: str) -> CallRecord | None:
        rows = await self._run(f"{sql.SELECT.format(table=self.table)} WHERE call_id = %s", (call_id,))
        return sql.to_record(rows[0]) if rows else None

    async def close_in_flight(self, call_id: str, outcome: Outcome | None, cost: Decimal) -> None:
        await self._run(*sql.close_in_flight(self.table, "%s", call_id, outcome, cost))

    async def calls(self, *, run_id: str | None = None, task_id: str | None = None) -> list[CallRecord]:
        where, args = sql.where("%s", run_id=run_id, task_id=task_id)
        rows = await self._run(f"{sql.SELECT.format(table=self.table)} {where} ORDER BY ts", args)
        return [sql.to_record(r) for r in rows]

    async def stream(
        self, *, since: float | None = None, until: float | None = None, **filters: Any
    ) -> AsyncIterator[CallRecord]:
        import psycopg

        check_group_key("vendor", filters)
        where, args = sql.where("%s", since=since, until=until, **filters)
        statement = f"{sql.SELECT.format(table=self.table)} {where} ORDER BY ts"
        connect = psycopg.AsyncConnection.connect(self.url)
        async with await connect as conn, conn.cursor(name="polycascade_stream") as cur:  # server-side: pages
            await cur.execute(statement, args)
            while page := await cur.fetchmany(2000):
                for row in page:
                    yield sql.to_record(row)

    async def spend_by(self, key: str, *, since: float | None = None, **filters: Any) -> dict[str, SpendRow]:
        column = check_group_key(key, filters)
        where, args = sql.where("%s", since=since, **filters)
        rows = await self._run(sql.spend_query(self.table, column, where), args)
        return {group: SpendRow(int(n), from_pico(int(pico))) for group, n, pico in rows}

    async def prune(self, before: float) -> int:
        conn = await self._conn()
        async with conn.cursor() as cur:
            await cur.execute(f"DELETE FROM {self.table} WHERE ts < %s", (before,))
            removed = cur.rowcount
            for statement in rollup.emptied(self.table):
                await cur.execute(statement)
        self._tallies.forget()
        return int(removed)

    async def totals(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._run(sql.totals_statement(statement, self.table, "%s"), args)

    async def tallies(self, task_kind: str | None = None) -> dict[tuple[str, str], Tally]:
        if self._tallies.stale():
            self._tallies.load(await self._run(sql.tallies_query(self.table, "")))  # type: ignore[arg-type]
        return self._tallies.get(task_kind)

    def accounts(self, clock: Callable[[], float], refresh_s: float) -> PostgresAccounts:
        return PostgresAccounts(self)  # shared: caps and budgets hold across every worker

    async def close(self) -> None:
        conn = self._conns.pop(id(asyncio.get_running_loop()), None)
        if conn is not None:
            await conn.close()

    async def drop(self) -> None:
        """Remove the table and what the governor keeps beside it (tests use one table each)."""
        for suffix in ("", "_committed", "_hourly", "_denials", "_tasks"):
            await self._run(f"DROP TABLE IF EXISTS {self.table}{suffix}")
        await self._run(f"DROP FUNCTION IF EXISTS {self.table}_rollup()")


class PostgresAccounts:
    """Shared by every worker using the same PostgreSQL ledger: caps and budgets hold across all of them.

    Each budget scope (`run:…`, `day:…`, `tenant:…:…`, `task:…`) is a row of committed money, first
    loaded from the ledger's spend. A reservation adds its amount to each of its rows with a guarded
    `UPDATE … WHERE committed + amount <= limit` in one transaction, and writes its ledger row in
    flight; settling moves the row to the actual cost. Workers reserve in parallel, each budget row
    locked only for its update; a decision made on a view another worker has since changed finds no
    room and is made again (`Governor.route`). A vendor share cap weighs every vendor's spend against
    the total, so decisions under one take turns on a PostgreSQL advisory lock (`coupled`).

    A worker that dies mid-call leaves its money committed and its row in flight (the call may have
    been billed): `report` and `explain` show it as `in_flight`.
    """

    durable = True

    def __init__(self, ledger: Any) -> None:
        self.ledger, self.table = ledger, f"{ledger.table}_committed"
        self.live: set[str] = set()  # this process's reservations, released once each
        self._locks: dict[int, asyncio.Lock] = {}
        self._conns: dict[int, Any] = {}

    async def _conn(self) -> Any:
        """Our own connection per loop: reservations commit apart from the ledger's writes."""
        import psycopg

        loop_id = id(asyncio.get_running_loop())
        conn = self._conns.get(loop_id)
        if conn is None or conn.closed:
            await self.ledger._conn()  # the ledger's table exists
            conn = await psycopg.AsyncConnection.connect(self.ledger.url, autocommit=True)
            ddl = f"CREATE TABLE IF NOT EXISTS {self.table} (scope TEXT PRIMARY KEY, committed_pico BIGINT NOT NULL)"
            await create_once(conn, ddl)
            self._conns[loop_id] = conn
        return conn

    def _lock(self) -> asyncio.Lock:
        """One user of this process's connection at a time (a transaction must not take in another's statements)."""
        return self._locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())

    @contextlib.asynccontextmanager
    async def exclusive(self, coupled: bool = True) -> AsyncIterator[None]:
        async with self._lock():
            if not coupled:
                yield
                return
            conn = await self._conn()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.ledger.table,))
                yield

    async def committed(self, scope: str, settled: Load) -> Decimal:
        conn = await self._conn()
        select = f"SELECT committed_pico FROM {self.table} WHERE scope = %s"
        row = await (await conn.execute(select, (scope,))).fetchone()
        if row is None:  # a new scope starts from what the ledger holds (a resumed run, an earlier process)
            start = to_pico(await settled())
            await conn.execute(
                f"INSERT INTO {self.table} VALUES (%s, %s) ON CONFLICT (scope) DO NOTHING", (scope, start)
            )
            row = await (await conn.execute(select, (scope,))).fetchone()
        return from_pico(int(row[0]))

    async def vendor_committed(self, since: float) -> tuple[dict[str, Decimal], dict[str, int]]:
        rows = await self.ledger.spend_by("vendor", since=since, api_only=True)  # rows in flight included
        return {v: r.cost for v, r in rows.items()}, {v: r.calls for v, r in rows.items()}

    async def reserve(self, r: Reserved, row: CallRecord | None = None) -> str | None:
        assert row is not None, "durable accounts keep each reservation as its row in flight"
        conn, amount = await self._conn(), to_pico(r.amount)
        room = "committed_pico + %s <= %s"
        guarded = f"UPDATE {self.table} SET committed_pico = committed_pico + %s WHERE scope = %s AND {room}"
        try:
            async with conn.transaction():  # a savepoint when `exclusive` holds the share lock's transaction
                for scope, limit in zip(r.scopes, r.limits, strict=True):
                    if (await conn.execute(guarded, (amount, scope, amount, to_pico(limit)))).rowcount != 1:
                        raise _NoRoom(scope)
                await conn.execute(self.ledger.upsert, sql.to_row(row))
        except _NoRoom as full:
            return full.scope
        self.live.add(r.id)
        return None

    async def release(self, r: Reserved, cost: Decimal) -> bool:
        if r.id not in self.live:
            return False
        self.live.discard(r.id)
        if r.scopes:
            async with self._lock():
                conn = await self._conn()
                await conn.execute(
                    f"UPDATE {self.table} SET committed_pico = committed_pico + %s WHERE scope = ANY(%s)",
                    (to_pico(cost) - to_pico(r.amount), list(r.scopes)),
                )
        return True


class _NoRoom(Exception):
    def __init__(self, scope: str) -> None:
        self.scope = scope
