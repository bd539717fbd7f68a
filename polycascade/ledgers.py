"""`open_ledger`: the ledger a URL names, memory, SQLite or PostgreSQL (apart from `ledger`, which
every backend imports)."""

from __future__ import annotations

from pathlib import Path

from ._ledger_postgres import PostgresLedger
from ._ledger_sqlite import SQLiteLedger
from .errors import ConfigError
from .ledger import Ledger, MemoryLedger

__all__ = ["open_ledger"]


def open_ledger(url: str | Path | None = None) -> Ledger:
    """`memory://`, `sqlite:///path.db`, a plain path (SQLite), or `postgresql://…`. Default: `polycascade.db`."""
    text = str(url) if url is not None else "polycascade.db"
    if text == "memory://":
        return MemoryLedger()
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresLedger.from_url(text)
    if "://" in text and not text.startswith("sqlite:///"):
        raise ConfigError(f"unknown ledger URL scheme in {text.split('://')[0]!r}; use memory:// or sqlite:///FILE")
    return SQLiteLedger(text.removeprefix("sqlite:///"))
