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

import contextlib
import inspect
import operator
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property, partial
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from opentelemetry.trace import Span
from pydantic import ValidationError

from polycascade import telemetry
from polycascade.agents.evaluators import AllOf, EvalServices, Evaluator, Judged, Sanity, SchemaCheck
from polycascade.agents.workers import build_request, extract_json, request_size
from polycascade.catalog import ModelSpec
from polycascade.completer import Completer
from polycascade.errors import BudgetExceeded, ContextWindowExceeded, ProviderError
from polycascade.governor import GovernedGateway, Governor, Reservation, Why
from polycascade.graphs.state import apply_update, reducers
from polycascade.ledger import MemoryLedger, Tally
from polycascade.policies.adequacy import Adequacy
from polycascade.policies.agreement import KindRecord
from polycascade.policies.config import Policy
from polycascade.policies.pacing import Pacer
from polycascade.policies.routing import Decision, Denial, Need, RoutingSettings, max_call_cost, routes_by_plan
from polycascade.records import frozen, replace
from polycascade.sync import run_sync
from polycascade.tasks import Attempt, Task, TaskResult, Verdict
from polycascade.types import CallContext

__all__ = ["Cascade", "CascadeContext", "CascadeSettings", "CascadeState"]


@dataclass(frozen=True, slots=True)
class CascadeSettings:
    """`max_rungs` answers at most (escalations + 1); `max_failovers` provider failures at most.

    Worst case per task: max_rungs + max_failovers model calls, each retried at most
    RetryPolicy.max_attempts times, plus the evaluator's calls per answer.
    """

    routing: RoutingSettings = RoutingSettings()
    max_rungs: int = 3
    max_failovers: int = 2
    seed: int | None = 0

    def max_model_calls(self, retry_attempts: int, evaluator_calls_per_answer: int = 0) -> int:
        """The most HTTP requests one task can make: answers and failovers, each retried, plus checks."""
        attempts = self.max_rungs + self.max_failovers + 1  # the failure that exceeds max_failovers ends it
        return attempts * retry_attempts + self.max_rungs * evaluator_calls_per_answer

    @classmethod
    def from_policy(cls, policy: Policy) -> CascadeSettings:
        r = policy.routing
        routing = RoutingSettings(
            adequacy=Adequacy(prior_strength=r.prior_strength),
            threshold=r.threshold,
            explore=r.explore,
            answer_value=float(r.answer_value_usd) if r.answer_value_usd is not None else None,
            target_cost=float(r.target_cost_usd) if r.target_cost_usd is not None else None,
        )
        return cls(routing=routing, max_rungs=r.max_rungs, max_failovers=r.max_failovers, seed=r.seed)


@dataclass
class CascadeContext:
    gateway: Completer
    governor: Governor
    pool: tuple[ModelSpec, ...]
    evaluator: Evaluator
    settings: CascadeSettings
    eval_services: EvalServices  # for evaluators that call models: governed, on this task's behalf
    call: CallContext  # the task's calls: run, task, kind, data class and tenant, resolved by the policy
    rng: random.Random = field(default_factory=random.Random)
    history: Mapping[str, Mapping[str, Tally]] = field(default_factory=dict)  # kind → model → prior verdicts
    agreement: Mapping[str, KindRecord] = field(default_factory=dict)  # kind → how pairs agreed, when recorded
    pacer: Pacer | None = None  # the answer value, paced to spend routing.target_cost per task


@frozen
class _Pending:
    attempt: Attempt
    finish_reason: str | None


class CascadeState(TypedDict, total=False):
    task: Task
    attempts: Annotated[list[Attempt], operator.add]
    decision: Decision
    reservation: Reservation
    pending: _Pending
    stronger_than: float  # P(pass) of the best answer that failed evaluation: the next must be stronger
    avoid_vendors: frozenset[str]  # vendors that failed this task: fail over elsewhere
    independent_of: frozenset[str]  # after an inconclusive verdict: vendors already asked
    confirming: float | None  # after an inconclusive verdict: P(pass) of the answer awaiting a second opinion
    min_context: int  # after a context-window error: only larger windows
    stop_reason: str
    by_plan: bool  # routed by plans by worth: without a pass, the latest answer stands, as the plan counted
    result: TaskResult


def _call_context(task: Task) -> CallContext:
    """A resolved task's context (`Policy.resolve` has set its kind and data class)."""
    if task.kind is None or task.data_class is None:
        raise TypeError(f"task {task.id} was not resolved against a policy (Policy.resolve)")
    return CallContext(
        run_id=task.run_id, task_id=task.id, task_kind=task.kind, data_class=task.data_class, tenant=task.tenant
    )


def _need(task: Task, state: CascadeState, ctx: CascadeContext, answers: tuple[str, ...]) -> Need:
    confirming = state.get("confirming")
    size = request_size(task)
    return Need(
        input_tokens=size.estimate,
        max_input_tokens=size.bound,
        max_tokens=task.max_tokens,
        capabilities=task.capabilities | ({"tools"} if task.tools else set()),
        tried=frozenset(a.model for a in state.get("attempts", [])),
        stronger_than=None if confirming is not None else state.get("stronger_than"),  # a 2nd opinion: any
        avoid_vendors=state.get("avoid_vendors", frozenset()),
        independent_of=state.get("independent_of", frozenset()),
        min_context=state.get("min_context", 0),
        rungs_left=ctx.settings.max_rungs - len(answers),
        by_agreement=getattr(ctx.evaluator, "by_agreement", False),
        confirming=confirming,
        answers=answers,
        prefer=task.prefer,
    )


def _why_none(rejected: Mapping[str, Denial]) -> str:
    """Each distinct reason once, with the models it turned away."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for model, denial in sorted(rejected.items()):
        by_reason.setdefault((denial.rule, denial.reason), []).append(model)
    return "; ".join(f"{rule}: {reason} ({', '.join(models)})" for (rule, reason), models in by_reason.items())


def _spent(attempts: Sequence[Attempt]) -> Decimal:
    return sum((a.cost + (a.verdict.cost if a.verdict else 0) for a in attempts), Decimal(0))


async def route(state: CascadeState, runtime: Runtime[CascadeContext]) -> Command[Literal["attempt", "finish"]]:
    ctx, task, attempts = runtime.context, state["task"], state.get("attempts", [])
    answers = tuple(a.model for a in attempts if a.answer is not None)
    if len(answers) >= ctx.settings.max_rungs:
        return _stop(f"reached max_rungs={ctx.settings.max_rungs}")
    if len(attempts) - len(answers) > ctx.settings.max_failovers:
        return _stop(f"more than max_failovers={ctx.settings.max_failovers} provider failures")
    kind = ctx.call.task_kind
    tallies = _tallies(ctx, kind, await ctx.governor.ledger.tallies(kind))
    need = _need(task, state, ctx, answers)
    if task.prefer is not None and task.prefer.needs_latency:
        need = replace(need, latency=await ctx.governor.latencies(ctx.pool, kind))
    pool = _within_ceiling(ctx, task, need, attempts)
    routing = _routing(ctx)
    try:
        decision, reservation = await ctx.governor.route(
            pool, need, replace(ctx.call, node="attempt"), tallies, routing, ctx.rng, ctx.agreement.get(kind)
        )
    except BudgetExceeded as exc:
        if answers:  # keep the answer already paid for; report why the climb stopped
            return _stop(str(exc))
        raise
    if decision.chosen is None or reservation is None:
        if decision.stop:
            return _stop(decision.reason)
        if task.cost_ceiling is not None and len(pool) < len(ctx.pool):
            return _stop(f"cost ceiling ${task.cost_ceiling}: spent ${_spent(attempts)}, no stronger model fits")
        return _stop(f"no eligible model: {_why_none(decision.rejected)}")
    update = {"decision": decision, "reservation": reservation, "by_plan": routes_by_plan(routing, need)}
    return Command(update=update, goto="attempt")


def _routing(ctx: CascadeContext) -> RoutingSettings:
    if ctx.pacer is None:
        return ctx.settings.routing
    return replace(ctx.settings.routing, answer_value=ctx.pacer.value)


def _tallies(ctx: CascadeContext, kind: str, live: Mapping[tuple[str, str], Tally]) -> dict[str, Tally]:
    merged = dict(ctx.history.get(kind, {}))
    for (_, model), t in live.items():
        prior = merged.get(model, Tally())
        merged[model] = Tally(prior.passes + t.passes, prior.fails + t.fails)
    return merged


def _stop(reason: str) -> Command[Literal["attempt", "finish"]]:
    return Command(update={"stop_reason": reason}, goto="finish")


def _within_ceiling(ctx: CascadeContext, task: Task, need: Need, attempts: Sequence[Attempt]) -> tuple[ModelSpec, ...]:
    if task.cost_ceiling is None:
        return ctx.pool
    spent = _spent(attempts)
    return tuple(m for m in ctx.pool if spent + max_call_cost(m, need) <= task.cost_ceiling)


async def attempt(state: CascadeState, runtime: Runtime[CascadeContext]) -> Command[Literal["evaluate", "route"]]:
    ctx, task, decision, reservation = runtime.context, state["task"], state["decision"], state["reservation"]
    spec = reservation.spec
    rung = len(state.get("attempts", [])) + 1
    why = Why(decision, ctx.governor.policy.name, reservation)
    context = replace(ctx.call, node="attempt", decision=why)
    try:
        request = ctx.governor.prepare(build_request(task, spec, context), reservation)
        completion = await ctx.governor.run(reservation, lambda: ctx.gateway.complete(request))
    except ProviderError as exc:
        failed = Attempt(
            rung, spec.id, spec.vendor, Decimal(0), None, error=f"{type(exc).__name__}: {exc}",
            error_kind=exc.summary, decision=why,
        )  # fmt: skip
        update: dict[str, Any] = {"attempts": [failed]}
        if isinstance(exc, ContextWindowExceeded):
            update["min_context"] = spec.context_window + 1
        else:
            update["avoid_vendors"] = state.get("avoid_vendors", frozenset()) | {spec.vendor}
        return Command(update=update, goto="route")
    ctx.governor.observe_latency(spec.id, ctx.call.task_kind, completion)
    answered = Attempt(
        rung, spec.id, spec.vendor, completion.cost, completion.text, completion.call_id, decision=why,
        tool_calls=completion.tool_calls, input_tokens=completion.usage.input_tokens,
        output_tokens=completion.usage.output_tokens, p_pass=decision.estimate.p_pass if decision.estimate else 0.0,
    )  # fmt: skip
    return Command(update={"pending": _Pending(answered, completion.finish_reason)}, goto="evaluate")


async def evaluate(state: CascadeState, runtime: Runtime[CascadeContext]) -> Command[Literal["finish", "route"]]:
    ctx, task, pending = runtime.context, state["task"], state["pending"]
    spec = ctx.gateway.catalog[pending.attempt.model]
    earlier = tuple((a.model, a.vendor, a.answer) for a in state.get("attempts", []) if a.answer is not None)
    judged = Judged(
        task, pending.attempt.answer or "", spec, pending.finish_reason, earlier, pending.attempt.tool_calls,
        failing_vendors=state.get("avoid_vendors", frozenset()),
    )  # fmt: skip
    try:
        verdict = await ctx.evaluator(judged, ctx.eval_services)
    except BudgetExceeded as exc:  # the answer is paid for: keep it, unverified, and say why
        verdict = Verdict(True, 0.5, f"not verified: {exc}", "budget", verifies=False)
    telemetry.evaluation_event(verdict.evaluator, verdict.passed, verdict.score, verdict.reason, spec.id)
    if verdict.verifies and verdict.teaches and pending.attempt.call_id:  # what the router may learn from
        await ctx.governor.ledger.set_verdict(pending.attempt.call_id, verdict.passed, verdict.score, verdict.evaluator)
    done = replace(pending.attempt, verdict=verdict)
    if verdict.passed:
        return Command(update={"attempts": [done]}, goto="finish")
    p_pass = pending.attempt.p_pass or 0.0
    stronger_than = max(state.get("stronger_than") or 0.0, p_pass)  # what comes next must beat every answer so far
    if not verdict.verifies:  # inconclusive (e.g. no second opinion yet): ask another vendor, not a stronger one
        asked = frozenset(a.vendor for a in (*state.get("attempts", []), done) if a.answer is not None)
        update = {"attempts": [done], "independent_of": asked, "confirming": p_pass, "stronger_than": stronger_than}
        return Command(update=update, goto="route")
    # a failed check: escalate to a stronger model, of any vendor (the evaluator decides what its agreement proves)
    telemetry.count_escalation(ctx.call.task_kind, spec.id)
    update = {"attempts": [done], "stronger_than": stronger_than, "confirming": None, "independent_of": frozenset()}
    return Command(update=update, goto="route")


def finish(state: CascadeState, runtime: Runtime[CascadeContext]) -> dict[str, Any]:
    task, attempts = state["task"], state.get("attempts", [])
    answered = [a for a in attempts if a.answer is not None]
    passed = [a for a in answered if a.verdict and a.verdict.passed]
    # without a pass, the best score from a check that could judge; on a tie, an answer over a blank,
    # then the model the router rated likelier to pass (routed by plans: the later rung, the answer
    # each plan counted on), then the later rung. An inconclusive verdict (no second opinion yet) is
    # no evidence either way.
    standing = _standing_by_plan if state.get("by_plan") else _standing
    best = passed[-1] if passed else max(answered, key=standing, default=None)
    status: Literal["verified", "unverified", "failed"] = "failed"
    if best is not None:
        status = "verified" if best in passed and best.verdict and best.verdict.verifies else "unverified"
    stop = state.get("stop_reason") or _stop_reason(best, bool(passed))
    result = TaskResult(
        task_id=task.id,
        status=status,
        chosen=best,
        attempts=tuple(attempts),
        total_cost=_spent(attempts),
        parsed=_parse(task, best.answer if best else None),
        stop_reason=stop,
    )
    return {"result": result}


def _standing(attempt: Attempt) -> tuple[float, bool, float, int]:
    verdict = attempt.verdict
    said_something = bool(attempt.answer and attempt.answer.strip())
    score = verdict.score if verdict and verdict.verifies else 0.0
    return (score, said_something, attempt.p_pass or 0.0, attempt.rung)


def _standing_by_plan(attempt: Attempt) -> tuple[float, bool, int]:
    score, said_something, _, rung = _standing(attempt)
    return (score, said_something, rung)


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


NODES = {"route": route, "attempt": attempt, "evaluate": evaluate, "finish": finish}


def _build() -> Any:
    graph = StateGraph(CascadeState, context_schema=CascadeContext)
    for name, node in NODES.items():
        graph.add_node(name, node)  # type: ignore[call-overload]
    graph.add_edge(START, "route")
    graph.add_edge("finish", END)
    return graph.compile()


GRAPH = _build()
REDUCERS = reducers(CascadeState)


class Cascade:
    """A configured cascade over a pool of models. `run(task)` returns a `TaskResult`."""

    def __init__(
        self,
        gateway: Completer,
        pool: Sequence[ModelSpec],
        *,
        evaluator: Evaluator | None = None,
        governor: Governor | None = None,
        settings: CascadeSettings | None = None,
        history: Mapping[tuple[str, str], Tally] | None = None,
        agreement: Mapping[str, KindRecord] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        """`pacer`: one shared with other cascades that spend the same budget (e.g. one per request
        in a server); by default, one of its own if `settings.routing.target_cost` is set."""
        self.gateway, self.pool, self.evaluator = gateway, tuple(pool), evaluator
        self.governor = governor or Governor(ledger=getattr(gateway, "ledger", None) or MemoryLedger())
        self.history: dict[str, dict[str, Tally]] = {}
        for (kind, model), tally in (history or {}).items():
            self.history.setdefault(kind, {})[model] = tally
        self.agreement = dict(agreement or {})
        self.settings = settings or CascadeSettings.from_policy(self.governor.policy)
        self._rng = random.Random(self.settings.seed)
        self.pacer = pacer or Pacer.for_routing(self.settings.routing)

    @cached_property
    def _governed(self) -> GovernedGateway:
        """The gateway for evaluators' calls: each admitted by the governor."""
        return GovernedGateway(self.gateway, self.governor)

    def evaluator_for(self, task: Task) -> Evaluator:
        checks: list[Evaluator] = [SchemaCheck(task.schema)] if task.schema else []
        checks += [self.evaluator] if self.evaluator else []
        if not checks:
            return Sanity()
        return checks[0] if len(checks) == 1 else AllOf(checks)

    def _context(self, task: Task) -> CascadeContext:
        evaluator = self.evaluator_for(task)
        call = _call_context(task)
        allow = partial(self.governor.residency_allows, data_class=call.data_class)
        services = EvalServices(self._governed, replace(call, node="evaluate"), allow=allow)
        return CascadeContext(
            self.gateway, self.governor, self.pool, evaluator, self.settings, services, call, self._rng,
            self.history, self.agreement, self.pacer,
        )  # fmt: skip

    def resolve(self, task: Task | str) -> Task:
        """The task with the policy's defaults for what it leaves unset (data class, kind); a data
        class the policy does not define is refused (`PolicyError`), never sent anywhere."""
        return self.governor.policy.resolve(Task(task) if isinstance(task, str) else task)

    async def run(self, task: Task | str) -> TaskResult:
        task = self.resolve(task)
        limit = 4 * (self.settings.max_rungs + self.settings.max_failovers) + 8
        with _traced(task) as span:
            state = await GRAPH.ainvoke({"task": task}, context=self._context(task), config={"recursion_limit": limit})
            return self._finished(state["result"], span)

    async def run_direct(self, task: Task | str) -> TaskResult:
        """The same nodes, stepped by a plain loop instead of LangGraph's scheduler, with the same
        reducers (read from `CascadeState`'s annotations). For replays of recorded outcomes, where
        LangGraph's per-step bookkeeping would dominate, and for nesting in another graph."""
        task = self.resolve(task)
        runtime: Runtime[CascadeContext] = Runtime(context=self._context(task))
        state: dict[str, Any] = {"task": task}
        node: str = "route"
        with _traced(task) as span:
            while node != END:
                out: Any = NODES[node](state, runtime)  # type: ignore[operator, arg-type]
                out = await out if inspect.isawaitable(out) else out
                if isinstance(out, Command):
                    update: dict[str, Any] = out.update or {}
                    node = str(out.goto)
                else:
                    update, node = out, END
                apply_update(state, update, REDUCERS)
            return self._finished(state["result"], span)

    def _finished(self, result: TaskResult, span: Span) -> TaskResult:
        if self.pacer is not None:
            self.pacer.observe(float(result.total_cost))
        telemetry.finish_workflow(span, result.status, result.total_cost, len(result.attempts), result.stop_reason)
        return result

    def run_sync(self, task: Task | str) -> TaskResult:
        return run_sync(self.run(task))

    def as_node(self, *, input_key: str = "task", output_key: str = "result") -> RunnableLambda[Any, Any]:
        """A node for your own StateGraph (sync or async): reads a `Task` or prompt at `input_key`."""

        async def cascade_node(state: dict[str, Any]) -> dict[str, Any]:
            # stepped directly: as a nested graph it would inherit the parent's checkpointer,
            # which cannot (and need not) persist a task's schema class mid-cascade
            task = state[input_key]
            return {output_key: await self.run_direct(Task(task) if isinstance(task, str) else task)}

        return RunnableLambda(lambda state: run_sync(cascade_node(state)), afunc=cascade_node, name="cascade")


def _traced(task: Task) -> contextlib.AbstractContextManager[Span]:
    return telemetry.workflow_span(task.id, task.kind or "general", task.data_class or "", task.run_id)
