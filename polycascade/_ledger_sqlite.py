"""The SQLite ledger: one file, WAL mode, safe to share between processes on one machine.

Statements run inline on the event loop: each is a single indexed write or aggregate taking
tens of microseconds, cheaper than a hop to a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import _ledger_rollup as rollup
from . import _ledger_sql as sql
from ._accounts import Accounts, LocalAccounts
from .ledger import CallRecord, Outcome, SpendRow, Tally, check_group_key, from_pico

TABLE = "calls"
PAGE = 2000  # rows read at a time by `stream`


class SQLiteLedger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._create()
        self._tallies = sql.TallyCache()
        self._upsert = sql.upsert(TABLE, "?")

    def _create(self) -> None:
        """The tables and triggers; running totals filled once for a ledger written before they existed."""
        self._db.execute("BEGIN IMMEDIATE")  # one process at a time creates and fills
        try:
            fresh = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (f"{TABLE}_hourly",)).fetchone()
            for statement in (sql.schema(TABLE), rollup.schema(TABLE, rollup.SQLITE)):
                for part in _statements(statement):
                    self._db.execute(part)
            if fresh is None and self._db.execute(f"SELECT 1 FROM {TABLE} LIMIT 1").fetchone():
                for statement in rollup.backfill(TABLE, rollup.SQLITE):
                    self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _run(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(statement, args).fetchall()

    async def write(self, rec: CallRecord) -> None:
        self._run(self._upsert, sql.to_row(rec))
        if rec.verdict is not None:
            self._tallies.forget()

    async def set_verdict(self, call_id: str, passed: bool, score: float | None, evaluator: str) -> None:
        found = self._run(f"SELECT task_kind, model, verdict FROM {TABLE} WHERE call_id = ?", (call_id,))
        self._run(
            f"UPDATE {TABLE} SET verdict = ?, score = ?, evaluator = ? WHERE call_id = ?",
            (int(passed), score, evaluator, call_id),
        )
        if found:
            kind, model, before = found[0]
            self._tallies.verdict(kind, model, before, passed)

    async def get(self, call_id: str) -> CallRecord | None:
        rows = self._run(f"{sql.SELECT.format(table=TABLE)} WHERE call_id = ?", (call_id,))
        return sql.to_record(rows[0]) if rows else None

    async def close_in_flight(self, call_id: str, outcome: Outcome | None, cost: Decimal) -> None:
        self._run(*sql.close_in_flight(TABLE, "?", call_id, outcome, cost))

    async def calls(self, *, run_id: str | None = None, task_id: str | None = None) -> list[CallRecord]:
        where, args = sql.where("?", run_id=run_id, task_id=task_id)
        return [sql.to_record(r) for r in self._run(f"{sql.SELECT.format(table=TABLE)} {where} ORDER BY ts", args)]

    async def stream(
        self, *, since: float | None = None, until: float | None = None, **filters: Any
    ) -> AsyncIterator[CallRecord]:
        check_group_key("vendor", filters)
        where, args = sql.where("?", since=since, until=until, **filters)
        reader = sqlite3.connect(self.path, check_same_thread=False)  # its own snapshot; writers go on
        try:
            cursor = reader.execute(f"{sql.SELECT.format(table=TABLE)} {where} ORDER BY ts", args)
            while page := cursor.fetchmany(PAGE):
                for row in page:
                    yield sql.to_record(row)
        finally:
            reader.close()

    async def spend_by(self, key: str, *, since: float | None = None, **filters: Any) -> dict[str, SpendRow]:
        column = check_group_key(key, filters)
        where, args = sql.where("?", since=since, **filters)
        rows = self._run(sql.spend_query(TABLE, column, where), args)
        return {group: SpendRow(int(n), from_pico(int(pico))) for group, n, pico in rows}

    async def prune(self, before: float) -> int:
        with self._lock:
            removed = self._db.execute(f"DELETE FROM {TABLE} WHERE ts < ?", (before,)).rowcount
            for statement in rollup.emptied(TABLE):
                self._db.execute(statement)
        self._tallies.forget()
        return int(removed)

    async def totals(self, statement: str, *args: Any) -> list[tuple[Any, ...]]:
        return self._run(sql.totals_statement(statement, TABLE, "?"), args)

    async def tallies(self, task_kind: str | None = None) -> dict[tuple[str, str], Tally]:
        if self._tallies.stale():
            self._tallies.load(self._run(sql.tallies_query(TABLE, "")))
        return self._tallies.get(task_kind)

    def accounts(self, clock: Callable[[], float], refresh_s: float) -> Accounts:
        return LocalAccounts(self, clock, refresh_s, shared=True)  # other processes may write the file

    async def close(self) -> None:
        with self._lock:
            self._db.close()


def _statements(script: str) -> list[str]:
    """A DDL script's statements one by one (`executescript` would commit the transaction around them)."""
    parts, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                parts.append(current)
            current = ""
    return parts
