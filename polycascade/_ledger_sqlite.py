"""The SQLite ledger: one file, WAL mode, safe to share between processes on one machine.

Statements run inline on the event loop: each is a single indexed write or aggregate taking
tens of microseconds, cheaper than a hop to a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .ledger import SELF_HOSTED, CallRecord, SpendRow, Tally, check_group_key, from_pico, to_pico

_COLUMNS = (
    "call_id",
    "ts",
    "run_id",
    "task_id",
    "node",
    "task_kind",
    "data_class",
    "tenant",
    "model",
    "vendor",
    "jurisdiction",
    "host_jurisdiction",
    "input_tokens",
    "output_tokens",
    "cost_pico",
    "latency_s",
    "attempts",
    "outcome",
    "verdict",
    "score",
    "evaluator",
    "decision",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY, ts REAL NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    node TEXT NOT NULL, task_kind TEXT NOT NULL, data_class TEXT NOT NULL, tenant TEXT NOT NULL,
    model TEXT NOT NULL, vendor TEXT NOT NULL, jurisdiction TEXT NOT NULL,
    host_jurisdiction TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cost_pico INTEGER NOT NULL, latency_s REAL NOT NULL, attempts INTEGER NOT NULL,
    outcome TEXT NOT NULL, verdict INTEGER, score REAL, evaluator TEXT, decision TEXT
);
CREATE INDEX IF NOT EXISTS calls_ts ON calls (ts);
CREATE INDEX IF NOT EXISTS calls_run ON calls (run_id, task_id);
CREATE INDEX IF NOT EXISTS calls_kind_model ON calls (task_kind, model) WHERE verdict IS NOT NULL;
"""
_INSERT = f"INSERT OR REPLACE INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


class SQLiteLedger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    async def record(self, rec: CallRecord) -> None:
        self._run(_INSERT, _row(rec))

    async def set_verdict(self, call_id: str, passed: bool, score: float | None, evaluator: str) -> None:
        self._run(
            "UPDATE calls SET verdict = ?, score = ?, evaluator = ? WHERE call_id = ?",
            (int(passed), score, evaluator, call_id),
        )

    async def get(self, call_id: str) -> CallRecord | None:
        rows = self._run(f"SELECT {', '.join(_COLUMNS)} FROM calls WHERE call_id = ?", (call_id,))
        return _record(rows[0]) if rows else None

    async def calls(self, *, run_id: str | None = None, task_id: str | None = None) -> list[CallRecord]:
        where, args = _where(run_id=run_id, task_id=task_id)
        rows = self._run(f"SELECT {', '.join(_COLUMNS)} FROM calls {where} ORDER BY ts", args)
        return [_record(r) for r in rows]

    async def spend_by(self, key: str, *, since: float | None = None, **filters: Any) -> dict[str, SpendRow]:
        column = check_group_key(key, filters)
        where, args = _where(since=since, **filters)
        rows = self._run(f"SELECT {column}, COUNT(*), SUM(cost_pico) FROM calls {where} GROUP BY {column}", args)
        return {group: SpendRow(n, from_pico(pico)) for group, n, pico in rows}

    async def tallies(self, task_kind: str | None = None) -> dict[tuple[str, str], Tally]:
        where, args = _where(task_kind=task_kind)
        where = f"{where} {'AND' if where else 'WHERE'} verdict IS NOT NULL"
        rows = self._run(
            f"SELECT task_kind, model, SUM(verdict), COUNT(*) - SUM(verdict) FROM calls {where} "
            "GROUP BY task_kind, model",
            args,
        )
        return {(kind, model): Tally(p, f) for kind, model, p, f in rows}

    async def close(self) -> None:
        with self._lock:
            self._db.close()


def _where(**filters: Any) -> tuple[str, tuple[Any, ...]]:
    clauses, args = [], []
    for name, value in filters.items():
        if value is None or value is False:
            continue
        if name == "api_only":
            clauses.append(f"host_jurisdiction != '{SELF_HOSTED}'")
            continue
        clauses.append("ts >= ?" if name == "since" else f"{name} = ?")
        args.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), tuple(args)


def _row(rec: CallRecord) -> tuple[Any, ...]:
    values = {name: getattr(rec, name) for name in _COLUMNS if name not in {"cost_pico", "decision", "verdict"}}
    values["cost_pico"] = to_pico(rec.cost)
    values["verdict"] = None if rec.verdict is None else int(rec.verdict)
    values["decision"] = json.dumps(rec.decision, default=str) if rec.decision is not None else None
    return tuple(values[name] for name in _COLUMNS)


def _record(row: tuple[Any, ...]) -> CallRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["cost"] = from_pico(values.pop("cost_pico"))
    values["verdict"] = None if values["verdict"] is None else bool(values["verdict"])
    values["decision"] = json.loads(values["decision"]) if values["decision"] else None
    return CallRecord(**values)
