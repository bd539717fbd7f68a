"""The cascade: route → attempt → evaluate, climbing to a stronger model until an answer passes.

    START → route ─┬─→ attempt ─┬─→ evaluate ─┬─→ finish → END
                   │            │ (provider   │ (failed:
                   │            │  error:     │  escalate)
                   │            └─ failover)──┴─→ route
                   └─→ finish   (no candidate, rung limit or cost ceiling)

Nodes are plain functions; the gateway, ledger, candidate pool and evaluator come from the
run's `CascadeContext`. An answer that no rung could verify is returned marked `unverified`.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import ValidationError

from agents.evaluators import AllOf, EvalServices, Evaluator, Judged, Sanity, SchemaCheck
from agents.workers import ask_model, extract_json
from policies.routing import Decision, Need, RoutingSettings, Rule, choose, max_call_cost
from polycascade._sync import run_sync
from polycascade.catalog import ModelSpec
from polycascade.errors import ProviderError
from polycascade.gateway import Gateway
from polycascade.ledger import Ledger, MemoryLedger
from polycascade.tasks import Attempt, Task, TaskResult
from polycascade.tokens import estimate_tokens
from polycascade.types import CallContext

__all__ = ["Cascade", "CascadeContext", "CascadeSettings", "CascadeState"]


@dataclass(frozen=True, slots=True)
class CascadeSettings:
    """`max_rungs` answers at most (escalations + 1); `max_failovers` provider failures at most."""

    routing: RoutingSettings = RoutingSettings()
    max_rungs: int = 3
    max_failovers: int = 2
    seed: int | None = 0


@dataclass
class CascadeContext:
    gateway: Gateway
    ledger: Ledger
    pool: tuple[ModelSpec, ...]
    evaluator: Evaluator
    settings: CascadeSettings
    rules: tuple[Rule, ...] = ()
    rng: random.Random = field(default_factory=random.Random)


@dataclass(frozen=True, slots=True)
class _Pending:
    attempt: Attempt
    finish_reason: str | None
    p_pass: float


class CascadeState(TypedDict, total=False):
    task: Task
    attempts: Annotated[list[Attempt], operator.add]
    decision: Decision
    pending: _Pending
    floor: float  # P(pass) of the last rung that failed evaluation: the next must be stronger
    stop_reason: str
    result: TaskResult


def _context(task: Task, node: str, decision: Decision | None = None) -> CallContext:
    return CallContext(
        run_id=task.run_id,
        task_id=task.id,
        node=node,
        task_kind=task.kind,
        data_class=task.data_class,
        tenant=task.tenant,
        decision=decision.to_dict() if decision else None,
    )


def _need(task: Task, state: CascadeState) -> Need:
    schema = str(task.schema.model_json_schema()) if task.schema else ""
    return Need(
        task_kind=task.kind,
        data_class=task.data_class,
        input_tokens=estimate_tokens(task.prompt + (task.system or "") + schema),
        max_tokens=task.max_tokens,
        capabilities=task.capabilities,
        tried=frozenset(a.model for a in state.get("attempts", [])),
        stronger_than=state.get("floor"),
    )


def _spent(attempts: Sequence[Attempt]) -> Decimal:
    return sum((a.cost + (a.verdict.cost if a.verdict else 0) for a in attempts), Decimal(0))


async def route(state: CascadeState, runtime: Runtime[CascadeContext]) -> Command[Literal["attempt", "finish"]]:
    ctx, task, attempts = runtime.context, state["task"], state.get("attempts", [])
    answered = sum(a.answer is not None for a in attempts)
    if answered >= ctx.settings.max_rungs:
        return Command(update={"stop_reason": f"reached max_rungs={ctx.settings.max_rungs}"}, goto="finish")
    if len(attempts) - answered > ctx.settings.max_failovers:
        return Command(update={"stop_reason": f"more than max_failovers={ctx.settings.max_failovers}"}, goto="finish")
    tallies = {model: t for (_, model), t in (await ctx.ledger.tallies(task.kind)).items()}
    need = _need(task, state)
    decision = choose(ctx.pool, need, tallies, ctx.settings.routing, ctx.rules, ctx.rng)
    if decision.chosen is None:
        rejected = "; ".join(f"{m}: {d.rule}" for m, d in sorted(decision.rejected.items()))
        return Command(update={"stop_reason": f"no eligible model ({rejected})"}, goto="finish")
    ceiling, spent = task.cost_ceiling, _spent(attempts)
    worst = max_call_cost(ctx.gateway.catalog[decision.chosen], need)
    if ceiling is not None and spent + worst > ceiling:
        reason = f"cost ceiling ${ceiling}: spent ${spent}, next call ({decision.chosen}) may cost ${worst}"
        return Command(update={"stop_reason": reason}, goto="finish")
    return Command(update={"decision": decision}, goto="attempt")


async def attempt(state: CascadeState, runtime: Runtime[CascadeContext]) -> Command[Literal["evaluate", "route"]]:
    ctx, task, decision = runtime.context, state["task"], state["decision"]
    spec = ctx.gateway.catalog[decision.chosen or ""]
    rung, why = len(state.get("attempts", [])) + 1, decision.to_dict()
    try:
        completion = await ask_model(ctx.gateway, task, spec, _context(task, "attempt", decision))
    except ProviderError as exc:
        failed = Attempt(
            rung, spec.id, spec.vendor, Decimal(0), None, error=f"{type(exc).__name__}: {exc}", decision=why
        )
        return Command(update={"attempts": [failed]}, goto="route")
    answered = Attempt(rung, spec.id, spec.vendor, completion.cost, completion.text, completion.call_id, decision=why)
    p_pass = decision.estimate.p_pass if decision.estimate else 0.0
    return Command(update={"pending": _Pending(answered, completion.finish_reason, p_pass)}, goto="evaluate")


async def evaluate(state: CascadeState, runtime: Runtime[CascadeContext]) -> Command[Literal["finish", "route"]]:
    ctx, task, pending = runtime.context, state["task"], state["pending"]
    spec = ctx.gateway.catalog[pending.attempt.model]
    judged = Judged(task, pending.attempt.answer or "", spec, pending.finish_reason)
    services = EvalServices(ctx.gateway, _context(task, "evaluate"), allow=lambda s: _allowed(ctx, s, task))
    verdict = await ctx.evaluator(judged, services)
    if verdict.verifies and pending.attempt.call_id:  # only real evaluations teach the router
        await ctx.ledger.set_verdict(pending.attempt.call_id, verdict.passed, verdict.score, verdict.evaluator)
    done = replace(pending.attempt, verdict=verdict)
    if verdict.passed:
        return Command(update={"attempts": [done]}, goto="finish")
    return Command(update={"attempts": [done], "floor": pending.p_pass}, goto="route")


def _allowed(ctx: CascadeContext, spec: ModelSpec, task: Task) -> bool:
    need = Need(task_kind=task.kind, data_class=task.data_class)
    return all(rule(spec, need) is None for rule in ctx.rules)


def finish(state: CascadeState, runtime: Runtime[CascadeContext]) -> dict[str, Any]:
    task, attempts = state["task"], state.get("attempts", [])
    answered = [a for a in attempts if a.answer is not None]
    passed = [a for a in answered if a.verdict and a.verdict.passed]
    best = passed[-1] if passed else max(answered, key=lambda a: a.verdict.score if a.verdict else 0, default=None)
    status: Literal["verified", "unverified", "failed"] = "failed"
    if best is not None:
        status = "verified" if best in passed and best.verdict and best.verdict.verifies else "unverified"
    stop = state.get("stop_reason") or _stop_reason(best, bool(passed))
    result = TaskResult(
        task_id=task.id,
        answer=best.answer if best else None,
        status=status,
        verdict=best.verdict if best else None,
        attempts=tuple(attempts),
        total_cost=_spent(attempts),
        parsed=_parse(task, best.answer if best else None),
        stop_reason=stop,
    )
    return {"result": result}


def _stop_reason(best: Attempt | None, passed: bool) -> str:
    if best is None or not passed:
        return "no rung passed evaluation"
    if best.verdict and not best.verdict.verifies:
        return (
            "only sanity checks ran: nothing could verify the answer (add a schema, rules or a judge of another vendor)"
        )
    return "passed evaluation"


def _parse(task: Task, answer: str | None) -> Any:
    if task.schema is None or answer is None:
        return None
    try:
        return task.schema.model_validate_json(extract_json(answer))
    except ValidationError:
        return None


def _build() -> Any:
    graph = StateGraph(CascadeState, context_schema=CascadeContext)
    graph.add_node("route", route)
    graph.add_node("attempt", attempt)
    graph.add_node("evaluate", evaluate)
    graph.add_node("finish", finish)
    graph.add_edge(START, "route")
    graph.add_edge("finish", END)
    return graph.compile()


GRAPH = _build()


class Cascade:
    """A configured cascade over a pool of models. `run(task)` returns a `TaskResult`."""

    def __init__(
        self,
        gateway: Gateway,
        pool: Sequence[ModelSpec],
        *,
        evaluator: Evaluator | None = None,
        ledger: Ledger | None = None,
        settings: CascadeSettings = CascadeSettings(),
        rules: Sequence[Rule] = (),
    ) -> None:
        self.gateway, self.pool, self.evaluator = gateway, tuple(pool), evaluator
        self.ledger = ledger or gateway.ledger or MemoryLedger()
        self.settings, self.rules = settings, tuple(rules)
        self._rng = random.Random(settings.seed)

    def evaluator_for(self, task: Task) -> Evaluator:
        checks: list[Evaluator] = [SchemaCheck(task.schema)] if task.schema else []
        checks += [self.evaluator] if self.evaluator else []
        if not checks:
            return Sanity()
        return checks[0] if len(checks) == 1 else AllOf(checks)

    async def run(self, task: Task | str) -> TaskResult:
        task = Task(task) if isinstance(task, str) else task
        context = CascadeContext(
            self.gateway, self.ledger, self.pool, self.evaluator_for(task), self.settings, self.rules, self._rng
        )
        limit = 4 * (self.settings.max_rungs + self.settings.max_failovers) + 8
        state = await GRAPH.ainvoke({"task": task}, context=context, config={"recursion_limit": limit})
        result: TaskResult = state["result"]
        return result

    def run_sync(self, task: Task | str) -> TaskResult:
        return run_sync(self.run(task))

    def as_node(self, *, input_key: str = "task", output_key: str = "result") -> RunnableLambda[Any, Any]:
        """A node for your own StateGraph (sync or async): reads a `Task` or prompt at `input_key`."""

        async def cascade_node(state: dict[str, Any]) -> dict[str, Any]:
            return {output_key: await self.run(state[input_key])}

        return RunnableLambda(lambda state: run_sync(cascade_node(state)), afunc=cascade_node, name="cascade")
