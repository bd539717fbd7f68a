"""The document pipeline: split into chunks, run the cascade on each (Send fan-out), merge.

    START → split ─Send×N→ work ─→ merge → END

Two ways to run the same nodes: `build_document_graph`, LangGraph's compiled graph (state holds
only JSON-safe values, so its checkpointer can persist it), and `run_document`, the nodes stepped
directly, chunks at once, for batches: there LangGraph's scheduler and a checkpoint per step
cost more than the work, and a resumed document does not need them, its answered chunks coming
back from the answer journal (`completer.Recall`) without being paid again.
"""

from __future__ import annotations

import asyncio
import operator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from pydantic import BaseModel

from polycascade.graphs.cascade import Cascade
from polycascade.graphs.state import apply_update, reducers
from polycascade.tasks import Task, TaskResult
from polycascade.tools.chunking import chunk_text

__all__ = ["DocContext", "DocState", "build_document_graph", "chunk_result", "run_document"]

Workflow = Literal["summarise", "extract"]
PROMPTS = {
    "summarise": "Summarise the following text in two or three sentences, in the language of the text.",
    "extract": "Extract the requested fields from the following text. Use null for anything not stated.",
}


@dataclass
class DocContext:
    cascade: Cascade
    workflow: Workflow
    schema: type[BaseModel] | None
    data_class: str | None  # None: the policy's default
    run_id: str
    chunk_tokens: int = 800


class DocState(TypedDict, total=False):
    doc_id: str
    text: str
    results: Annotated[list[dict[str, Any]], operator.add]
    output: dict[str, Any]


class ChunkState(TypedDict):
    doc_id: str
    index: int
    text: str


def split(state: DocState, runtime: Runtime[DocContext]) -> Command[Literal["work"]]:
    chunks = chunk_text(state["text"], runtime.context.chunk_tokens)
    return Command(
        goto=[Send("work", {"doc_id": state["doc_id"], "index": i, "text": c}) for i, c in enumerate(chunks)]
    )


async def work(chunk: ChunkState, runtime: Runtime[DocContext]) -> dict[str, Any]:
    ctx = runtime.context
    task = Task(
        f"{PROMPTS[ctx.workflow]}\n\n<text>\n{chunk['text']}\n</text>",
        kind=ctx.workflow,
        data_class=ctx.data_class,
        schema=ctx.schema if ctx.workflow == "extract" else None,
        max_tokens=200,
        id=f"{chunk['doc_id']}#{chunk['index']}",
        run_id=ctx.run_id,
    )
    # stepped directly, not as a nested graph: the document graph's checkpointer must not see the cascade
    return {"results": [chunk_result(chunk["index"], await ctx.cascade.run_direct(task))]}


def chunk_result(index: int, result: TaskResult) -> dict[str, Any]:
    return {
        "index": index,
        "answer": result.answer,
        "parsed": result.parsed.model_dump(mode="json") if result.parsed is not None else None,
        "status": result.status,
        "cost_usd": str(result.total_cost),
        "models": [a.model for a in result.attempts if a.answer is not None],
        "verdicts": [a.verdict.reason for a in result.attempts if a.verdict is not None],
        "stop_reason": result.stop_reason,
    }


def merge(state: DocState, runtime: Runtime[DocContext]) -> dict[str, Any]:
    results = sorted(state.get("results", []), key=lambda r: r["index"])
    statuses = {r["status"] for r in results}
    status = "failed" if "failed" in statuses else "unverified" if "unverified" in statuses else "verified"
    output: dict[str, Any] = {
        "status": status,
        "chunks": len(results),
        "cost_usd": str(sum((Decimal(r["cost_usd"]) for r in results), Decimal(0))),
        "models": sorted({m for r in results for m in r["models"]}),
        "verdicts": [v for r in results for v in r["verdicts"]],
    }
    if runtime.context.workflow == "extract":
        output["extracted"] = _merge_fields([r["parsed"] for r in results if r["parsed"] is not None])
        if output["extracted"] is None:
            output["status"] = "failed" if status == "failed" else "unverified"
    else:
        output["summary"] = "\n".join(r["answer"] for r in results if r["answer"])
    return {"output": output}


def _merge_fields(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per field: the first value found, lists concatenated without duplicates."""
    if not parts:
        return None
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, list):
                merged[key] = merged.get(key, []) + [v for v in value if v not in merged.get(key, [])]
            elif merged.get(key) is None:
                merged[key] = value
    return merged


REDUCERS = reducers(DocState)


async def run_document(doc_id: str, text: str, context: DocContext) -> dict[str, Any]:
    """The document's output: `split`, every chunk's `work` at once, `merge`, as the graph runs them
    (the same nodes and reducers; a chunk that fails cancels its siblings)."""
    runtime: Runtime[DocContext] = Runtime(context=context)
    state: dict[str, Any] = {"doc_id": doc_id, "text": text}
    sends = split(state, runtime).goto  # type: ignore[arg-type]
    try:
        async with asyncio.TaskGroup() as chunks:
            started = [chunks.create_task(work(send.arg, runtime)) for send in sends]  # type: ignore[union-attr]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # as the graph raises it: the error itself (a budget run out …)
    for done in started:
        apply_update(state, done.result(), REDUCERS)
    apply_update(state, merge(state, runtime), REDUCERS)  # type: ignore[arg-type]
    return dict(state["output"])


def build_document_graph(checkpointer: Any = None) -> Any:
    graph = StateGraph(DocState, context_schema=DocContext)
    graph.add_node("split", split)
    graph.add_node("work", work)  # type: ignore[call-overload]
    graph.add_node("merge", merge)
    graph.add_edge(START, "split")
    graph.add_edge("work", "merge")
    graph.add_edge("merge", END)
    return graph.compile(checkpointer=checkpointer)
