"""The fast path for well-formed files: convert and check whole columns with pyarrow.

A million rows parsed one by one in Python take seconds; here each column is converted once in
C++ and only the `Outcome` objects are built in Python. Anything that does not convert cleanly
returns None, and the file goes down the row-by-row path, which names the line and field at
fault: this path only has to be right for good files.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from itertools import repeat
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from polycascade.catalog import Catalog, ModelSpec

from .traces import FALSE_WORDS, TRUE_WORDS, Outcome, identity_of

__all__ = ["convert"]

Converted = tuple[Iterator[tuple[str, str, Outcome]], dict[str, tuple[str, str]]]
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError)


def convert(table: pa.Table, catalog: Catalog) -> Converted | None:
    """(task id, category, outcome) per row and (vendor, jurisdiction) per model; None if any row is bad."""
    try:
        return _convert(table, catalog)
    except _ARROW_ERRORS:
        return None


def _convert(table: pa.Table, catalog: Catalog) -> Converted | None:
    column = _Columns(table)
    task_id, model = column.text("task_id"), column.text("model")
    correct = column.number("correct", pa.float64())
    if task_id is None or model is None or correct is None:
        return None
    if _any(pc.equal(task_id, "")) or _any(pc.equal(model, "")) or correct.null_count:
        return None
    if _any(pc.less(correct, 0)) or _any(pc.greater(correct, 1)):
        return None
    cost = column.number("cost_usd", pa.decimal128(38, 18))
    if cost is not None and _any(pc.less(cost, pa.scalar(Decimal(0), cost.type))):
        return None
    tokens_in = column.number("input_tokens", pa.int64())
    tokens_out = column.number("output_tokens", pa.int64())
    specs = {m: catalog.get(m) for m in pc.unique(model).to_pylist()}
    identity = _identities(column, model, specs)
    if identity is None or not _can_price(cost, model, specs, tokens_in, tokens_out):
        return None
    verdict = _verdicts(column.text("verdict"))
    category = column.text("category")
    category = pc.if_else(pc.equal(category, ""), "general", category) if category is not None else None
    answer = table.column("answer").cast(pa.string()) if "answer" in table.column_names else None
    values = [
        _list(task_id), _list(category, "general", table.num_rows), _list(model), _list(correct),
        column.decimals("cost_usd", cost), _list(answer, None, table.num_rows), _list(verdict, None, table.num_rows),
        _list(tokens_in, None, table.num_rows), _list(tokens_out, None, table.num_rows),
        _list(column.number("latency_s", pa.float64()), None, table.num_rows),
    ]  # fmt: skip
    return _outcomes(values, specs), identity


def _outcomes(values: list[Any], specs: dict[str, ModelSpec | None]) -> Iterator[tuple[str, str, Outcome]]:
    for task_id, category, model, correct, cost, answer, verdict, t_in, t_out, latency in zip(*values, strict=False):
        if cost is None:
            cost = specs[model].cost(t_in, t_out)  # type: ignore[union-attr]  # _can_price checked
        yield task_id, category, Outcome(model, correct, cost, answer, verdict, t_in, t_out, latency)


class _Columns:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def text(self, name: str) -> pa.ChunkedArray | None:
        if name not in self.table.column_names:
            return None
        values = self.table.column(name).cast(pa.string())
        return pc.utf8_trim_whitespace(values.fill_null(""))

    def decimals(self, name: str, checked: pa.ChunkedArray | None) -> Any:
        """A Decimal per cell, None where blank. Text cells convert as the row path reads them (and
        once per distinct value: arrow's decimal-to-Python conversion is four times slower)."""
        if checked is None:
            return repeat(None, self.table.num_rows)
        values = self.table.column(name)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            return checked.to_pylist()
        text = pc.utf8_trim_whitespace(values)
        distinct = pc.unique(text)
        parsed = [Decimal(value) if value else None for value in distinct.to_pylist()]
        return [parsed[i] for i in pc.index_in(text, distinct).to_pylist()]

    def number(self, name: str, kind: pa.DataType) -> pa.ChunkedArray | None:
        """Blank cells are null; a cell that is not a number raises (and the row path reports it)."""
        if name not in self.table.column_names:
            return None
        values = self.table.column(name)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            values = pc.utf8_trim_whitespace(values)
            values = pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
        if pa.types.is_integer(kind):  # int(float(x)), as the row path does
            return pc.cast(pc.cast(values, pa.float64()), kind, safe=False)
        return pc.cast(values, kind)


def _identities(
    column: _Columns, model: pa.ChunkedArray, specs: dict[str, ModelSpec | None]
) -> dict[str, tuple[str, str]] | None:
    vendor, jurisdiction = column.text("vendor"), column.text("jurisdiction")
    identity = {}
    for name, spec in specs.items():
        first = pc.index(model, name).as_py()
        try:
            identity[name] = identity_of(name, spec, _at(vendor, first), _at(jurisdiction, first))
        except ValueError:
            return None
    return identity


def _at(values: pa.ChunkedArray | None, i: int) -> str:
    return "" if values is None else str(values[i].as_py())


def _can_price(
    cost: pa.ChunkedArray | None,
    model: pa.ChunkedArray,
    specs: dict[str, ModelSpec | None],
    tokens_in: pa.ChunkedArray | None,
    tokens_out: pa.ChunkedArray | None,
) -> bool:
    """Rows without cost_usd need both token counts and a catalog price (else the row path says which)."""
    unpriced = pc.is_null(cost) if cost is not None else None
    if unpriced is not None and not _any(unpriced):
        return True
    if tokens_in is None or tokens_out is None:
        return False
    no_tokens = pc.or_(pc.is_null(tokens_in), pc.is_null(tokens_out))
    if unpriced is not None:
        no_tokens = pc.and_(unpriced, no_tokens)
    models = pc.unique(model if unpriced is None else pc.filter(model, unpriced)).to_pylist()
    return not _any(no_tokens) and all(specs[m] is not None for m in models)


def _verdicts(values: pa.ChunkedArray | None) -> pa.ChunkedArray | None:
    """Booleans, null where blank; a cell that is neither pass nor fail raises."""
    if values is None:
        return None
    lowered = pc.utf8_lower(values)
    passed = pc.is_in(lowered, pa.array(sorted(TRUE_WORDS)))
    failed = pc.is_in(lowered, pa.array(sorted(FALSE_WORDS)))
    if _any(pc.invert(pc.or_(pc.or_(passed, failed), pc.equal(lowered, "")))):
        raise ValueError("a verdict is neither pass nor fail")
    return pc.if_else(passed, True, pc.if_else(failed, False, pa.scalar(None, pa.bool_())))


def _any(mask: pa.ChunkedArray) -> bool:
    return bool(pc.any(mask).as_py())


def _list(values: pa.ChunkedArray | None, default: Any = None, rows: int = 0) -> Any:
    return values.to_pylist() if values is not None else repeat(default, rows)
