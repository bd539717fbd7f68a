"""Load documents: txt, md, html, pdf, and collections in jsonl or csv (one document per record).

A document that cannot be read becomes a `BrokenDocument` with the reason, so a batch goes on; in a
collection, so does each broken record (naming the file's line), while the others load. `id` is what
the user calls a document (a record's own `id`, which may repeat); `key` is where it came from (the
file, or file:line for a record) and is unique: checkpoints and resumes go by the key.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

from polycascade.errors import ConfigError

__all__ = ["SUFFIXES", "BrokenDocument", "Document", "discover", "load"]

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".jsonl", ".csv")
MAX_BYTES = 20 * 1024 * 1024
_TEXT_FIELDS = ("text", "content", "body", "document")


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    source: str
    text: str
    key: str  # unique in the input: the file's name, or name:line for a record


@dataclass(frozen=True, slots=True)
class BrokenDocument:
    id: str
    source: str
    error: str
    key: str


def discover(input_path: Path) -> list[Path]:
    """The supported files under `input_path` (or the file itself), in a stable order."""
    if not input_path.exists():
        raise ConfigError(f"`input_path` {input_path}: no such file or folder.", parameter="input_path")
    if input_path.is_file():
        return [input_path]
    files = sorted(p for p in input_path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise ConfigError(
            f"`input_path` {input_path}: no documents ({', '.join(SUFFIXES)}) in this folder.", parameter="input_path"
        )
    return files


def load(path: Path, root: Path | None = None) -> list[Document | BrokenDocument]:
    """Documents in `path`; a problem yields a BrokenDocument naming it, never an exception."""
    name = str(path.relative_to(root)) if root and root.is_dir() and path.is_relative_to(root) else path.name
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            too_large = f"too large: {size / 1e6:.1f} MB > {MAX_BYTES / 1e6:.0f} MB"
            return [BrokenDocument(name, str(path), too_large, name)]
        raw = path.read_bytes()
        suffix = path.suffix.lower()
        if suffix == ".pdf":
            return [_checked(Document(name, str(path), _pdf_text(raw), name))]
        text = _decode(raw)
        if suffix == ".jsonl":
            return _records(name, path, _json_lines(text))
        if suffix == ".csv":
            rows = csv.DictReader(io.StringIO(text))
            return _records(name, path, ((rows.line_num, row) for row in rows))
        if suffix in (".html", ".htm"):
            text = _html_text(text)
        return [_checked(Document(name, str(path), text, name))]
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        return [BrokenDocument(name, str(path), f"{type(exc).__name__}: {exc}"[:300], name)]


def _decode(raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise ValueError("binary content (NUL bytes): not a text document")
    for encoding in ("utf-8-sig", "cp932", "euc-jp"):  # Japanese files often come in Shift_JIS
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValueError("not UTF-8, Shift_JIS or EUC-JP text")


def _checked(doc: Document) -> Document | BrokenDocument:
    if not doc.text.strip():
        return BrokenDocument(doc.id, doc.source, "no text", doc.key)
    return doc


class _BadLine(ValueError):
    pass


def _json_lines(text: str) -> Iterator[tuple[int, Any]]:
    """(line number, record) for each non-blank line; a line that is not JSON yields the error instead."""
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, _BadLine(f"invalid JSON at column {exc.colno}: {exc.msg}")


def _records(name: str, path: Path, records: Iterable[tuple[int, Any]]) -> list[Document | BrokenDocument]:
    out: list[Document | BrokenDocument] = []
    for line, record in records:
        key = f"{name}:{line}"
        doc_id = f"{name}#{record.get('id', line)}" if isinstance(record, dict) else f"{name}#{line}"
        text = next((str(record[k]) for k in _TEXT_FIELDS if isinstance(record, dict) and record.get(k)), None)
        if isinstance(record, _BadLine):
            out.append(BrokenDocument(doc_id, str(path), f"{key}: {record}", key))
        elif text is None:
            out.append(BrokenDocument(doc_id, str(path), f"{key}: no {'/'.join(_TEXT_FIELDS)} field", key))
        else:
            out.append(_checked(Document(doc_id, str(path), text, key)))
    return out


def _pdf_text(raw: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except PdfReadError as exc:
        raise ValueError(f"unreadable PDF: {exc}") from None


class _TextOnly(HTMLParser):
    _SKIP: ClassVar[frozenset[str]] = frozenset({"script", "style", "noscript", "template"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.skipping += tag in self._SKIP
        if tag in {"p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr"}:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self.skipping -= tag in self._SKIP and self.skipping > 0

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _TextOnly()
    parser.feed(html)
    return "\n".join(line.strip() for line in "".join(parser.parts).splitlines() if line.strip())
