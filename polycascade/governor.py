"""The governor applies a policy to every call: decide and reserve atomically, then settle.

    decision, reservation = await governor.route(pool, need, context, …)   # under one lock
    completion = await governor.run(reservation, lambda: gateway.complete(request))

Money is *committed* from the moment a call is admitted: its maximum cost (prompt tokens +
max_tokens at the model's price) is reserved against every budget and the vendor's share, and
replaced by the actual cost when the call settles (released on failure). Settled spend comes from
the ledger (reloaded every `refresh_s`) plus what this process settled since. State is per process;
shared deployments put the ledger and reservations in one database.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from policies.breaker import CircuitBreaker
from policies.config import DataClassRule, Policy
from policies.routing import Decision, Denial, Need, RoutingSettings, Rule, choose, max_call_cost
from policies.rules import BudgetState, Snapshot, breaker_rule, budget_rule, residency_rule, share_cap_rule

from .catalog import ModelSpec
from .errors import BudgetExceeded, NoEligibleModel, RetryableProviderError
from .gateway import Completer
from .ledger import Ledger
from .tokens import estimate_tokens
from .types import CallContext, Completion, CompletionRequest

__all__ = ["DEFAULT_POLICY", "GovernedGateway", "Governor", "Reservation"]

T = TypeVar("T")
DEFAULT_POLICY = Policy(
    name="default",
    description="no caps or budgets; the three standard data classes may go anywhere known",
    data_classes={"public": DataClassRule(), "internal": DataClassRule(), "confidential": DataClassRule()},
)


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    spec: ModelSpec
    amount: Decimal
    scopes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"reserved_usd": str(self.amount), "budgets": list(self.scopes)}


@dataclass
class _Baseline:
    loaded_at: float
    amount: Decimal


class Governor:
    def __init__(
        self,
        policy: Policy = DEFAULT_POLICY,
        ledger: Ledger | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_s: float = 30.0,
    ) -> None:
        from .ledger import MemoryLedger

        self.policy, self.ledger, self.clock, self.refresh_s = policy, ledger or MemoryLedger(), clock, refresh_s
        self._ids = itertools.count(1)
        self._reservations: dict[int, Reservation] = {}
        self._baselines: dict[str, _Baseline] = {}
        self._settled: dict[str, Decimal] = defaultdict(Decimal)
        self._vendor_base: tuple[float, dict[str, tuple[Decimal, int]]] | None = None
        self._vendor_settled: dict[str, tuple[Decimal, int]] = defaultdict(lambda: (Decimal(0), 0))
        self._breakers: dict[str, CircuitBreaker] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    # public -----------------------------------------------------------------------------------
    async def route(
        self,
        pool: Sequence[ModelSpec],
        need: Need,
        context: CallContext,
        tallies: dict[str, Any],
        settings: RoutingSettings,
        rng: Any = None,
    ) -> tuple[Decision, Reservation | None]:
        """Choose the next model under every rule and reserve its maximum cost, atomically."""
        async with self._lock():
            snapshot = await self._snapshot(context)
            decision = choose(pool, need, tallies, settings, self.rules(context.data_class, snapshot), rng)
            if decision.chosen is None:
                _raise_if_budget_blocked(decision.rejected)
                return decision, None
            spec = next(s for s in pool if s.id == decision.chosen)
            return decision, self._reserve(spec, max_call_cost(spec, need), context)

    async def admit(self, spec: ModelSpec, need: Need, context: CallContext) -> Reservation:
        """Admit a call to one given model (evaluators, the gateway server) or raise why not."""
        async with self._lock():
            snapshot = await self._snapshot(context)
            for rule in self.rules(context.data_class, snapshot):
                if (denial := rule(spec, need)) is not None:
                    _raise_if_budget_blocked({spec.id: denial})
                    raise NoEligibleModel({spec.id: f"{denial.rule}: {denial.reason}"})
            return self._reserve(spec, max_call_cost(spec, need), context)

    async def run(self, reservation: Reservation, call: Callable[[], Awaitable[T]]) -> T:
        """Make the reserved call; settle its actual cost, or release the reservation if it fails."""
        try:
            result = await call()
        except RetryableProviderError:
            await self.settle(reservation, Decimal(0), vendor_ok=False)
            raise
        except BaseException:
            await self.settle(reservation, Decimal(0), vendor_ok=True)
            raise
        await self.settle(reservation, getattr(result, "cost", Decimal(0)), vendor_ok=True)
        return result

    async def settle(self, reservation: Reservation, cost: Decimal, *, vendor_ok: bool) -> None:
        async with self._lock():
            if self._reservations.pop(reservation.id, None) is None:
                return
            for scope in reservation.scopes:
                self._settled[scope] += cost
            spec = reservation.spec
            if spec.hosting == "api":
                spent, calls = self._vendor_settled[spec.vendor]
                self._vendor_settled[spec.vendor] = (spent + cost, calls + 1)
            self._breaker(spec.vendor).record(self.clock(), vendor_ok)

    def rules(self, data_class: str, snapshot: Snapshot) -> list[Rule]:
        rules = [
            residency_rule(data_class, self.policy.data_classes.get(data_class)),
            breaker_rule(snapshot.open_vendors),
            budget_rule(snapshot.budgets),
        ]
        if self.policy.vendor_share is not None:
            rules.append(share_cap_rule(self.policy.vendor_share, snapshot))
        return rules

    def residency_allows(self, spec: ModelSpec, data_class: str) -> bool:
        return residency_rule(data_class, self.policy.data_classes.get(data_class))(spec, Need()) is None

    @property
    def in_flight(self) -> int:
        return len(self._reservations)

    # state ------------------------------------------------------------------------------------
    @asynccontextmanager
    async def _lock(self) -> AsyncIterator[None]:
        loop_id = id(asyncio.get_running_loop())  # one lock per event loop: sync wrappers make new loops
        lock = self._locks.setdefault(loop_id, asyncio.Lock())
        async with lock:
            yield

    def _reserve(self, spec: ModelSpec, amount: Decimal, context: CallContext) -> Reservation:
        reservation = Reservation(next(self._ids), spec, amount, tuple(key for key, _, _ in self._scopes(context)))
        self._reservations[reservation.id] = reservation
        self._breaker(spec.vendor).on_dispatch(self.clock())
        return reservation

    def _breaker(self, vendor: str) -> CircuitBreaker:
        if vendor not in self._breakers:
            self._breakers[vendor] = CircuitBreaker(self.policy.circuit_breaker)
        return self._breakers[vendor]

    async def _snapshot(self, context: CallContext) -> Snapshot:
        now = self.clock()
        budgets = [
            BudgetState(key.split(":")[0], limit, await self._committed(key, load))
            for key, limit, load in self._scopes(context)
        ]
        spend, calls = await self._vendor_committed(now)
        open_vendors = {v: b.describe(now) for v, b in self._breakers.items() if not b.allows(now)}
        return Snapshot(spend, calls, tuple(budgets), open_vendors)

    def _scopes(self, ctx: CallContext) -> Iterator[tuple[str, Decimal, Callable[[], Awaitable[Decimal]]]]:
        b, (day, day_start) = self.policy.budgets, self._day()
        if b.per_run_usd is not None:
            yield f"run:{ctx.run_id}", b.per_run_usd, lambda: self._spent(run_id=ctx.run_id)
        if b.per_task_usd is not None:
            yield f"task:{ctx.run_id}:{ctx.task_id}", b.per_task_usd, lambda: self._spent(task_id=ctx.task_id)
        if b.per_day_usd is not None:
            yield f"day:{day}", b.per_day_usd, lambda: self._spent(since=day_start)
        tenant_limit = b.per_tenant_day_usd.get(ctx.tenant, b.default_tenant_day_usd)
        if tenant_limit is not None:
            yield f"tenant:{ctx.tenant}:{day}", tenant_limit, lambda: self._spent(since=day_start, tenant=ctx.tenant)

    def _day(self) -> tuple[str, float]:
        local = datetime.fromtimestamp(self.clock(), ZoneInfo(self.policy.timezone))
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.date().isoformat(), start.timestamp()

    async def _spent(self, **where: Any) -> Decimal:
        rows = await self.ledger.spend_by("vendor", **where)
        return sum((r.cost for r in rows.values()), Decimal(0))

    async def _committed(self, scope: str, load: Callable[[], Awaitable[Decimal]]) -> Decimal:
        base = self._baselines.get(scope)
        if base is None or self.clock() - base.loaded_at > self.refresh_s:
            base = self._baselines[scope] = _Baseline(self.clock(), await load())
            self._settled[scope] = Decimal(0)  # the ledger now includes what we had settled
        reserved = sum((r.amount for r in self._reservations.values() if scope in r.scopes), Decimal(0))
        return base.amount + self._settled[scope] + reserved

    async def _vendor_committed(self, now: float) -> tuple[dict[str, Decimal], dict[str, int]]:
        cap = self.policy.vendor_share
        if cap is None:
            return {}, {}
        if self._vendor_base is None or now - self._vendor_base[0] > self.refresh_s:
            rows = await self.ledger.spend_by("vendor", since=now - cap.window_hours * 3600, api_only=True)
            self._vendor_base = (now, {v: (r.cost, r.calls) for v, r in rows.items()})
            self._vendor_settled.clear()
        spend: dict[str, Decimal] = defaultdict(Decimal)
        calls: dict[str, int] = defaultdict(int)
        for source in (self._vendor_base[1], self._vendor_settled):
            for vendor, (cost, n) in source.items():
                spend[vendor] += cost
                calls[vendor] += n
        for r in self._reservations.values():
            if r.spec.hosting == "api":
                spend[r.spec.vendor] += r.amount
                calls[r.spec.vendor] += 1
        return dict(spend), dict(calls)


def _raise_if_budget_blocked(rejected: dict[str, Denial] | Any) -> None:
    blocked = [d for d in rejected.values() if d.rule == "budget"]
    if blocked:
        tightest = min(blocked, key=lambda d: Decimal(str(d.values["needed"])))
        v = tightest.values
        raise BudgetExceeded(
            str(v["budget"]), Decimal(str(v["limit"])), Decimal(str(v["remaining"])), Decimal(str(v["needed"]))
        )


class GovernedGateway:
    """A gateway wrapper: every call is admitted by the governor, reserved, and settled."""

    def __init__(self, gateway: Completer, governor: Governor) -> None:
        self.gateway, self.governor, self.catalog = gateway, governor, gateway.catalog

    async def complete(self, request: CompletionRequest) -> Completion:
        ctx = request.context
        need = Need(
            task_kind=ctx.task_kind,
            data_class=ctx.data_class,
            input_tokens=sum(estimate_tokens(m.content) for m in request.messages),
            max_tokens=request.max_tokens,
        )
        reservation = await self.governor.admit(self.catalog[request.model], need, ctx)
        return await self.governor.run(reservation, lambda: self.gateway.complete(request))
