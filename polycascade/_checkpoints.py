"""LangGraph checkpoints in SQLite, written inline on the event loop.

`AsyncSqliteSaver` sends every statement to aiosqlite's thread and back. A batch writes about
four checkpoints a document, each a single indexed insert taking a fraction of a millisecond, so
the round trip (a queue, a future, a wake-up of the loop, two hand-overs of the GIL) costs more
than the insert: run in place, 1,000 one-chunk documents took 22% less time (measured beside
each other, `polycascade run` against the scripted server). The SQL is LangGraph's own
`SqliteSaver`'s; its async methods, which LangGraph's async runner calls, run the same code.
As with the SQLite ledger, a statement blocks the loop only for its own duration.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.sqlite import SqliteSaver

from .types import Completion, ToolCall, Usage

__all__ = ["InlineSqliteSaver", "SqliteAnswers", "open_answers", "open_checkpoints"]


class InlineSqliteSaver(SqliteSaver):
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def aget_delta_channel_history(self, *, config: RunnableConfig, channels: Sequence[str]) -> Mapping[str, Any]:
        return self.get_delta_channel_history(config=config, channels=channels)


@contextlib.contextmanager
def _connected(path: str | Path, **options: Any) -> Iterator[sqlite3.Connection]:
    """The checkpoint file at `path`, in WAL mode without an fsync per commit: what it holds survives
    a killed process (what resume is for), not a power cut; the fsynced results file stays the
    record of what is done."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30, **options)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def open_checkpoints(path: str | Path) -> Iterator[InlineSqliteSaver]:
    """LangGraph's checkpointer on the file at `path`."""
    with _connected(path) as conn:
        yield InlineSqliteSaver(conn)


class SqliteAnswers:
    """The answer journal `completer.Recall` reuses, in the checkpoint file beside LangGraph's tables."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._db, self._lock = conn, threading.Lock()
        conn.execute("CREATE TABLE IF NOT EXISTS polycascade_answers (key TEXT PRIMARY KEY, completion TEXT NOT NULL)")

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT completion FROM polycascade_answers WHERE key = ?", (key,)).fetchone()
        return _completion(json.loads(row[0])) if row else None

    def put(self, key: str, completion: Completion) -> None:
        kept = json.dumps(_kept(completion), ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO polycascade_answers VALUES (?, ?)", (key, kept))


def _kept(c: Completion) -> dict[str, Any]:
    return {
        "call_id": c.call_id, "model": c.model, "vendor": c.vendor, "text": c.text,
        "tool_calls": [[t.id, t.name, t.arguments] for t in c.tool_calls],
        "usage": [c.usage.input_tokens, c.usage.output_tokens], "cost": str(c.cost), "latency_s": c.latency_s,
        "attempts": c.attempts, "finish_reason": c.finish_reason,
    }  # fmt: skip


def _completion(kept: dict[str, Any]) -> Completion:
    return Completion(
        call_id=kept["call_id"], model=kept["model"], vendor=kept["vendor"], text=kept["text"],
        tool_calls=tuple(ToolCall(*t) for t in kept["tool_calls"]), usage=Usage(*kept["usage"]),
        cost=Decimal(kept["cost"]), latency_s=kept["latency_s"], attempts=kept["attempts"],
        finish_reason=kept["finish_reason"],
    )  # fmt: skip


@contextlib.contextmanager
def open_answers(path: str | Path) -> Iterator[SqliteAnswers]:
    """The answer journal in the checkpoint file at `path`, on a connection of its own (autocommit)."""
    with _connected(path, isolation_level=None) as conn:
        yield SqliteAnswers(conn)
