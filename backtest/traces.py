"""Recorded outcomes: one row per (task, model), read from CSV, JSONL or Parquet (optionally .gz).

Required columns: task_id, model, correct (0/1 or a score in [0, 1]).
Optional: category, vendor, jurisdiction, verdict (pass/fail), answer, input_tokens,
output_tokens, cost_usd, latency_s. Missing cost comes from tokens × the catalog price; missing
vendor and jurisdiction from the catalog. A row that cannot be used is reported with its line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from polycascade.catalog import Catalog, ModelSpec, jurisdiction_of_vendor
from polycascade.errors import ConfigError

__all__ = ["Outcome", "Trace", "TraceSet", "load_traces"]

REQUIRED = ("task_id", "model", "correct")
_TRUE = {"pass", "passed", "true", "1", "yes"}
_FALSE = {"fail", "failed", "false", "0", "no"}


@dataclass(frozen=True, slots=True)
class Outcome:
    model: str
    correct: float
    cost: Decimal
    answer: str | None = None
    verdict: bool | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None


@dataclass(slots=True)
class Trace:
    task_id: str
    category: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass
class TraceSet:
    source: str
    tasks: dict[str, Trace]
    models: dict[str, ModelSpec]
    issues: list[str]
    rows: int
    has_verdict: bool
    has_answer: bool


def load_traces(path: str | Path, catalog: Catalog | None = None, max_issues: int = 1000) -> TraceSet:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such traces file.")
    catalog = catalog or Catalog.load()
    records, columns = _read(path)
    if missing := [c for c in REQUIRED if c not in columns]:
        raise ConfigError(
            f"{path}: missing required column(s) {', '.join(missing)}; found {', '.join(sorted(columns)) or 'none'}. "
            "A traces file needs task_id, model and correct (see the README's trace format)."
        )
    tasks: dict[str, Trace] = {}
    identity: dict[str, tuple[str, str]] = {}
    issues: list[str] = []
    rows = 0
    lookup = _CachedCatalog(catalog)
    for line, record in records:
        try:
            task_id, category, outcome, vendor = _parse(record, lookup)
        except ValueError as exc:
            if len(issues) < max_issues:
                issues.append(f"{path}:{line}: {exc}")
            continue
        rows += 1
        identity.setdefault(outcome.model, vendor)
        trace = tasks.get(task_id) or tasks.setdefault(task_id, Trace(task_id, category))
        trace.outcomes[outcome.model] = outcome
    if not tasks:
        raise ConfigError(f"{path}: no usable rows. " + (issues[0] if issues else "The file is empty."))
    models = {m: _spec(m, identity[m], tasks, catalog) for m in identity}
    return TraceSet(str(path), tasks, models, issues, rows, "verdict" in columns, "answer" in columns)


def _read(path: Path) -> tuple[Iterator[tuple[int, dict[str, Any]]], set[str]]:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return _read_parquet(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    stream = io.TextIOWrapper(opener(path, "rb"), encoding="utf-8", newline="")  # type: ignore[operator]
    if name.endswith(".jsonl") or name.endswith(".json"):
        return _read_jsonl(path, stream)
    if not name.endswith((".csv", ".tsv")):
        raise ConfigError(f"{path}: unknown format; use .csv, .jsonl or .parquet (optionally .gz).")
    reader = csv.reader(stream, delimiter="\t" if name.endswith(".tsv") else ",")
    header = next(reader, [])
    width = len(header)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, values in enumerate(reader):
            if len(values) != width:
                yield i + 2, {"__error__": f"{len(values)} fields where the header has {width}"}
            else:
                yield i + 2, dict(zip(header, values, strict=True))

    return rows(), set(header)


def _read_jsonl(path: Path, stream: io.TextIOWrapper) -> tuple[Iterator[tuple[int, dict[str, Any]]], set[str]]:
    lines = [(i + 1, text) for i, text in enumerate(stream) if text.strip()]
    columns: set[str] = set()
    parsed = []
    for line, text in lines:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            record = {"__error__": f"not JSON ({exc.msg})"}
        if isinstance(record, dict):
            columns |= set(record)
        parsed.append((line, record if isinstance(record, dict) else {"__error__": "not a JSON object"}))
    return iter(parsed), columns - {"__error__"}


def _read_parquet(path: Path) -> tuple[Iterator[tuple[int, dict[str, Any]]], set[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading Parquet needs pyarrow: pip install 'polycascade[backtest]'") from None
    table = pq.read_table(path)
    return ((i + 1, row) for i, row in enumerate(table.to_pylist())), set(table.column_names)


class _CachedCatalog:
    """Catalog lookups once per model, not once per row."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.cache: dict[str, ModelSpec | None] = {}

    def get(self, model: str) -> ModelSpec | None:
        if model not in self.cache:
            self.cache[model] = self.catalog.get(model)
        return self.cache[model]


def _parse(record: dict[str, Any], catalog: _CachedCatalog) -> tuple[str, str, Outcome, tuple[str, str]]:
    if "__error__" in record:
        raise ValueError(record["__error__"])
    task_id, model = str(record.get("task_id") or "").strip(), str(record.get("model") or "").strip()
    if not task_id or not model:
        raise ValueError("task_id and model must not be empty")
    correct = _number(record, "correct", float)
    if correct is None or not 0 <= correct <= 1:
        raise ValueError(f"correct must be 0/1 or a score in [0, 1], got {record.get('correct')!r}")
    tokens_in, tokens_out = _number(record, "input_tokens", int), _number(record, "output_tokens", int)
    spec = catalog.get(model)
    cost = _cost(record, spec, tokens_in, tokens_out, model)
    vendor = str(record.get("vendor") or (spec.vendor if spec else "")).strip()
    if not vendor:
        raise ValueError(f"no vendor for {model!r}: add a vendor column or the model to --models")
    jurisdiction = str(record.get("jurisdiction") or (spec.jurisdiction if spec else "")).strip()
    jurisdiction = jurisdiction or jurisdiction_of_vendor(vendor) or "??"  # unknown: residency fails closed
    outcome = Outcome(
        model=model,
        correct=correct,
        cost=cost,
        answer=None if record.get("answer") is None else str(record["answer"]),
        verdict=_verdict(record.get("verdict")),
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        latency_s=_number(record, "latency_s", float),
    )
    return task_id, str(record.get("category") or "general"), outcome, (vendor, jurisdiction)


def _number(record: dict[str, Any], column: str, kind: type[int] | type[float]) -> Any:
    value = record.get(column)
    if value is None or value == "":
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{column} must be a number, got {value!r}") from None


def _cost(
    record: dict[str, Any], spec: ModelSpec | None, tokens_in: int | None, tokens_out: int | None, model: str
) -> Decimal:
    raw = record.get("cost_usd")
    if raw not in (None, ""):
        try:
            cost = Decimal(str(raw))
        except InvalidOperation:
            raise ValueError(f"cost_usd must be a number, got {raw!r}") from None
        if cost < 0:
            raise ValueError(f"cost_usd must not be negative, got {raw!r}")
        return cost
    if spec is None or tokens_in is None or tokens_out is None:
        raise ValueError(
            f"no cost_usd, and no tokens with a catalog price for {model!r} (an unknown price is never guessed)"
        )
    return spec.cost(tokens_in, tokens_out)


def _verdict(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"verdict must be pass/fail, got {value!r}")


def _spec(model: str, vendor: tuple[str, str], tasks: dict[str, Trace], catalog: Catalog) -> ModelSpec:
    """The model as the router sees it: the catalog's entry, or prices fitted to the recorded costs."""
    known = catalog.get(model)
    if known is not None:
        return known
    price_in, price_out = _fit_prices([t.outcomes[model] for t in tasks.values() if model in t.outcomes])
    return ModelSpec(
        id=model, provider="replay", litellm_model=model, vendor=vendor[0], jurisdiction=vendor[1], host=vendor[0],
        host_jurisdiction=vendor[1], hosting="api", open_weights=False, input_price=price_in, output_price=price_out,
        context_window=1_000_000, max_output_tokens=1_000_000,
    )  # fmt: skip


def _fit_prices(outcomes: list[Outcome]) -> tuple[Decimal, Decimal]:
    """Per-token prices by least squares on (input, output) tokens; per call when tokens are absent."""
    with_tokens = [o for o in outcomes if o.input_tokens is not None and o.output_tokens is not None]
    if len(with_tokens) < 2:
        mean = sum((o.cost for o in outcomes), Decimal(0)) / max(len(outcomes), 1)
        return mean, Decimal(0)  # the router then sees each call as one "input token" at this price
    sums: dict[str, float] = defaultdict(float)
    for o in with_tokens:
        x, y, c = float(o.input_tokens or 0), float(o.output_tokens or 0), float(o.cost)
        sums["xx"] += x * x
        sums["xy"] += x * y
        sums["yy"] += y * y
        sums["xc"] += x * c
        sums["yc"] += y * c
    det = sums["xx"] * sums["yy"] - sums["xy"] ** 2
    if abs(det) < 1e-9:
        total_in = sum(o.input_tokens or 0 for o in with_tokens) or 1
        return sum((o.cost for o in with_tokens), Decimal(0)) / total_in, Decimal(0)
    a = (sums["xc"] * sums["yy"] - sums["yc"] * sums["xy"]) / det
    b = (sums["yc"] * sums["xx"] - sums["xc"] * sums["xy"]) / det
    return Decimal(f"{max(a, 0):.6e}"), Decimal(f"{max(b, 0):.6e}")
