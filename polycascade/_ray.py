"""`polycascade run --backend ray`: documents spread over Ray workers.

Each worker is an actor holding its own assembled service; all of them use one PostgreSQL ledger,
whose reservations table makes share caps and budgets hold across every worker. The driver keeps
`concurrency` documents in flight and is the only writer of the results file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from ._otel_setup import configure_from_environment
from .batch import Runner, RunOptions, RunSummary, _one, _workflow, finished_keys, run_id_for
from .errors import ConfigError
from .service import open_service

__all__ = ["run_on_ray"]


class DocWorker:
    """A Ray actor: one service, one graph, many documents (async: several at once)."""

    def __init__(self, service_kwargs: dict[str, Any], options: RunOptions, run_id: str, checkpoints: str) -> None:
        configure_from_environment()  # each worker exports its own spans, as the driver does
        # the service (a local model, if any) and the checkpoints live as long as the actor
        self._stack = contextlib.ExitStack()
        self.service = self._stack.enter_context(open_service(**service_kwargs))
        self.options, self.run_id, self.checkpoints = options, run_id, checkpoints
        self._runner: Runner | None = None
        self.node = _node_id()
        self._lock = asyncio.Lock()

    async def _ready(self) -> Runner:
        async with self._lock:
            if self._runner is None:
                from ._checkpoints import open_answers, open_checkpoints

                saver = self._stack.enter_context(open_checkpoints(self.checkpoints))
                answers = self._stack.enter_context(open_answers(self.checkpoints))
                self._runner = _workflow(self.options, self.service, self.run_id, saver, answers)
            return self._runner

    async def process(self, doc: Any) -> dict[str, Any]:
        runner = await self._ready()
        summary = RunSummary(self.run_id, self.options.out)
        line = await _one(doc, runner, summary, asyncio.Event())
        return {"line": line, "stopped": summary.stopped, "node": self.node}


def run_on_ray(options: RunOptions, service_kwargs: dict[str, Any], workers: int) -> RunSummary:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'polycascade[ray]'") from None
    ledger = str(service_kwargs.get("ledger", ""))
    if not ledger.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--backend ray needs --ledger postgresql://… so that caps and budgets hold across workers")
    from polycascade.tools.documents import discover, load

    started_here = not ray.is_initialized() and "RAY_ADDRESS" not in os.environ
    if started_here:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    summary = RunSummary(run_id_for(options.out), options.out)
    checkpoints = str(options.checkpoints or options.out.with_suffix(".checkpoints.db"))
    per_worker = max(1, options.concurrency // workers)
    actor: Any = ray.remote(DocWorker).options(max_concurrency=per_worker, num_cpus=1)
    pool: list[Any] = [actor.remote(service_kwargs, options, summary.run_id, checkpoints) for _ in range(workers)]
    done = finished_keys(options.out)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    pending: dict[Any, Any] = {}
    try:
        with options.out.open("a", encoding="utf-8") as sink:

            def collect(block_until: int) -> None:
                while len(pending) > block_until:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    pending.pop(ready[0])
                    result = ray.get(ready[0])
                    if result["stopped"]:
                        summary.stopped = result["stopped"]
                    if result["line"] is not None:
                        _count(summary, result["line"])
                        summary.nodes[result["node"]] = summary.nodes.get(result["node"], 0) + 1
                        sink.write(_json(result["line"]) + "\n")
                        sink.flush()
                        os.fsync(sink.fileno())

            for path in discover(options.input):
                for doc in load(path, options.input):
                    summary.total += 1
                    summary.note_id(doc.id, doc.key)
                    if doc.key in done:
                        summary.skipped += 1
                        continue
                    if summary.stopped:
                        break
                    collect(options.concurrency - 1)
                    pending[pool[summary.total % workers].process.remote(doc)] = doc  # in turn
            collect(0)
    finally:
        for worker in pool:
            ray.kill(worker)
        if started_here:
            ray.shutdown()
    return summary


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _count(summary: RunSummary, line: dict[str, Any]) -> None:
    failed = line.get("status") in ("failed", "error")
    summary.done += not failed
    summary.failed += failed


def _json(line: dict[str, Any]) -> str:
    import json

    return json.dumps(line, ensure_ascii=False)
