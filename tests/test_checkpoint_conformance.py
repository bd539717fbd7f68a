"""LangGraph's checkpointer conformance suite (`langgraph-checkpoint-conformance`) against the inline
SQLite saver that `polycascade run` and the Ray workers checkpoint documents with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks

from polycascade._checkpoints import InlineSqliteSaver, open_checkpoints

REQUIRED = {"put", "put_writes", "get_tuple", "list", "delete_thread"}  # what a checkpointer must do


async def test_the_inline_sqlite_saver_passes_langgraphs_conformance_suite(tmp_path: Path) -> None:
    databases = iter(tmp_path / f"checkpoints-{i}.db" for i in range(10_000))

    @checkpointer_test(name="InlineSqliteSaver")
    async def inline() -> AsyncIterator[InlineSqliteSaver]:
        with open_checkpoints(next(databases)) as saver:
            yield saver

    report = await validate(inline, progress=ProgressCallbacks.quiet())
    failures = {name: r.failures for name, r in report.results.items() if r.tests_failed}
    assert not failures, failures
    passed = {name for name, r in report.results.items() if r.detected and r.passed}
    assert passed >= REQUIRED, f"capabilities not detected or not passed: {sorted(REQUIRED - passed)}"
    # optional capabilities it does not offer (detected=False) are skipped by the suite itself:
    # delete_for_runs, copy_thread, prune
