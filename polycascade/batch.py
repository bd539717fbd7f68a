"""`polycascade run`: documents through a workflow, unattended, resumable.

- Results stream to JSONL, one line per document, written and fsynced as each finishes: a line
  means done, so running the same command again skips it.
- Each document runs in a LangGraph thread checkpointed to SQLite: after a crash (even kill -9)
  the rerun resumes every unfinished document from its checkpoint; chunks already answered are
  not paid for again.
- A broken document becomes an error line; the batch goes on. Budget exhaustion stops new work
  cleanly, lets calls in flight finish, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .completer import AnswerJournal
from .errors import BudgetExceeded, ConfigError
from .service import Service

__all__ = ["RunOptions", "RunSummary", "run_batch"]


@dataclass(frozen=True)
class RunOptions:
    workflow: str
    input: Path
    out: Path
    concurrency: int = 8
    schema: Any = None
    data_class: str | None = None
    checkpoints: Path | None = None
    chunk_tokens: int = 800
    progress: bool = True


@dataclass
class RunSummary:
    run_id: str
    out: Path
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    stopped: str | None = None
    spent: Decimal = Decimal(0)
    vendors: dict[str, Decimal] = field(default_factory=dict)
    status_line: tuple[float, str] | None = None  # the progress bar's last status and when it was computed
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # an id given to several records → their keys
    nodes: dict[str, int] = field(default_factory=dict)  # Ray node id → documents it answered (`--backend ray`)
    _first_key: dict[str, str] = field(default_factory=dict, repr=False)

    def note_id(self, doc_id: str, key: str) -> None:
        """Remember where each id was first seen; an id seen again is a duplicate (each record still runs)."""
        first = self._first_key.setdefault(doc_id, key)
        if first != key:
            self.duplicates.setdefault(doc_id, [first]).append(key)


def run_id_for(out: Path) -> str:
    """The same output file means the same run: its checkpoints and its budget carry over."""
    return f"run:{out.stem}:{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]}"


def finished_keys(out: Path) -> set[str]:
    """The documents the results file already holds (by key; a line written before keys existed, by id).

    A torn last line (a crash mid-write) is cut off first, so the rerun appends on a line of its own
    and redoes that document."""
    if not out.exists():
        return set()
    repair_tail(out)
    done = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
            record = json.loads(line)
            done.add(record.get("key") or record["id"])
    return done


def repair_tail(out: Path) -> bool:
    """Cut a results file back to its last complete line; True if there was a fragment to cut."""
    with out.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        chunk = min(size, 1 << 20)
        while True:  # look back for the last newline, a chunk at a time
            f.seek(size - chunk)
            cut = f.read(chunk).rfind(b"\n")
            if cut >= 0 or chunk == size:
                break
            chunk = min(size, chunk * 2)
        f.truncate(size - chunk + cut + 1 if cut >= 0 else 0)
        f.flush()
        os.fsync(f.fileno())
    return True


async def run_batch(options: RunOptions, service: Service) -> RunSummary:
    from polycascade.tools.documents import discover

    from ._checkpoints import open_answers, open_checkpoints

    if options.workflow == "extract" and options.schema is None:
        raise ConfigError("the extract workflow needs a `schema` (a pydantic model class)", parameter="schema")
    files = discover(options.input)
    summary = RunSummary(run_id_for(options.out), options.out)
    done = finished_keys(options.out)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoints = options.checkpoints or options.out.with_suffix(".checkpoints.db")
    with open_checkpoints(checkpoints) as saver, open_answers(checkpoints) as answers:
        runner = _workflow(options, service, summary.run_id, saver, answers)
        with _progress(options.progress) as progress, options.out.open("a", encoding="utf-8") as sink:
            bar = progress.add_task("documents", total=None)
            writer = _Writer(sink)
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * options.concurrency)  # backpressure: flat memory
            stop = asyncio.Event()

            async def produce() -> None:
                async for doc in _documents(files, options.input, done, summary):
                    if stop.is_set():
                        break
                    await queue.put(doc)
                for _ in range(options.concurrency):
                    await queue.put(None)

            async def worker() -> None:
                while (doc := await queue.get()) is not None:
                    if stop.is_set():
                        continue  # drain: the producer must not block on a full queue
                    line = await _one(doc, runner, summary, stop)
                    if line is not None:
                        await writer.write(line)
                    progress.update(bar, completed=summary.done + summary.failed, total=summary.total - summary.skipped,
                                    description=await _status(service, summary))  # fmt: skip

            await asyncio.gather(produce(), *(worker() for _ in range(options.concurrency)))
    await tally_spend(summary, service.ledger)
    return summary


async def tally_spend(summary: RunSummary, ledger: Any) -> None:
    """What the run spent, by vendor, from the ledger: resumed and parallel work included."""
    summary.vendors = {v: r.cost for v, r in (await ledger.spend_by("vendor", run_id=summary.run_id)).items()}
    summary.spent = sum(summary.vendors.values(), Decimal(0))


Runner = Callable[[Any], Awaitable[dict[str, Any]]]  # a document → its output


def _workflow(options: RunOptions, service: Service, run_id: str, saver: Any, answers: AnswerJournal) -> Runner:
    """How each document runs: a built-in workflow name, or a user's `module:function` returning a graph.

    Built-in document workflows step their graph's nodes directly (`run_document`): a resumed
    document is answered from `answers`, which holds every answer paid for. Other graphs run under
    LangGraph with their checkpoints in `saver`, resumed from the last one."""
    data_class = options.data_class  # None: the policy's default, applied by the cascade
    if options.workflow in ("summarise", "extract"):
        from polycascade.graphs.documents import DocContext, Workflow, run_document

        cascade = service.cascade(journal=answers)
        workflow = cast(Workflow, options.workflow)
        context = DocContext(cascade, workflow, options.schema, data_class, run_id, options.chunk_tokens)
        return lambda doc: run_document(doc.id, doc.text, context)
    if options.workflow == "delegate":
        from polycascade.graphs.delegation import DelegationContext, build_delegation_graph

        delegation = DelegationContext(service.cascade(journal=answers), data_class, run_id)
        return _checkpointed(build_delegation_graph(saver), delegation, run_id)
    if ":" in options.workflow:
        from ._ask import load_object

        factory = load_object(options.workflow, "WORKFLOW", "function", "myapp.flows:build")
        graph, context = factory(service, saver, run_id=run_id, data_class=data_class)
        return _checkpointed(graph, context, run_id)
    raise ConfigError(f"unknown workflow {options.workflow!r}: summarise, extract, delegate, or module:function")


def _checkpointed(graph: Any, context: Any, run_id: str) -> Runner:
    """A document through a LangGraph graph in its own checkpointed thread, resumed where it stopped."""

    async def run(doc: Any) -> dict[str, Any]:
        config = {"configurable": {"thread_id": f"{run_id}:{doc.key}"}}
        saved = await graph.aget_state(config)
        if saved.values.get("output") is not None:
            return dict(saved.values["output"])  # finished before a crash, but its line was never written
        start = None if saved.next else {"doc_id": doc.id, "text": doc.text}  # None: resume from the checkpoint
        state = await graph.ainvoke(start, config, context=context, durability="sync")
        return dict(state["output"])

    return run


async def _one(doc: Any, runner: Runner, summary: RunSummary, stop: asyncio.Event) -> dict[str, Any] | None:
    from polycascade.tools.documents import BrokenDocument

    if isinstance(doc, BrokenDocument):
        summary.failed += 1
        return {"id": doc.id, "key": doc.key, "source": doc.source, "status": "error", "error": doc.error}
    try:
        output = await runner(doc)
    except BudgetExceeded as exc:
        summary.stopped = str(exc)
        stop.set()
        return None
    summary.done += output["status"] != "failed"
    summary.failed += output["status"] == "failed"
    return {"id": doc.id, "key": doc.key, "source": doc.source, **output}


async def _documents(files: list[Path], root: Path, done: set[str], summary: RunSummary) -> AsyncIterator[Any]:
    """Documents one file at a time, so memory stays flat however many there are."""
    from polycascade.tools.documents import load

    for path in files:
        for doc in await asyncio.to_thread(load, path, root):
            summary.total += 1
            summary.note_id(doc.id, doc.key)
            if doc.key in done:
                summary.skipped += 1
                continue
            yield doc


class _Writer:
    """Result lines, each on disk before its document counts as done; one fsync for all the lines
    written while the loop was busy (group commit), not one per line."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self._sync: asyncio.Task[None] | None = None

    async def write(self, line: dict[str, Any]) -> None:
        self.sink.write(json.dumps(line, ensure_ascii=False) + "\n")
        if self._sync is None:
            self._sync = asyncio.get_running_loop().create_task(self._flush())
        await asyncio.shield(self._sync)  # returns once this line is on disk

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # documents finishing in this turn of the loop add their lines first
        self._sync = None  # lines written from now on wait for the next fsync
        self.sink.flush()
        await asyncio.to_thread(os.fsync, self.sink.fileno())  # the disk waits; the loop goes on with other work


async def _status(service: Service, summary: RunSummary) -> str:
    """Spend and vendor shares for the progress bar, refreshed at most once a second."""
    cached = summary.status_line
    if cached and time.monotonic() - cached[0] < 1:
        return cached[1]
    rows = await service.ledger.spend_by("vendor", run_id=summary.run_id)
    spent = sum((r.cost for r in rows.values()), Decimal(0))
    shares = " ".join(f"{v} {float(r.cost / spent):.0%}" for v, r in sorted(rows.items()) if spent) or "—"
    text = f"failed {summary.failed} · ${spent:.4f} · {shares}"
    summary.status_line = (time.monotonic(), text)
    return text


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=False) as progress:
        yield progress
