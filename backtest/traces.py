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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import islice
from pathlib import Path
from typing import Any

from polycascade.catalog import Catalog, ModelSpec, jurisdiction_of_vendor
from polycascade.errors import ConfigError

from ._heap import collector_paused

__all__ = ["Outcome", "Trace", "TraceSet", "load_traces"]

REQUIRED = ("task_id", "model", "correct")
TRUE_WORDS = frozenset({"pass", "passed", "true", "1", "yes"})
FALSE_WORDS = frozenset({"fail", "failed", "false", "0", "no"})


@dataclass(slots=True)  # not frozen: a million of them are built per load, and frozen init costs twice as much
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


Row = tuple[int, "Sequence[Any] | str"]  # (line, the row's values in header order, or why it cannot be read)


def load_traces(path: str | Path, catalog: Catalog | None = None, max_issues: int = 1000) -> TraceSet:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such traces file.")
    catalog = catalog or Catalog.load()
    source = _read(path)
    header = source.header
    if missing := [c for c in REQUIRED if c not in header]:
        raise ConfigError(
            f"{path}: missing required column(s) {', '.join(missing)}; found {', '.join(sorted(header)) or 'none'}. "
            "A traces file needs task_id, model and correct (see the README's trace format)."
        )
    issues: list[str] = []
    with collector_paused():  # a million acyclic objects: the cycle collector would rescan them for nothing
        if (converted := _fast(source, catalog)) is not None:
            (tasks, identity), count = converted, source.table.num_rows
        else:
            rows, identity = _row_by_row(source, catalog, issues, max_issues)
            tasks, count = _grouped(rows)
    if not tasks:
        raise ConfigError(f"{path}: no usable rows. " + (issues[0] if issues else "The file is empty."))
    models = {m: _spec(m, vendor, tasks, catalog) for m, vendor in identity.items()}
    return TraceSet(str(path), tasks, models, issues, count, "verdict" in header, "answer" in header)


def _grouped(rows: Iterator[tuple[str, str, Outcome]]) -> tuple[dict[str, Trace], int]:
    tasks: dict[str, Trace] = {}
    count = 0
    for task_id, category, outcome in rows:
        count += 1
        trace = tasks.get(task_id) or tasks.setdefault(task_id, Trace(task_id, category))
        trace.outcomes[outcome.model] = outcome
    return tasks, count


def _fast(source: _Source, catalog: Catalog) -> Any:
    if source.table is None:
        return None
    from ._columnar import convert

    return convert(source.table, catalog)


def _row_by_row(source: _Source, catalog: Catalog, issues: list[str], max_issues: int) -> Any:
    parser = _RowParser(source.header, catalog)

    def rows() -> Iterator[tuple[str, str, Outcome]]:
        for line, values in source.rows():
            try:
                if isinstance(values, str):
                    raise ValueError(values)
                yield parser.parse(values)
            except ValueError as exc:
                if len(issues) < max_issues:
                    issues.append(f"{source.path}:{line}: {exc}")

    return rows(), parser.identity


@dataclass(frozen=True)
class _Source:
    path: Path
    header: list[str]
    rows: Callable[[], Iterator[Row]]
    table: Any = None  # a pyarrow Table, when the whole file could be read as columns


def _read(path: Path) -> _Source:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return _read_parquet(path)
    if name.endswith((".jsonl", ".json")):
        return _read_jsonl(path)
    if not name.endswith((".csv", ".tsv")):
        raise ConfigError(f"{path}: unknown format; use .csv, .jsonl or .parquet (optionally .gz).")
    delimiter = "\t" if name.endswith(".tsv") else ","
    return _read_csv_arrow(path, delimiter) or _read_csv(path, delimiter)


def _open_text(path: Path) -> io.TextIOWrapper:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    return io.TextIOWrapper(opener(path, "rb"), encoding="utf-8", newline="")  # type: ignore[operator]


def _read_csv(path: Path, delimiter: str) -> _Source:
    """The csv module: slower, but says which line of a malformed file is wrong."""
    reader = csv.reader(_open_text(path), delimiter=delimiter)
    header = next(reader, [])
    width = len(header)

    def rows() -> Iterator[Row]:
        for i, values in enumerate(reader):
            yield i + 2, values if len(values) == width else f"{len(values)} fields where the header has {width}"

    return _Source(path, header, rows)


def _read_csv_arrow(path: Path, delimiter: str) -> _Source | None:
    """pyarrow's parallel CSV reader, every column as text, when installed and the file is regular."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pv
    except ImportError:
        return None
    with _open_text(path) as f:
        header = next(csv.reader(f, delimiter=delimiter), [])
    if not header or len(set(header)) != len(header):
        return None
    text = dict.fromkeys(header, pa.string())
    try:
        table = pv.read_csv(
            path,
            parse_options=pv.ParseOptions(delimiter=delimiter),
            convert_options=pv.ConvertOptions(column_types=text, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None  # ragged or odd rows: the csv module reports them by line
    return _Source(path, header, lambda: _table_rows(table, first_line=2), table)


def _read_jsonl(path: Path) -> _Source:
    parsed: list[tuple[int, dict[str, Any] | str]] = []
    header: dict[str, None] = {}
    for i, text in enumerate(_open_text(path)):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            parsed.append((i + 1, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict):
            parsed.append((i + 1, "not a JSON object"))
            continue
        header.update(dict.fromkeys(record))
        parsed.append((i + 1, record))
    columns = list(header)
    return _Source(
        path, columns, lambda: ((line, r if isinstance(r, str) else [r.get(c) for c in columns]) for line, r in parsed)
    )


def _read_parquet(path: Path) -> _Source:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading Parquet needs pyarrow: pip install 'polycascade[backtest]'") from None
    table = pq.read_table(path)
    return _Source(path, list(table.column_names), lambda: _table_rows(table, first_line=1), table)


def _table_rows(table: Any, first_line: int) -> Iterator[Row]:
    columns = [table.column(c).to_pylist() for c in table.column_names]
    return enumerate(zip(*columns, strict=True), start=first_line)


class _RowParser:
    """Turns one row's values into an Outcome; column positions and catalog lookups resolved once.

    Written for speed (a million rows per load): positions are locals, absent columns read as None.
    """

    def __init__(self, header: list[str], catalog: Catalog) -> None:
        self.positions = tuple(header.index(name) if name in header else None for name in _COLUMNS)
        self.catalog = catalog
        self.specs: dict[str, ModelSpec | None] = {}
        self.identity: dict[str, tuple[str, str]] = {}  # model → (vendor, jurisdiction) as first seen

    def parse(self, values: Sequence[Any]) -> tuple[str, str, Outcome]:
        (task_id, model, correct, category, vendor, jurisdiction, verdict, answer, tokens_in, tokens_out, cost,
         latency) = (None if i is None else values[i] for i in self.positions)  # fmt: skip
        task_id, model = _text(task_id), _text(model)
        if not task_id or not model:
            raise ValueError("task_id and model must not be empty")
        score = _number(correct, "correct", float)
        if score is None or not 0 <= score <= 1:
            raise ValueError(f"correct must be 0/1 or a score in [0, 1], got {correct!r}")
        tokens_in, tokens_out = _number(tokens_in, "input_tokens", int), _number(tokens_out, "output_tokens", int)
        spec = self.specs[model] if model in self.specs else self._spec(model)
        if model not in self.identity:
            self.identity[model] = identity_of(model, spec, _text(vendor), _text(jurisdiction))
        outcome = Outcome(
            model, score, _cost(cost, spec, tokens_in, tokens_out, model), None if answer is None else str(answer),
            _verdict(verdict), tokens_in, tokens_out, _number(latency, "latency_s", float),
        )  # fmt: skip
        return task_id, _text(category) or "general", outcome

    def _spec(self, model: str) -> ModelSpec | None:
        self.specs[model] = self.catalog.get(model)
        return self.specs[model]


def identity_of(model: str, spec: ModelSpec | None, vendor: str, jurisdiction: str) -> tuple[str, str]:
    vendor = vendor or (spec.vendor if spec else "")
    if not vendor:
        raise ValueError(f"no vendor for {model!r}: add a vendor column or the model to --models")
    jurisdiction = jurisdiction or (spec.jurisdiction if spec else "")
    return vendor, jurisdiction or jurisdiction_of_vendor(vendor) or "??"  # unknown: residency fails closed


_COLUMNS = (*REQUIRED, "category", "vendor", "jurisdiction", "verdict", "answer", "input_tokens", "output_tokens",
            "cost_usd", "latency_s")  # fmt: skip


def _text(value: Any) -> str:
    return value.strip() if value.__class__ is str else "" if value is None else str(value).strip()


def _number(value: Any, column: str, kind: type[int] | type[float]) -> Any:
    if not value and value != 0:  # None or ""
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{column} must be a number, got {value!r}") from None


def _cost(raw: Any, spec: ModelSpec | None, tokens_in: int | None, tokens_out: int | None, model: str) -> Decimal:
    if raw is not None and raw != "":
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
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"verdict must be pass/fail, got {value!r}")


def _spec(model: str, vendor: tuple[str, str], tasks: dict[str, Trace], catalog: Catalog) -> ModelSpec:
    """The model as the router sees it: the catalog's entry, or prices fitted to the recorded costs."""
    known = catalog.get(model)
    if known is not None:
        return known
    sample = islice((t.outcomes[model] for t in tasks.values() if model in t.outcomes), _FIT_SAMPLE)
    price_in, price_out = _fit_prices(list(sample))
    return ModelSpec(
        id=model, provider="replay", litellm_model=model, vendor=vendor[0], jurisdiction=vendor[1], host=vendor[0],
        host_jurisdiction=vendor[1], hosting="api", open_weights=False, input_price=price_in, output_price=price_out,
        context_window=1_000_000, max_output_tokens=1_000_000,
    )  # fmt: skip


_FIT_SAMPLE = 20_000  # outcomes per model: plenty for two prices, and a million-row load stays fast


def _fit_prices(outcomes: list[Outcome]) -> tuple[Decimal, Decimal]:
    """Per-token prices by least squares on (input, output) tokens; per call when tokens are absent."""
    with_tokens = [o for o in outcomes if o.input_tokens is not None and o.output_tokens is not None]
    if len(with_tokens) < 2:
        mean = sum((o.cost for o in outcomes), Decimal(0)) / max(len(outcomes), 1)
        return mean, Decimal(0)  # the router then sees each call as one "input token" at this price
    xx = xy = yy = xc = yc = 0.0  # the normal equations' sums (locals: twenty thousand rows per model)
    for o in with_tokens:
        x, y, c = float(o.input_tokens or 0), float(o.output_tokens or 0), float(o.cost)
        xx += x * x
        xy += x * y
        yy += y * y
        xc += x * c
        yc += y * c
    det = xx * yy - xy**2
    if abs(det) < 1e-9:
        total_in = sum(o.input_tokens or 0 for o in with_tokens) or 1
        return sum((o.cost for o in with_tokens), Decimal(0)) / total_in, Decimal(0)
    a = (xc * yy - yc * xy) / det
    b = (yc * xx - xc * xy) / det
    return Decimal(f"{max(a, 0):.6e}"), Decimal(f"{max(b, 0):.6e}")
