"""Running totals of the calls table, kept by the database's own triggers, for reports and dashboards.

A report over a million calls cannot group every row each time it is opened (SQLite sorts to group:
seconds per grouping). Triggers keep two small tables instead, per hour and every column a report
groups by — whoever writes the ledger, whichever process:

- `{table}_hourly`: calls, picodollars, verdicts, and attempts a later attempt on the same task
  followed (an escalation, or a second opinion under agreement);
- `{table}_denials`: each rejection a routing decision recorded, by rule;
- `{table}_tasks`: calls and spend per task (calls in flight left out), with the hour of its latest
  call: the most expensive tasks without grouping every call.

Insert adds a row's part, delete takes it back, update does both; a ledger written before the
triggers existed is filled once from its calls when it is opened.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ledger import IN_FLIGHT

__all__ = ["HOUR", "KEY", "POSTGRES", "SQLITE", "Dialect", "schema"]

HOUR = 3600  # seconds per bucket: report windows start and end on the hour
KEY = (
    "hour", "tenant", "run_id", "node", "task_kind", "data_class", "model", "vendor", "jurisdiction",
    "host_jurisdiction", "outcome",
)  # fmt: skip
DENIAL_KEY = ("hour", "tenant", "run_id", "task_kind", "data_class", "rule")


@dataclass(frozen=True)
class Dialect:
    """What differs between SQLite and PostgreSQL in the statements below."""

    name: str
    mark: str  # a query parameter
    bigint: str

    def greatest(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})" if self.name == "sqlite" else f"GREATEST({a}, {b})"

    def hour(self, ts: str) -> str:
        return f"CAST({ts} / {HOUR} AS INTEGER)" if self.name == "sqlite" else f"floor({ts} / {HOUR})::bigint"

    def rejections(self, decision: str) -> tuple[str, str, str]:
        """One row per rejection in a decision's JSON that names its rule: a FROM item `r`, the
        condition on it, and the rule (anything else in a decision is skipped: a write never fails on
        what a report reads)."""
        if self.name == "sqlite":
            return (
                f"json_each({decision}, '$.rejected') AS r",
                "r.type = 'object' AND json_type(r.value, '$.rule') = 'text'",
                "json_extract(r.value, '$.rule')",
            )
        rejected = f"(({decision})::jsonb -> 'rejected')"
        return (
            f"jsonb_each(CASE WHEN jsonb_typeof({rejected}) = 'object' THEN {rejected} ELSE '{{}}'::jsonb END) AS r",
            "jsonb_typeof(r.value) = 'object' AND jsonb_typeof(r.value -> 'rule') = 'string'",
            "r.value ->> 'rule'",
        )


SQLITE = Dialect("sqlite", "?", "INTEGER")
POSTGRES = Dialect("postgres", "%s", "BIGINT")


def schema(table: str, d: Dialect) -> str:
    """The two tables, their triggers, and the statements that fill them from existing calls."""
    tables = _tables(table, d)
    if d.name == "sqlite":
        return tables + _sqlite_triggers(table, d)
    return tables + _postgres_trigger(table, d)


def backfill(table: str, d: Dialect) -> list[str]:
    """Statements filling the totals from the calls table (run when they are empty and it is not)."""
    key = ", ".join(KEY[1:])
    hourly = f"""
INSERT INTO {table}_hourly ({", ".join(KEY)}, calls, cost_pico, passes, fails, escalated)
SELECT hour, {key}, COUNT(*), SUM(cost_pico), SUM(CASE WHEN verdict = 1 THEN 1 ELSE 0 END),
       SUM(CASE WHEN verdict = 0 THEN 1 ELSE 0 END), SUM(followed)
FROM (SELECT {d.hour("ts")} AS hour, {key}, cost_pico, verdict,
             CASE WHEN node = 'attempt' AND ts < MAX(ts) OVER (PARTITION BY run_id, task_id, node)
                  THEN 1 ELSE 0 END AS followed
      FROM {table}) AS c
GROUP BY hour, {key}"""
    each, valid, rule = d.rejections("c.decision")
    denials = f"""
INSERT INTO {table}_denials ({", ".join(DENIAL_KEY)}, denials)
SELECT {d.hour("c.ts")}, c.tenant, c.run_id, c.task_kind, c.data_class, {rule}, COUNT(*)
FROM {table} AS c, {each}
WHERE c.decision IS NOT NULL AND {valid}
GROUP BY 1, 2, 3, 4, 5, 6"""
    tasks = f"""
INSERT INTO {table}_tasks (run_id, task_id, tenant, task_kind, hour, calls, cost_pico)
SELECT run_id, task_id, MIN(tenant), MIN(task_kind), MAX({d.hour("ts")}), SUM({_settled("c", "1")}),
       SUM({_settled("c", "c.cost_pico")})
FROM {table} AS c GROUP BY run_id, task_id"""
    return [hourly, denials, tasks]


def emptied(table: str) -> list[str]:
    """Statements removing totals that came back to zero (after a prune): they hold nothing."""
    return [
        f"DELETE FROM {table}_hourly WHERE calls = 0 AND escalated = 0",
        f"DELETE FROM {table}_denials WHERE denials = 0",
        f"DELETE FROM {table}_tasks WHERE calls = 0 AND cost_pico = 0",
    ]


def _settled(row: str, value: str) -> str:
    return f"(CASE WHEN {row}.outcome = '{IN_FLIGHT}' THEN 0 ELSE {value} END)"


def _tables(table: str, d: Dialect) -> str:
    text = ", ".join(f"{c} TEXT NOT NULL" for c in KEY[1:])
    return f"""
CREATE TABLE IF NOT EXISTS {table}_hourly (
    hour {d.bigint} NOT NULL, {text},
    calls {d.bigint} NOT NULL, cost_pico {d.bigint} NOT NULL, passes {d.bigint} NOT NULL,
    fails {d.bigint} NOT NULL, escalated {d.bigint} NOT NULL,
    PRIMARY KEY ({", ".join(KEY)})
);
CREATE TABLE IF NOT EXISTS {table}_denials (
    hour {d.bigint} NOT NULL, tenant TEXT NOT NULL, run_id TEXT NOT NULL, task_kind TEXT NOT NULL,
    data_class TEXT NOT NULL, rule TEXT NOT NULL, denials {d.bigint} NOT NULL,
    PRIMARY KEY ({", ".join(DENIAL_KEY)})
);
CREATE TABLE IF NOT EXISTS {table}_tasks (
    run_id TEXT NOT NULL, task_id TEXT NOT NULL, tenant TEXT NOT NULL, task_kind TEXT NOT NULL,
    hour {d.bigint} NOT NULL, calls {d.bigint} NOT NULL, cost_pico {d.bigint} NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS {table}_hourly_run ON {table}_hourly (run_id);
"""


def _others(table: str, row: str, alias: str) -> str:
    """The other attempts of `row`'s task (an update sees the row's new version: not an other)."""
    return (
        f"{alias}.run_id = {row}.run_id AND {alias}.task_id = {row}.task_id AND {alias}.node = 'attempt' "
        f"AND {alias}.call_id <> {row}.call_id"
    )


def _followed(table: str, row: str) -> str:
    """1 if a later attempt on `row`'s task followed it, else 0."""
    later = f"SELECT 1 FROM {table} AS q WHERE {_others(table, row, 'q')} AND q.ts > {row}.ts"
    return f"(CASE WHEN {row}.node = 'attempt' AND EXISTS ({later}) THEN 1 ELSE 0 END)"


def _add(table: str, d: Dialect, row: str, sign: int) -> str:
    """Add (`sign` 1) or take back (-1) one call's part of the hourly totals."""
    values = ", ".join(f"{row}.{c}" for c in KEY[1:])
    sums = ("calls", "cost_pico", "passes", "fails", "escalated")
    return f"""
INSERT INTO {table}_hourly ({", ".join(KEY)}, {", ".join(sums)})
VALUES ({d.hour(f"{row}.ts")}, {values}, {sign}, {sign} * {row}.cost_pico,
        {sign} * (CASE WHEN {row}.verdict = 1 THEN 1 ELSE 0 END),
        {sign} * (CASE WHEN {row}.verdict = 0 THEN 1 ELSE 0 END), {sign} * {_followed(table, row)})
ON CONFLICT ({", ".join(KEY)}) DO UPDATE SET
    {", ".join(f"{c} = {table}_hourly.{c} + excluded.{c}" for c in sums)};
{_flip(table, d, row, sign)}
INSERT INTO {table}_tasks (run_id, task_id, tenant, task_kind, hour, calls, cost_pico)
VALUES ({row}.run_id, {row}.task_id, {row}.tenant, {row}.task_kind, {d.hour(f"{row}.ts")},
        {sign} * {_settled(row, "1")}, {sign} * {_settled(row, f"{row}.cost_pico")})
ON CONFLICT (run_id, task_id) DO UPDATE SET
    calls = {table}_tasks.calls + excluded.calls, cost_pico = {table}_tasks.cost_pico + excluded.cost_pico,
    hour = {d.greatest(f"{table}_tasks.hour", "excluded.hour")};"""


def _flip(table: str, d: Dialect, row: str, sign: int) -> str:
    """An attempt arriving last (`sign` 1) marks the attempt before it as followed; leaving, unmarks it."""
    latest_before = f"(SELECT MAX(q.ts) FROM {table} AS q WHERE {_others(table, row, 'q')} AND q.ts < {row}.ts)"
    before = f"{_others(table, row, 'p')} AND p.ts = {latest_before}"
    later = f"SELECT 1 FROM {table} AS q WHERE {_others(table, row, 'q')} AND q.ts > {row}.ts"
    key = ", ".join([d.hour("p.ts"), *(f"p.{c}" for c in KEY[1:])])
    same_key = " AND ".join(f"{expr} = {table}_hourly.{c}" for expr, c in zip(key.split(", "), KEY, strict=True))
    return f"""
UPDATE {table}_hourly SET escalated = escalated + {sign} * (
    SELECT COUNT(*) FROM {table} AS p WHERE {before} AND {same_key})
WHERE {row}.node = 'attempt' AND NOT EXISTS ({later}) AND ({", ".join(KEY)}) IN (
    SELECT {key} FROM {table} AS p WHERE {before});"""


def _add_denials(table: str, d: Dialect, row: str, sign: int) -> str:
    each, valid, rule = d.rejections(f"{row}.decision")
    return f"""
INSERT INTO {table}_denials ({", ".join(DENIAL_KEY)}, denials)
SELECT {d.hour(f"{row}.ts")}, {row}.tenant, {row}.run_id, {row}.task_kind, {row}.data_class, {rule},
       {sign} * COUNT(*)
FROM {each} WHERE {row}.decision IS NOT NULL AND {valid} GROUP BY {rule}
ON CONFLICT ({", ".join(DENIAL_KEY)}) DO UPDATE SET denials = {table}_denials.denials + excluded.denials;"""


def _sqlite_triggers(table: str, d: Dialect) -> str:
    return f"""
CREATE TRIGGER IF NOT EXISTS {table}_rollup_insert AFTER INSERT ON {table} BEGIN
{_add(table, d, "NEW", 1)}
{_add_denials(table, d, "NEW", 1)}
END;
CREATE TRIGGER IF NOT EXISTS {table}_rollup_delete AFTER DELETE ON {table} BEGIN
{_add(table, d, "OLD", -1)}
{_add_denials(table, d, "OLD", -1)}
END;
CREATE TRIGGER IF NOT EXISTS {table}_rollup_update AFTER UPDATE ON {table} BEGIN
{_add(table, d, "OLD", -1)}
{_add_denials(table, d, "OLD", -1)}
{_add(table, d, "NEW", 1)}
{_add_denials(table, d, "NEW", 1)}
END;
"""


def _postgres_trigger(table: str, d: Dialect) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {table}_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        {_add(table, d, "OLD", -1)}
        {_add_denials(table, d, "OLD", -1)}
    END IF;
    IF TG_OP <> 'DELETE' THEN
        {_add(table, d, "NEW", 1)}
        {_add_denials(table, d, "NEW", 1)}
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER {table}_rollup AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {table}_rollup();
"""
