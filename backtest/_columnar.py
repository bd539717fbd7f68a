"""The fast path for well-formed files: convert and check whole columns with pyarrow.

A million rows parsed one by one in Python take seconds; here each column is converted once in
C++ and only the `Outcome` objects are built in Python. Anything that does not convert cleanly
returns None, and the file goes down the row-by-row path, which names the line and field at
fault: this path only has to be right for good files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from polycascade.catalog import Catalog, ModelSpec

from .traces import FALSE_WORDS, TRUE_WORDS, Outcome, Trace, identity_of

__all__ = ["convert"]

Converted = tuple[dict[str, Trace], dict[str, tuple[str, str]]]
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError)


def convert(table: pa.Table, catalog: Catalog) -> Converted | None:
    """The outcomes by task and (vendor, jurisdiction) per model; None if any row is bad."""
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
    models, t_in, t_out = _objects(model), _objects(tokens_in), _objects(tokens_out)
    costs = column.decimals("cost_usd", cost)
    if cost is None or cost.null_count:
        costs = _priced(costs, models, specs, t_in, t_out)
    latency = _objects(column.number("latency_s", pa.float64()))
    outcomes = map(Outcome, models, _objects(correct), costs, _objects(answer), _objects(verdict), t_in, t_out, latency)
    return _by_task(task_id, category, models, outcomes), identity


def _priced(costs: Any, models: list[str], specs: dict[str, ModelSpec | None], t_in: Any, t_out: Any) -> list[Decimal]:
    """Blank costs from tokens × the catalog price (`_can_price` made sure there is one)."""
    rows = zip(costs, models, t_in, t_out, strict=False)
    return [c if c is not None else specs[m].cost(i, o) for c, m, i, o in rows]  # type: ignore[union-attr]


def _by_task(
    task_id: pa.ChunkedArray, category: pa.ChunkedArray | None, models: list[str], outcomes: Iterator[Outcome]
) -> dict[str, Trace]:
    """Outcomes by task, tasks in order of first appearance; a task's category is its first row's;
    of two rows for one (task, model), the later stands (as on the row path). Rows are put in task
    order once, so each task's outcomes become a dict in one call rather than a million assignments."""
    encoded = task_id.combine_chunks().dictionary_encode()  # codes in order of first appearance
    ids, codes = encoded.dictionary.to_pylist(), encoded.indices.to_numpy()
    order = np.argsort(codes, kind="stable")  # each task's rows together, in file order
    counts = np.bincount(codes, minlength=len(ids))
    ends = np.cumsum(counts)
    starts = ends - counts
    categories = category.take(order[starts]).to_pylist() if category is not None else repeat("general")
    rows, outcomes_by_row = order.tolist(), list(outcomes)
    task_models = list(map(models.__getitem__, rows))
    task_outcomes = list(map(outcomes_by_row.__getitem__, rows))
    return {
        i: Trace(i, c, dict(zip(task_models[a:b], task_outcomes[a:b], strict=True)))
        for i, c, a, b in zip(ids, categories, starts.tolist(), ends.tolist(), strict=False)
    }


class _Columns:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def text(self, name: str) -> pa.ChunkedArray | None:
        if name not in self.table.column_names:
            return None
        values = self.table.column(name).cast(pa.string())
        return pc.utf8_trim_whitespace(values.fill_null(""))

    def decimals(self, name: str, checked: pa.ChunkedArray | None) -> Any:
        """A Decimal per cell, None where blank. Text cells convert as the row path reads them."""
        if checked is None:
            return repeat(None, self.table.num_rows)
        values = self.table.column(name)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            return _objects(checked)
        return _objects(pc.utf8_trim_whitespace(values), lambda text: Decimal(text) if text else None)

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


def _objects(values: pa.ChunkedArray | None, convert: Callable[[Any], Any] | None = None) -> Any:
    """The column's values as Python objects, one per distinct value (`convert`ed once each): a
    model's name, a token count or a price is not built a million times (less memory, and three
    times faster than converting every cell). None for every row if there is no column (endless:
    zip and map stop at the shortest)."""
    if values is None:
        return repeat(None)
    encoded = pc.dictionary_encode(values.combine_chunks(), null_encoding="encode")
    distinct = encoded.dictionary.to_pylist()
    objects = np.array(
        distinct if convert is None else [None if v is None else convert(v) for v in distinct], dtype=object
    )
    return objects[encoded.indices.to_numpy(zero_copy_only=False)].tolist()
