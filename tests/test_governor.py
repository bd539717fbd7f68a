"""The governor: budgets reserved before calls, shares, residency, circuit breakers, failover.

The 'calls' here are governed coroutines returning a cost: the governor's accounting is under
test, not a model. End-to-end tests through real servers are in test_policy_e2e.py.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polycascade import BudgetExceeded, NoEligibleModel, ProviderUnavailable
from polycascade.governor import Governor
from polycascade.ledger import CallRecord, MemoryLedger, new_call_id
from polycascade.policies.config import Budgets, CircuitBreakerConfig, DataClassRule, Policy, ShareCap
from polycascade.policies.routing import Need, RoutingSettings, max_call_cost
from polycascade.types import CallContext

from .conftest import make_spec

CN = make_spec("cn-cheap", "0.1", vendor="DeepSeek", jurisdiction="CN")
FR = make_spec("fr-mid", "0.2", vendor="Mistral", jurisdiction="FR")
US = make_spec("us-mid", "0.3", vendor="OpenAI", jurisdiction="US")
JP = make_spec("jp-host", "0.4", vendor="Anthropic", jurisdiction="US", host_jurisdiction="JP")
LOCAL = make_spec("local", "0", vendor="Hugging Face", host_jurisdiction="self", hosting="self_hosted", quality=0.3)
POOL = [CN, FR, US, JP, LOCAL]
NEED = Need(input_tokens=1000, max_tokens=1000)
SETTINGS = RoutingSettings(threshold=0.5)
CLASSES = {
    "public": DataClassRule(),
    "internal": DataClassRule(vendor_jurisdictions=["US", "EU", "JP"], host_jurisdictions=["US", "EU", "JP"]),
    "confidential": DataClassRule(host_jurisdictions=["JP"]),
    "confidential-fr": DataClassRule(vendor_jurisdictions=["FR"], host_jurisdictions=["FR"]),
}


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def governor(clock: Clock | None = None, ledger: MemoryLedger | None = None, **policy: object) -> Governor:
    fields: dict[str, object] = {"name": "t", "data_classes": CLASSES, **policy}
    return Governor(Policy(**fields), ledger or MemoryLedger(), clock=clock or Clock())  # type: ignore[arg-type]


def ctx(data_class: str = "public", run: str = "r", task: str = "t", tenant: str = "default") -> CallContext:
    return CallContext(run_id=run, task_id=task, data_class=data_class, tenant=tenant)


@dataclass
class Paid:
    cost: Decimal


async def test_budget_is_reserved_before_the_call_and_settled_after() -> None:
    g = governor(budgets=Budgets(per_run_usd=Decimal("0.001")))
    worst = max_call_cost(CN, NEED)  # 0.0003
    first = await g.route([CN], NEED, ctx(), {}, SETTINGS)
    second = await g.route([CN], NEED, ctx(), {}, SETTINGS)
    third = await g.route([CN], NEED, ctx(), {}, SETTINGS)
    assert all(r is not None and r.amount == worst for _, r in (first, second, third))
    with pytest.raises(BudgetExceeded) as info:
        await g.route([CN], NEED, ctx(), {}, SETTINGS)
    assert (info.value.budget, info.value.limit) == ("run", Decimal("0.001"))
    assert info.value.remaining == Decimal("0.001") - 3 * worst and info.value.needed == worst
    assert "budget 'run' exceeded" in str(info.value)
    assert first[1] is not None
    await g.run(first[1], lambda: _paid(Decimal("0.0001")))  # settles below its reservation
    assert (await g.route([CN], NEED, ctx(), {}, SETTINGS))[1] is not None


async def _paid(cost: Decimal) -> Paid:
    return Paid(cost)


async def test_a_failed_call_releases_its_reservation() -> None:
    g = governor(budgets=Budgets(per_run_usd=Decimal("0.0004")))
    _, reservation = await g.route([CN], NEED, ctx(), {}, SETTINGS)
    assert reservation is not None and len(g.accounts.reservations) == 1  # type: ignore[attr-defined]

    async def fails() -> Paid:
        raise ProviderUnavailable("down", model="cn-cheap", status=503)

    with pytest.raises(ProviderUnavailable):
        await g.run(reservation, fails)
    assert not g.accounts.reservations  # type: ignore[attr-defined]
    assert (await g.route([CN], NEED, ctx(), {}, SETTINGS))[1] is not None


async def test_routing_falls_back_to_a_model_that_fits_the_budget() -> None:
    g = governor(budgets=Budgets(per_task_usd=Decimal("0.0005")))
    strong = make_spec("strong", "1", quality=0.95, vendor="OpenAI")
    decision, _ = await g.route([strong, CN], NEED, ctx(), {"cn-cheap": _fails(6)}, SETTINGS)
    assert decision.chosen == "cn-cheap"
    assert decision.rejected["strong"].rule == "budget"
    assert decision.rejected["strong"].values["budget"] == "task"


def _fails(n: int):  # type: ignore[no-untyped-def]
    from polycascade.ledger import Tally

    return Tally(0, n)


async def test_share_cap_counts_settled_spend_and_in_flight_reservations() -> None:
    ledger = MemoryLedger()
    clock = Clock()
    for vendor, cost in [("DeepSeek", "3"), ("Mistral", "1"), ("OpenAI", "1")]:
        await ledger.write(CallRecord(new_call_id(), "m", vendor, "XX", "ok", cost=Decimal(cost), ts=clock.now - 60))
    g = governor(clock, ledger, vendor_share=ShareCap(max_share=0.5, min_volume_usd=Decimal("1")))
    decision, _ = await g.route([CN, FR], NEED, ctx(), {}, SETTINGS)
    assert decision.chosen == "fr-mid"
    denial = decision.rejected["cn-cheap"]
    assert denial.rule == "vendor_share" and denial.values["vendor"] == "DeepSeek" and denial.values["share"] > 0.5


async def test_spend_outside_the_window_does_not_count() -> None:
    ledger, clock = MemoryLedger(), Clock()
    await ledger.write(
        CallRecord(new_call_id(), "m", "DeepSeek", "CN", "ok", cost=Decimal(9), ts=clock.now - 25 * 3600)
    )
    g = governor(clock, ledger, vendor_share=ShareCap(max_share=0.5, min_volume_usd=Decimal("1")))
    assert (await g.route([CN, FR], NEED, ctx(), {}, SETTINGS))[0].chosen == "cn-cheap"


async def test_shares_do_not_bind_below_the_minimum_volume() -> None:
    g = governor(vendor_share=ShareCap(max_share=0.5, min_volume_usd=Decimal("0.001")))
    chosen = [(await g.route([CN, FR, US], NEED, ctx(), {}, SETTINGS))[0].chosen for _ in range(4)]
    # each call commits $0.0003: until $0.001 is committed the cheapest goes freely (four calls,
    # the fourth crossing the threshold); from then on DeepSeek at 100% is over the cap
    assert chosen == ["cn-cheap", "cn-cheap", "cn-cheap", "cn-cheap"]
    assert (await g.route([CN, FR, US], NEED, ctx(), {}, SETTINGS))[0].chosen == "fr-mid"


@pytest.mark.parametrize(
    ("data_class", "allowed"),
    [
        ("public", {"cn-cheap", "fr-mid", "us-mid", "jp-host", "local"}),
        ("internal", {"fr-mid", "us-mid", "jp-host", "local"}),  # EU covers FR; CN is not listed
        ("confidential", {"jp-host", "local"}),
        ("secret", set()),  # a class the policy does not define: fail closed
    ],
)
async def test_residency(data_class: str, allowed: set[str]) -> None:
    g = governor()
    assert {m.id for m in POOL if g.residency_allows(m, data_class)} == allowed


async def test_unknown_jurisdiction_is_denied_even_by_a_wildcard() -> None:
    g = governor()
    mystery = make_spec("mystery", "0.01", vendor="unknown", jurisdiction="??")
    assert not g.residency_allows(mystery, "public")


async def test_a_fixed_model_is_admitted_or_refused_with_the_reason() -> None:
    g = governor()
    with pytest.raises(NoEligibleModel, match="residency"):
        await g.admit(CN, NEED, ctx("confidential"))
    assert (await g.admit(JP, NEED, ctx("confidential"))).spec is JP


async def test_the_circuit_breaker_opens_fails_over_and_probes_after_cooldown() -> None:
    clock = Clock()
    g = governor(clock, circuit_breaker=CircuitBreakerConfig(failure_rate=0.5, min_calls=4, window_s=60, cooldown_s=30))

    async def fails() -> Paid:
        raise ProviderUnavailable("down", model="cn-cheap", status=503)

    for _ in range(4):
        reservation = await g.admit(CN, NEED, ctx())
        with pytest.raises(ProviderUnavailable):
            await g.run(reservation, fails)
    decision, _ = await g.route([CN, FR], NEED, ctx(), {}, SETTINGS)
    assert decision.chosen == "fr-mid" and decision.rejected["cn-cheap"].rule == "circuit_breaker"
    clock.now += 31
    probe = await g.route([CN, FR], NEED, ctx(), {}, SETTINGS)
    assert probe[0].chosen == "cn-cheap"  # half-open: one probe
    assert (await g.route([CN, FR], NEED, ctx(), {}, SETTINGS))[0].chosen == "fr-mid"  # not two
    assert probe[1] is not None
    await g.run(probe[1], lambda: _paid(Decimal(0)))
    assert (await g.route([CN, FR], NEED, ctx(), {}, SETTINGS))[0].chosen == "cn-cheap"  # closed again


async def test_daily_budgets_follow_the_policy_timezone() -> None:
    clock = Clock(1_750_000_000.0 - 1_750_000_000.0 % 86400 + 15 * 3600 - 60)  # 23:59 in Tokyo
    g = governor(clock, timezone="Asia/Tokyo", budgets=Budgets(per_day_usd=Decimal("0.0003")))
    assert (await g.route([CN], NEED, ctx(), {}, SETTINGS))[1] is not None
    with pytest.raises(BudgetExceeded, match="'day'"):
        await g.route([CN], NEED, ctx(), {}, SETTINGS)
    clock.now += 120  # 00:01 in Tokyo: a new day
    assert (await g.route([CN], NEED, ctx(), {}, SETTINGS))[1] is not None


async def test_tenant_budgets_are_separate() -> None:
    g = governor(budgets=Budgets(per_tenant_day_usd={"acme": Decimal("0.0003")}, default_tenant_day_usd=Decimal("1")))
    await g.route([CN], NEED, ctx(tenant="acme"), {}, SETTINGS)
    with pytest.raises(BudgetExceeded, match="'tenant'"):
        await g.route([CN], NEED, ctx(tenant="acme"), {}, SETTINGS)
    assert (await g.route([CN], NEED, ctx(tenant="other"), {}, SETTINGS))[1] is not None


# -- properties: random concurrent streams never break a budget, residency, or the share cap -----

request = st.tuples(
    st.sampled_from(["public", "internal", "confidential", "undefined"]),
    st.booleans(),  # the provider fails
    st.integers(min_value=0, max_value=3),  # how long the call takes, in event-loop turns
    st.sampled_from(["0.25", "0.5", "1"]),  # actual cost as a fraction of the reserved maximum
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(request, min_size=1, max_size=80),
    budget=st.one_of(st.none(), st.integers(min_value=1, max_value=40)),
    seed=st.integers(0, 99),
)
def test_random_concurrent_streams_keep_every_limit(
    requests: list[tuple[str, bool, int, str]], budget: int | None, seed: int
) -> None:
    asyncio.run(_stream(requests, None if budget is None else Decimal(budget) / 10_000, seed))


async def _stream(requests: list[tuple[str, bool, int, str]], budget: Decimal | None, seed: int) -> None:
    cap = ShareCap(max_share=0.4, min_volume_usd=Decimal("0.0005"))
    g = governor(vendor_share=cap, budgets=Budgets(per_run_usd=budget))
    rng = random.Random(seed)
    in_flight: dict[str, tuple[str, Decimal]] = {}  # our own book, independent of the governor's
    settled: list[tuple[str, Decimal]] = []

    def committed() -> tuple[dict[str, Decimal], Decimal]:
        by_vendor: dict[str, Decimal] = {}
        for vendor, amount in [*settled, *in_flight.values()]:
            if vendor:
                by_vendor[vendor] = by_vendor.get(vendor, Decimal(0)) + amount
        return by_vendor, sum(by_vendor.values(), Decimal(0))

    async def one(data_class: str, fails: bool, turns: int, fraction: str) -> None:
        try:
            decision, reservation = await g.route(POOL, NEED, ctx(data_class), {}, RoutingSettings(explore=True), rng)
        except BudgetExceeded:
            assert budget is not None
            return
        if reservation is None:
            assert data_class == "undefined" or decision.rejected
            return
        spec = reservation.spec
        assert g.residency_allows(spec, data_class), f"{spec.id} got {data_class} data"
        vendor = spec.vendor if spec.hosting == "api" else ""
        before = committed()[1]
        in_flight[reservation.id] = (vendor, reservation.amount)
        by_vendor, total = committed()
        if vendor and before >= cap.min_volume_usd and before > 0:  # the cap binds: the admission kept it
            assert by_vendor[vendor] <= Decimal(str(cap.max_share)) * total, (vendor, by_vendor, total)

        async def call() -> Paid:
            for _ in range(turns):
                await asyncio.sleep(0)
            if fails:
                raise ProviderUnavailable("down", model=spec.id)
            return Paid(reservation.amount * Decimal(fraction))

        try:
            paid = await g.run(reservation, call)
            settled.append((vendor, paid.cost))
        except ProviderUnavailable:
            pass
        finally:
            del in_flight[reservation.id]

    await asyncio.gather(*(one(*r) for r in requests))
    if budget is not None:
        spent = sum((c for _, c in settled), Decimal(0))
        assert spent <= budget, f"spent {spent} of a {budget} budget"
