"""What the SQL ledgers share: the columns, row mapping, filters and queries, per placeholder style."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from .ledger import IN_FLIGHT, SELF_HOSTED, CallRecord, Outcome, Tally, from_pico, to_pico

COLUMNS = (
    "call_id", "ts", "run_id", "task_id", "node", "task_kind", "data_class", "tenant", "model",
    "vendor", "jurisdiction", "host_jurisdiction", "input_tokens", "output_tokens", "cost_pico",
    "latency_s", "attempts", "outcome", "verdict", "score", "evaluator", "decision",
)  # fmt: skip
SELECT = f"SELECT {', '.join(COLUMNS)} FROM {{table}}"


def schema(table: str, real: str = "REAL", bigint: str = "INTEGER") -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    call_id TEXT PRIMARY KEY, ts {real} NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL,
    node TEXT NOT NULL, task_kind TEXT NOT NULL, data_class TEXT NOT NULL, tenant TEXT NOT NULL,
    model TEXT NOT NULL, vendor TEXT NOT NULL, jurisdiction TEXT NOT NULL,
    host_jurisdiction TEXT NOT NULL, input_tokens {bigint} NOT NULL, output_tokens {bigint} NOT NULL,
    cost_pico {bigint} NOT NULL, latency_s {real} NOT NULL, attempts INTEGER NOT NULL,
    outcome TEXT NOT NULL, verdict INTEGER, score {real}, evaluator TEXT, decision TEXT
);
CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (ts);
CREATE INDEX IF NOT EXISTS {table}_run ON {table} (run_id, task_id);
CREATE INDEX IF NOT EXISTS {table}_kind_model ON {table} (task_kind, model) WHERE verdict IS NOT NULL;
"""


def upsert(table: str, mark: str) -> str:
    """Write a call, replacing its earlier row (in flight, then its outcome) as an update: the running
    totals' triggers see the old row leave and the new one come."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "call_id")
    return (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))}) "
        f"ON CONFLICT (call_id) DO UPDATE SET {updates}"
    )


def totals_statement(statement: str, table: str, mark: str) -> str:
    """A `Ledger.totals` statement for one backend: its tables named, its parameter marks."""
    named = statement.format(calls=table, **{part: f"{table}_{part}" for part in ("hourly", "denials", "tasks")})
    return named.replace("?", mark) if mark != "?" else named


def where(mark: str, **filters: Any) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause over known columns (`since` and `until` bound the time, `api_only` leaves out
    self-hosted calls)."""
    clauses, args = [], []
    bounds = {"since": f"ts >= {mark}", "until": f"ts < {mark}"}
    for name, value in filters.items():
        if value is None or value is False:
            continue
        if name == "api_only":
            clauses.append(f"host_jurisdiction <> '{SELF_HOSTED}'")
            continue
        clauses.append(bounds.get(name, f"{name} = {mark}"))
        args.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), tuple(args)


def to_row(rec: CallRecord) -> tuple[Any, ...]:
    values = {name: getattr(rec, name) for name in COLUMNS if name not in {"cost_pico", "decision", "verdict"}}
    values["cost_pico"] = to_pico(rec.cost)
    values["verdict"] = None if rec.verdict is None else int(rec.verdict)
    values["decision"] = json.dumps(dict(rec.decision), default=str) if rec.decision is not None else None
    return tuple(values[name] for name in COLUMNS)


def to_record(row: tuple[Any, ...]) -> CallRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["cost"] = from_pico(int(values.pop("cost_pico")))
    values["verdict"] = None if values["verdict"] is None else bool(values["verdict"])
    values["decision"] = json.loads(values["decision"]) if values["decision"] else None
    return CallRecord(**values)


def spend_query(table: str, column: str, where_clause: str) -> str:
    return f"SELECT {column}, COUNT(*), SUM(cost_pico) FROM {table} {where_clause} GROUP BY {column}"


def tallies_query(table: str, where_clause: str) -> str:
    verdicts = f"{where_clause} {'AND' if where_clause else 'WHERE'} verdict IS NOT NULL"
    return (
        f"SELECT task_kind, model, SUM(verdict), COUNT(*) - SUM(verdict) FROM {table} {verdicts} "
        "GROUP BY task_kind, model"
    )


def close_in_flight(
    table: str, mark: str, call_id: str, outcome: Outcome | None, cost: Decimal
) -> tuple[str, tuple[Any, ...]]:
    """The statement ending a row still in flight (see `Ledger.close_in_flight`)."""
    if outcome is None:
        return f"DELETE FROM {table} WHERE call_id = {mark} AND outcome = '{IN_FLIGHT}'", (call_id,)
    return (
        f"UPDATE {table} SET outcome = {mark}, cost_pico = {mark} WHERE call_id = {mark} AND outcome = '{IN_FLIGHT}'",
        (outcome, to_pico(cost), call_id),
    )


class TallyCache:
    """Verdict tallies per (task kind, model), loaded from the table at most every `refresh_s` and
    kept up to date with this process's own verdicts in between. Routing reads them for every
    decision; an aggregate over every verdict each time would grow with the ledger. Verdicts other
    processes record show at the next load (routing estimates, not money: a little late is fine)."""

    def __init__(self, refresh_s: float = 30.0) -> None:
        self.refresh_s = refresh_s
        self._loaded_at: float | None = None
        self._tallies: dict[tuple[str, str], Tally] = {}

    def stale(self) -> bool:
        return self._loaded_at is None or time.monotonic() - self._loaded_at > self.refresh_s

    def load(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        self._tallies = {(kind, model): Tally(int(p), int(f)) for kind, model, p, f in rows}
        self._loaded_at = time.monotonic()

    def get(self, task_kind: str | None) -> dict[tuple[str, str], Tally]:
        return {
            key: t
            for key, t in self._tallies.items()
            if (task_kind is None or key[0] == task_kind) and (t.passes or t.fails)
        }

    def verdict(self, kind: str, model: str, before: int | None, passed: bool) -> None:
        """A call's verdict set (or changed from `before`) in this process."""
        if self._loaded_at is None:
            return  # loaded with it, when first read
        t = self._tallies.get((kind, model), Tally())
        passes, fails = t.passes + passed, t.fails + (not passed)
        if before is not None:
            passes, fails = passes - bool(before), fails - (not before)
        self._tallies[(kind, model)] = Tally(passes, fails)

    def forget(self) -> None:
        self._loaded_at = None
