"""`polycascade export`: every call of a run, a tenant or a time window, for an auditor.

One row per call: who asked (run, task, tenant, data class), where it went (model, vendor and
its jurisdiction, host jurisdiction), what it cost and took, how it ended (outcome, verdict), and
why it went there (policy, the decision's reason, rejected candidates with their rules, what was
reserved). Rows stream from the ledger a page at a time and are written as they come, so a
million-call ledger exports in constant memory. Money is exact: a decimal string in CSV and
JSONL, `decimal128(38, 12)` in Parquet.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal

from ._secrets import redactor
from .errors import ConfigError
from .ledger import CallRecord, Ledger

__all__ = ["COLUMNS", "TRANSFER_COLUMNS", "Format", "export_calls", "row_of", "transfer_row"]

Format = Literal["csv", "jsonl", "parquet"]
COLUMNS = (
    "call_id", "time", "run_id", "task_id", "node", "task_kind", "data_class", "tenant", "model", "vendor",
    "vendor_jurisdiction", "host_jurisdiction", "input_tokens", "output_tokens", "cost_usd", "latency_s",
    "attempts", "outcome", "verdict", "score", "evaluator", "policy", "reason", "rejected", "reserved_usd",
    "jpy_per_usd", "rate_as_of", "cost_jpy",
)  # fmt: skip
TRANSFER_COLUMNS = (
    "call_id", "time", "run_id", "task_id", "node", "tenant", "data_class", "model", "vendor", "from",
    "vendor_jurisdiction", "host_jurisdiction", "destinations", "basis", "policy", "policy_version", "outcome",
    "cost_usd",
)  # fmt: skip
_BATCH = 10_000  # Parquet rows per row group


def row_of(rec: CallRecord, scrub: Callable[[str], str] = str) -> dict[str, Any]:
    """One call as an export row; text the decision carries passes through `scrub` (a secret filter)."""
    why = rec.decision or {}
    rejected = {m: f"{d.get('rule')}: {d.get('reason')}" for m, d in (why.get("rejected") or {}).items()}
    return {
        "call_id": rec.call_id, "time": datetime.fromtimestamp(rec.ts, UTC).isoformat(timespec="milliseconds"),
        "run_id": rec.run_id, "task_id": rec.task_id, "node": rec.node, "task_kind": rec.task_kind,
        "data_class": rec.data_class, "tenant": rec.tenant, "model": rec.model, "vendor": rec.vendor,
        "vendor_jurisdiction": rec.jurisdiction, "host_jurisdiction": rec.host_jurisdiction,
        "input_tokens": rec.input_tokens, "output_tokens": rec.output_tokens, "cost_usd": rec.cost,
        "latency_s": round(rec.latency_s, 6), "attempts": rec.attempts, "outcome": rec.outcome,
        "verdict": rec.verdict, "score": rec.score, "evaluator": rec.evaluator,
        "policy": why.get("policy"), "reason": scrub(str(why["reason"])) if why.get("reason") else None,
        "rejected": scrub(json.dumps(rejected, ensure_ascii=False)) if rejected else None,
        "reserved_usd": Decimal(str(why["reserved_usd"])) if why.get("reserved_usd") else None,
        **_in_yen(rec.cost, why.get("fx")),
    }  # fmt: skip


def _in_yen(usd: Decimal, fx: Any) -> dict[str, Any]:
    """The call's cost in yen at the rate recorded when it was reserved (exact; none without a rate)."""
    if not fx:
        return {"jpy_per_usd": None, "rate_as_of": None, "cost_jpy": None}
    rate = Decimal(str(fx["jpy_per_usd"]))
    return {"jpy_per_usd": rate, "rate_as_of": fx.get("as_of"), "cost_jpy": (usd * rate).normalize()}


def transfer_row(rec: CallRecord) -> dict[str, Any] | None:
    """A call that sent personal data abroad (APPI Art. 28), as an auditor's row; `None` for any other."""
    sent = (rec.decision or {}).get("cross_border")
    if not sent:
        return None
    basis = sent.get("basis") or {}
    return {
        "call_id": rec.call_id, "time": datetime.fromtimestamp(rec.ts, UTC).isoformat(timespec="milliseconds"),
        "run_id": rec.run_id, "task_id": rec.task_id, "node": rec.node, "tenant": rec.tenant,
        "data_class": rec.data_class, "model": rec.model, "vendor": rec.vendor, "from": sent.get("from"),
        "vendor_jurisdiction": sent.get("vendor_jurisdiction"), "host_jurisdiction": sent.get("host_jurisdiction"),
        "destinations": " ".join(sorted(basis)), "basis": " ".join(f"{c}:{b}" for c, b in sorted(basis.items())),
        "policy": sent.get("policy"), "policy_version": sent.get("policy_version"), "outcome": rec.outcome,
        "cost_usd": rec.cost,
    }  # fmt: skip


async def export_calls(
    ledger: Ledger,
    out: Path | IO[str],
    fmt: Format = "csv",
    *,
    since: float | None = None,
    until: float | None = None,
    cross_border: bool = False,
    **where: Any,
) -> int:
    """Write every call matching `where` (run_id=…, tenant=…) between `since` and `until` to `out`
    (a path, or a text stream for CSV and JSONL); returns the number of rows. `cross_border`: only
    the calls that sent personal data abroad, with their destinations and basis."""
    calls = ledger.stream(since=since, until=until, **where)
    columns: tuple[str, ...]
    if cross_border:
        columns, rows = TRANSFER_COLUMNS, (row async for rec in calls if (row := transfer_row(rec)) is not None)
    else:
        scrub = redactor()
        columns, rows = COLUMNS, (row_of(rec, scrub) async for rec in calls)
    if fmt == "parquet":
        if not isinstance(out, Path):
            raise ConfigError("Parquet goes to a file: give `out` a path", parameter="out")
        return await _parquet(rows, out, columns)
    opened = out.open("w", encoding="utf-8", newline="") if isinstance(out, Path) else contextlib.nullcontext(out)
    with opened as sink:
        return await (_csv(rows, sink, columns) if fmt == "csv" else _jsonl(rows, sink))


async def _csv(rows: AsyncIterator[dict[str, Any]], sink: IO[str], columns: tuple[str, ...]) -> int:
    writer = csv.DictWriter(sink, columns, lineterminator="\n")
    writer.writeheader()
    n = 0
    async for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
        n += 1
    return n


async def _jsonl(rows: AsyncIterator[dict[str, Any]], sink: IO[str]) -> int:
    n = 0
    async for row in rows:
        sink.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        n += 1
    return n


async def _parquet(rows: AsyncIterator[dict[str, Any]], path: Path, columns: tuple[str, ...]) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet needs pyarrow: pip install 'polycascade[backtest]', or use csv or jsonl") from None
    money, text, integer, real = pa.decimal128(38, 12), pa.string(), pa.int64(), pa.float64()
    yen = pa.decimal128(38, 18)  # picodollars times a rate quoted to six places
    types = {"cost_usd": money, "reserved_usd": money, "cost_jpy": yen, "jpy_per_usd": money, "input_tokens": integer,
             "output_tokens": integer, "attempts": integer, "latency_s": real, "score": real,
             "verdict": pa.bool_()}  # fmt: skip
    schema = pa.schema([(c, types.get(c, text)) for c in columns])
    n, group = 0, []
    with pq.ParquetWriter(path, schema) as writer:
        async for row in rows:
            group.append(row)
            if len(group) == _BATCH:
                writer.write_table(pa.Table.from_pylist(group, schema))
                n, group = n + len(group), []
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema))
            n += len(group)
    return n
