"""Delegation: a planner splits a task into typed subtasks; each finds its own cheapest adequate model.

    START → plan ─Send×N→ solve ─→ synthesise → END

Subtasks inherit the task's data class: a plan is a model's output, and a model's output must
never lower a data class. If the plan does not validate, the whole task is the one subtask.
State is JSON-safe, so the graph runs under a checkpointer like the document pipeline.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send
from pydantic import BaseModel, Field

from polycascade.graphs.cascade import Cascade
from polycascade.sync import run_sync
from polycascade.tasks import Task

__all__ = ["DelegationContext", "Plan", "Subtask", "build_delegation_graph", "delegate"]

PLANNER = (
    "Split the task below into at most {n} independent subtasks that together answer it. "
    "Give each a short kind (e.g. extract, summarise, translate, calculate, research). "
    "If the task is simple, return a single subtask.\n\n<task>\n{task}\n</task>"
)
SYNTHESIS = "Using the answers to its parts, write the final answer to the task.\n\n<task>\n{task}\n</task>\n\n{parts}"


class Subtask(BaseModel):
    prompt: str = Field(min_length=1)
    kind: str = "general"


class Plan(BaseModel):
    subtasks: list[Subtask] = Field(min_length=1)


@dataclass
class DelegationContext:
    cascade: Cascade
    data_class: str | None  # None: the policy's default; subtasks inherit it (a plan may not lower it)
    run_id: str = "adhoc"
    max_subtasks: int = 6


class DelegationState(TypedDict, total=False):
    doc_id: str
    text: str
    plan: list[dict[str, Any]]
    answers: Annotated[list[dict[str, Any]], operator.add]
    output: dict[str, Any]


class SubtaskState(TypedDict):
    doc_id: str
    index: int
    prompt: str
    kind: str


async def plan(state: DelegationState, runtime: Runtime[DelegationContext]) -> Command[Literal["solve"]]:
    ctx = runtime.context
    planner = Task(
        PLANNER.format(n=ctx.max_subtasks, task=state["text"]), kind="plan", data_class=ctx.data_class,
        schema=Plan, max_tokens=600, id=f"{state['doc_id']}#plan", run_id=ctx.run_id,
    )  # fmt: skip
    result = await ctx.cascade.run_direct(planner)
    parsed = result.parsed if isinstance(result.parsed, Plan) else None
    subtasks = parsed.subtasks[: ctx.max_subtasks] if parsed else [Subtask(prompt=state["text"])]
    sends = [
        Send("solve", {"doc_id": state["doc_id"], "index": i, "prompt": s.prompt, "kind": s.kind})
        for i, s in enumerate(subtasks)
    ]
    return Command(update={"plan": [s.model_dump() for s in subtasks]}, goto=sends)


async def solve(sub: SubtaskState, runtime: Runtime[DelegationContext]) -> dict[str, Any]:
    ctx = runtime.context
    task = Task(
        sub["prompt"], kind=sub["kind"], data_class=ctx.data_class, id=f"{sub['doc_id']}#{sub['index']}",
        run_id=ctx.run_id,
    )  # fmt: skip
    result = await ctx.cascade.run_direct(task)
    return {
        "answers": [
            {
                "index": sub["index"],
                "prompt": sub["prompt"],
                "kind": sub["kind"],
                "answer": result.answer,
                "status": result.status,
                "cost_usd": str(result.total_cost),
                "models": [a.model for a in result.attempts if a.answer is not None],
            }
        ]
    }


async def synthesise(state: DelegationState, runtime: Runtime[DelegationContext]) -> dict[str, Any]:
    ctx = runtime.context
    answers = sorted(state.get("answers", []), key=lambda a: a["index"])
    cost = sum((Decimal(a["cost_usd"]) for a in answers), Decimal(0))
    if len(answers) == 1:
        final, status = answers[0]["answer"], answers[0]["status"]
    else:
        parts = "\n\n".join(f"<part kind={a['kind']!r}>\n{a['prompt']}\n→ {a['answer']}\n</part>" for a in answers)
        result = await ctx.cascade.run_direct(
            Task(
                SYNTHESIS.format(task=state["text"], parts=parts),
                kind="synthesis",
                data_class=ctx.data_class,
                id=f"{state['doc_id']}#synthesis",
                run_id=ctx.run_id,
            )
        )
        final, status, cost = result.answer, result.status, cost + result.total_cost
    return {
        "output": {
            "status": status,
            "answer": final,
            "subtasks": answers,
            "cost_usd": str(cost),
            "models": sorted({m for a in answers for m in a["models"]}),
        }
    }


def build_delegation_graph(checkpointer: Any = None) -> Any:
    graph = StateGraph(DelegationState, context_schema=DelegationContext)
    graph.add_node("plan", plan)
    graph.add_node("solve", solve)  # type: ignore[call-overload]
    graph.add_node("synthesise", synthesise)
    graph.add_edge(START, "plan")
    graph.add_edge("solve", "synthesise")
    graph.add_edge("synthesise", END)
    return graph.compile(checkpointer=checkpointer)


def delegate(task: str, cascade: Cascade, *, data_class: str | None = None, run_id: str = "adhoc") -> dict[str, Any]:
    """Plan, fan out, solve and synthesise one task; returns the answer with every subtask.
    `data_class`: the policy's default when unset."""

    async def go() -> dict[str, Any]:
        context = DelegationContext(cascade, data_class, run_id)
        state = await build_delegation_graph().ainvoke({"doc_id": "task", "text": task}, context=context)
        return dict(state["output"])

    return run_sync(go())
