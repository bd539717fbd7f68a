"""The governor applies a policy to every call: decide and reserve atomically, then settle.

    decision, reservation = await governor.route(pool, need, context, …)   # under one lock
    completion = await governor.run(reservation, lambda: gateway.complete(request))

Money is *committed* from the moment a call is admitted: its maximum cost (prompt tokens +
max_tokens at the model's price) is reserved against every budget and the vendor's share, and
replaced by the actual cost when the call settles (released on failure). Where committed money is
kept is the accounts' business (`_accounts`): in this process over any ledger, or in PostgreSQL,
shared by every worker, when the ledger is PostgreSQL. Over a ledger on disk a reservation is
also a ledger row in flight under the call's id, so a process killed mid-call leaves the money it
may have spent on record. Circuit breakers are always per process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from polycascade.policies.agreement import KindRecord
from polycascade.policies.breaker import CircuitBreaker
from polycascade.policies.config import Budgets, DataClassRule, ExchangeRate, Policy
from polycascade.policies.preferences import LatencyBook, LatencyEstimate
from polycascade.policies.redaction import redact_text
from polycascade.policies.routing import Decision, Denial, Need, RoutingSettings, Rule, choose, max_call_cost
from polycascade.policies.rules import (
    BudgetState,
    Snapshot,
    breaker_rule,
    budget_rule,
    memoised,
    placement_rules,
    share_cap_rule,
)
from polycascade.policies.rules import transfer as transfer_of

from . import telemetry
from ._accounts import Accounts, Reserved
from .catalog import ModelSpec
from .completer import Completer, in_flight_record
from .errors import BudgetExceeded, NoEligibleModel, PolycascadeError, RetryableProviderError
from .ledger import Ledger, MemoryLedger, Outcome, new_call_id
from .records import frozen, replace
from .tokens import prompt_size
from .types import CallContext, Completion, CompletionRequest

__all__ = ["DEFAULT_POLICY", "GovernedGateway", "Governor", "Reservation", "Why"]

T = TypeVar("T")
D = TypeVar("D")
DEFAULT_POLICY = Policy(
    name="default",
    description="no caps or budgets; the three standard data classes may go anywhere known",
    data_classes={"public": DataClassRule(), "internal": DataClassRule(), "confidential": DataClassRule()},
)


@frozen
class Reservation:
    id: str
    spec: ModelSpec
    amount: Decimal
    scopes: tuple[str, ...]
    limits: tuple[Decimal, ...] = ()
    transfer: Mapping[str, Any] | None = None  # data leaving the policy's home country, and its basis
    fx: Mapping[str, str] | None = None  # the yen rate budgets and reports used when this was reserved

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"reserved_usd": str(self.amount), "budgets": list(self.scopes)}
        if self.transfer is not None:
            found["cross_border"] = dict(self.transfer)
        if self.fx is not None:
            found["fx"] = dict(self.fx)
        return found

    def reserved(self) -> Reserved:
        api = self.spec.hosting == "api"
        return Reserved(self.id, self.spec.vendor, api, self.amount, self.scopes, self.limits)


@frozen
class Why(Mapping[str, Any]):
    """Why a call was made, as its attempt and the ledger keep it: the decision with its
    candidates and rejections, the policy, and what was reserved. A read-only mapping, rendered
    when first read (a SQL ledger reads it once, to store it; a backtest replays a million
    decisions into a ledger in memory and reads none)."""

    decision: Decision
    policy: str
    reservation: Reservation
    rendered: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def _dict(self) -> dict[str, Any]:
        if self.rendered is None:
            rendered = {**self.decision.to_dict(), "policy": self.policy, **self.reservation.to_dict()}
            object.__setattr__(self, "rendered", rendered)  # a cache: the value is fixed by the fields
            return rendered
        return self.rendered

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __eq__(self, other: object) -> bool:  # as a mapping: equal to a dict with the same items
        return isinstance(other, Mapping) and self._dict() == dict(other)

    __hash__ = None  # type: ignore[assignment]


LATENCY_SEED_ROWS = 50_000  # the latest calls latency is first learned from
_Scope = tuple[str, Decimal, Callable[[], Awaitable[Decimal]]]  # budget key, limit, load what was spent
RESERVE_TRIES = 16  # decisions in a row that another worker's reservation can overtake


class Governor:
    def __init__(
        self,
        policy: Policy = DEFAULT_POLICY,
        ledger: Ledger | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_s: float = 30.0,
    ) -> None:
        self.policy, self.ledger, self.clock = policy, ledger or MemoryLedger(), clock
        self.accounts: Accounts = self.ledger.accounts(clock, refresh_s)
        self.coupled = policy.vendor_share is not None  # a share cap weighs every vendor: decisions take turns
        self._breakers: dict[str, CircuitBreaker] = {}  # per process: each worker judges its own calls
        self._place_rules: dict[str, list[Rule]] = {}
        self._usd_budgets: tuple[str, Budgets] | None = None  # (day, yen budgets at its rate)
        self._tracked = {name for name, rule in policy.data_classes.items() if rule.cross_border_basis is not None}
        self._in_yen = policy.in_yen
        self.latency = LatencyBook()  # per process, like the breakers: seeded from the ledger when first asked
        self._latency_seeded = False

    # public -----------------------------------------------------------------------------------
    async def route(
        self,
        pool: Sequence[ModelSpec],
        need: Need,
        context: CallContext,
        tallies: dict[str, Any],
        settings: RoutingSettings,
        rng: Any = None,
        agreement: KindRecord | None = None,
    ) -> tuple[Decision, Reservation | None]:
        """Choose the next model under every rule and reserve its maximum cost, atomically: if another
        worker took the room the decision counted on, decide again on what is left."""

        def decide(snapshot: Snapshot) -> tuple[Decision, ModelSpec | None]:
            decision = choose(pool, need, tallies, settings, self.rules(context.data_class, snapshot), rng, agreement)
            if decision.chosen is None and not decision.stop:
                _raise_if_budget_blocked(decision.rejected)
            return decision, next((s for s in pool if s.id == decision.chosen), None)

        decision, reservation = await self._decided(context, need, decide)
        telemetry.count_denials(decision.rejected)
        return decision, reservation

    async def admit(self, spec: ModelSpec, need: Need, context: CallContext) -> Reservation:
        """Admit a call to one given model (evaluators, the gateway server) or raise why not."""

        def decide(snapshot: Snapshot) -> tuple[None, ModelSpec]:
            for rule in self.rules(context.data_class, snapshot):
                if (denial := rule(spec, need)) is not None:
                    _raise_if_budget_blocked({spec.id: denial})
                    raise NoEligibleModel({spec.id: f"{denial.rule}: {denial.reason}"})
            return None, spec

        _, reservation = await self._decided(context, need, decide)
        assert reservation is not None, "admit decides on one model: it reserves it or raises"
        return reservation

    async def run(self, reservation: Reservation, call: Callable[[], Awaitable[T]]) -> T:
        """Make the reserved call; settle its actual cost, or release the reservation if it fails."""
        try:
            result = await call()
        except RetryableProviderError as exc:
            await self.settle(reservation, Decimal(0), vendor_ok=False, outcome=type(exc).__name__)
            raise
        except PolycascadeError as exc:
            await self.settle(reservation, Decimal(0), vendor_ok=True, outcome=type(exc).__name__)
            raise
        except BaseException as exc:  # cancelled or broken mid-call: the request may have gone out
            await self.settle(reservation, reservation.amount, vendor_ok=True, outcome=type(exc).__name__)
            raise
        cost = getattr(result, "cost", Decimal(0))
        if getattr(result, "call_id", None) == reservation.id:  # its own row replaced the one in flight
            await self._release(reservation, cost, vendor_ok=True)
        else:  # reused (paid for before), or from a completer keeping no row under this id
            await self.settle(reservation, Decimal(0) if getattr(result, "replayed", False) else cost, vendor_ok=True)
        return result

    async def settle(
        self, reservation: Reservation, cost: Decimal, *, vendor_ok: bool, outcome: Outcome | None = None
    ) -> None:
        """End a reservation at `cost`. Its row in flight, if no call replaced it, is removed, or kept
        as `outcome` at `cost`."""
        if self.accounts.durable:
            await self.ledger.close_in_flight(reservation.id, outcome, cost)
        await self._release(reservation, cost, vendor_ok)

    async def _release(self, reservation: Reservation, cost: Decimal, vendor_ok: bool) -> None:
        if await self.accounts.release(reservation.reserved(), cost):
            self._breaker(reservation.spec.vendor).observe(self.clock(), vendor_ok)

    def rules(self, data_class: str, snapshot: Snapshot) -> list[Rule]:
        rules = list(self._places(data_class))  # the others only when something is at stake: they run per candidate
        if snapshot.open_vendors:
            rules.append(breaker_rule(snapshot.open_vendors))
        if snapshot.budgets:
            rules.append(budget_rule(snapshot.budgets))
        if self.policy.vendor_share is not None:
            rules.append(share_cap_rule(self.policy.vendor_share, snapshot))
        return rules

    def prepare(self, request: CompletionRequest, reservation: Reservation) -> CompletionRequest:
        """The request as it may leave under its reservation's call id: personal data masked per the
        data class, unless self-hosted; a call admitted without a routing decision (an evaluator's)
        records what was reserved and where its data went."""
        context = request.context
        if context.decision is None:
            context = replace(context, decision=self._reserved(reservation))
        rule = self.policy.data_classes.get(context.data_class)
        if rule is None or not rule.redact or reservation.spec.hosting == "self_hosted":
            return replace(request, context=context, call_id=reservation.id)
        messages = tuple(replace(m, content=redact_text(m.content, rule.redact)) for m in request.messages)
        return replace(request, context=context, messages=messages, call_id=reservation.id)

    def seed_latency(self, calls: Iterable[tuple[str, str, float, int]]) -> None:
        """Learn latency from these (model, kind, seconds, output tokens) instead of the ledger (a backtest's
        train split)."""
        now = self.clock()
        for model, kind, seconds, tokens in calls:
            self.latency.observe(model, kind, seconds, tokens, now)
        self._latency_seeded = True

    async def latencies(self, pool: Sequence[ModelSpec], kind: str) -> dict[str, LatencyEstimate]:
        """What each model's latency is expected to be on `kind` (for a request's preferences)."""
        if not self._latency_seeded:
            self._latency_seeded = True
            since = self.clock() - 12 * self.latency.half_life_s  # older calls weigh under 1/4096
            rows = await self.ledger.totals(
                "SELECT model, task_kind, latency_s, output_tokens, ts FROM {calls} "
                f"WHERE outcome = 'ok' AND latency_s > 0 AND ts >= ? ORDER BY ts LIMIT {LATENCY_SEED_ROWS}",
                since,
            )
            for model, row_kind, seconds, tokens, ts in rows:
                self.latency.observe(model, row_kind, float(seconds), int(tokens), float(ts))
        now = self.clock()
        return {spec.id: self.latency.estimate(spec.id, kind, now) for spec in pool}

    def observe_latency(self, model: str, kind: str, completion: Completion) -> None:
        if not completion.replayed:
            self.latency.observe(model, kind, completion.latency_s, completion.usage.output_tokens, self.clock())

    def residency_allows(self, spec: ModelSpec, data_class: str) -> bool:
        """Whether data of `data_class` may go to `spec` at all (`placement_rules`)."""
        return all(rule(spec, Need()) is None for rule in self._places(data_class))

    def _places(self, data_class: str) -> list[Rule]:
        """Where data may go depends only on the policy, the data class and the model: decided once per model."""
        if data_class not in self._place_rules:
            rule, home = self.policy.data_classes.get(data_class), self.policy.home_jurisdiction
            self._place_rules[data_class] = [memoised(r) for r in placement_rules(data_class, rule, home)]
        return self._place_rules[data_class]

    def _reserved(self, reservation: Reservation) -> dict[str, Any]:
        return {"policy": self.policy.name, **reservation.to_dict()}

    def _transfer(self, spec: ModelSpec, data_class: str) -> dict[str, Any] | None:
        sent = transfer_of(spec, self.policy.data_classes.get(data_class), self.policy.home_jurisdiction)
        return None if sent is None else {**sent, "policy": self.policy.name, "policy_version": self.policy.version}

    # state ------------------------------------------------------------------------------------
    async def _decided(
        self, context: CallContext, need: Need, decide: Callable[[Snapshot], tuple[D, ModelSpec | None]]
    ) -> tuple[D, Reservation | None]:
        """`decide` on a snapshot and reserve the model it chose, atomically; decided again while
        another worker has taken the room a decision counted on."""
        for _ in range(RESERVE_TRIES):
            async with self.accounts.exclusive(self.coupled):
                scopes = self._scopes(context)
                outcome, spec = decide(await self._snapshot(scopes, context.tenant))
                if spec is None:
                    return outcome, None
                amount = max_call_cost(spec, need)
                reservation, full = await self._reserve(spec, amount, scopes, context)
                if reservation is not None:
                    return outcome, reservation
        raise await self._no_room(full, scopes, amount)

    async def _reserve(
        self, spec: ModelSpec, amount: Decimal, scopes: list[_Scope], ctx: CallContext
    ) -> tuple[Reservation | None, str | None]:
        """The reservation, or None and the scope another worker filled since the snapshot."""
        keys, limits = tuple(key for key, _, _ in scopes), tuple(limit for _, limit, _ in scopes)
        transfer = self._transfer(spec, ctx.data_class) if ctx.data_class in self._tracked else None
        fx = self._rate().to_dict() if self._in_yen else None
        reservation = Reservation(new_call_id(), spec, amount, keys, limits, transfer, fx)
        row = None
        if self.accounts.durable:
            row = in_flight_record(spec, ctx, reservation.id, amount, self.clock(), self._reserved(reservation))
        if (full := await self.accounts.reserve(reservation.reserved(), row)) is not None:
            return None, full
        self._breaker(spec.vendor).on_dispatch(self.clock())
        return reservation, None

    async def _no_room(self, scope: str | None, scopes: list[_Scope], needed: Decimal) -> BudgetExceeded:
        """Decided again and again, and each time another worker had taken the room: the budget is spent."""
        key, limit, load = next(s for s in scopes if s[0] == scope)
        committed = await self.accounts.committed(key, load)
        return BudgetExceeded(key.split(":")[0], limit, limit - committed, needed)

    def _breaker(self, vendor: str) -> CircuitBreaker:
        if vendor not in self._breakers:
            self._breakers[vendor] = CircuitBreaker(self.policy.circuit_breaker)
        return self._breakers[vendor]

    async def _snapshot(self, scopes: list[_Scope], tenant: str = "default") -> Snapshot:
        now = self.clock()
        budgets = [
            BudgetState(key.split(":")[0], limit, await self.accounts.committed(key, load))
            for key, limit, load in scopes
        ]
        cap = self.policy.vendor_share
        spend, calls = await self.accounts.vendor_committed(now - cap.window_hours * 3600) if cap else ({}, {})
        open_vendors = {v: b.describe(now) for v, b in self._breakers.items() if not b.allows(now)}
        telemetry.observe_budgets((b.name, tenant, b.remaining) for b in budgets)
        telemetry.observe_breakers(self._breakers, open_vendors)
        return Snapshot(spend, calls, tuple(budgets), open_vendors)

    def _rate(self) -> ExchangeRate:
        """Today's yen rate (in the policy's time zone)."""
        return self.policy.rate_on(date.fromisoformat(self._day()[0]))

    def _budgets(self) -> Budgets:
        """The policy's budgets in USD: yen limits converted at today's rate (once a day)."""
        b = self.policy.budgets
        if not b.in_yen:
            return b
        day = self._day()[0]
        if self._usd_budgets is None or self._usd_budgets[0] != day:
            self._usd_budgets = (day, b.in_usd(self.policy.rate_on(date.fromisoformat(day)).jpy_per_usd))
        return self._usd_budgets[1]

    def _scopes(self, ctx: CallContext) -> list[_Scope]:
        """The budgets this call counts against: (key, limit, how to load what was spent)."""
        b = self._budgets()
        tenant_limit = b.per_tenant_day_usd.get(ctx.tenant, b.default_tenant_day_usd)
        daily = b.per_day_usd is not None or tenant_limit is not None
        day, day_start = self._day() if daily else ("", 0.0)  # time zones are slow: only when a day counts
        scopes: list[_Scope] = []
        if b.per_run_usd is not None:
            scopes.append((f"run:{ctx.run_id}", b.per_run_usd, lambda: self._spent(run_id=ctx.run_id)))
        if b.per_task_usd is not None:
            scopes.append(
                (f"task:{ctx.run_id}:{ctx.task_id}", b.per_task_usd, lambda: self._spent(task_id=ctx.task_id))
            )
        if b.per_day_usd is not None:
            scopes.append((f"day:{day}", b.per_day_usd, lambda: self._spent(since=day_start)))
        if tenant_limit is not None:
            scopes.append(
                (f"tenant:{ctx.tenant}:{day}", tenant_limit, lambda: self._spent(since=day_start, tenant=ctx.tenant))
            )
        return scopes

    def _day(self) -> tuple[str, float]:
        local = datetime.fromtimestamp(self.clock(), ZoneInfo(self.policy.timezone))
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.date().isoformat(), start.timestamp()

    async def _spent(self, **where: Any) -> Decimal:
        rows = await self.ledger.spend_by("vendor", **where)
        return sum((r.cost for r in rows.values()), Decimal(0))


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

    def missing_credentials(self, spec: ModelSpec) -> list[str]:
        return self.gateway.missing_credentials(spec)

    async def complete(self, request: CompletionRequest) -> Completion:
        ctx = request.context
        size = prompt_size(request.messages, request.tools, request.json_schema)
        need = Need(input_tokens=size.estimate, max_input_tokens=size.bound, max_tokens=request.max_tokens)
        spec = self.catalog[request.model]
        reservation = await self.governor.admit(spec, need, ctx)
        outbound = self.governor.prepare(request, reservation)
        return await self.governor.run(reservation, lambda: self.gateway.complete(outbound))
