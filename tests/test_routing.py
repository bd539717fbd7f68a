"""Routing decisions are pure: same inputs and seed, same decision."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from polycascade.catalog import ModelSpec
from polycascade.ledger import Tally
from polycascade.policies.adequacy import Adequacy
from polycascade.policies.routing import Need, RoutingSettings, choose

from .conftest import make_spec


def spec(
    id: str, price: str, quality: float, vendor: str = "V", window: int = 8192, caps: frozenset[str] = frozenset()
) -> ModelSpec:
    return replace(make_spec(id, price, quality, vendor, window=window), capabilities=caps)


CHEAP, MID, STRONG = spec("cheap", "0.1", 0.7, "A"), spec("mid", "1", 0.8, "B"), spec("strong", "10", 0.95, "C")
POOL = [STRONG, CHEAP, MID]
NEED = Need(input_tokens=500, max_tokens=200)


def test_cheapest_adequate_model_first() -> None:
    decision = choose(POOL, NEED, {})
    assert decision.chosen == "cheap"
    assert next(c.model for c in decision.candidates) == "cheap"
    assert decision.to_dict()["candidates"][0]["adequate"] is True


def test_expected_total_counts_the_cost_of_escalating() -> None:
    decision = choose(POOL, NEED, {})
    by_model = {c.model: c for c in decision.candidates}
    strong, mid, cheap = by_model["strong"], by_model["mid"], by_model["cheap"]
    assert strong.expected_total == strong.call_cost
    assert abs(mid.expected_total - (mid.call_cost + (1 - mid.p_pass) * strong.expected_total)) < 1e-12
    assert abs(cheap.expected_total - (cheap.call_cost + (1 - cheap.p_pass) * mid.expected_total)) < 1e-12


def test_failures_in_the_ledger_lower_the_estimate_for_that_kind() -> None:
    decision = choose(POOL, NEED, {"cheap": Tally(0, 6)})
    assert decision.chosen == "mid"
    cheap = next(c for c in decision.candidates if c.model == "cheap")
    assert cheap.p_pass == Adequacy().posterior(CHEAP, Tally(0, 6)).mean < 0.5
    assert decision.to_dict()["candidates"][-1]["adequate"] in (True, False)


def test_rejections_carry_the_rule_and_values() -> None:
    small = spec("small", "0.01", 0.9, window=600)
    no_tools = spec("plain", "0.01", 0.9)
    need = Need(input_tokens=500, max_tokens=200, capabilities=frozenset({"tools"}))
    decision = choose([small, no_tools, spec("tooled", "1", 0.9, caps=frozenset({"tools"}))], need, {})
    assert decision.chosen == "tooled"
    assert decision.rejected["small"].rule in {"capability", "context_window"}
    assert decision.rejected["plain"].to_dict() == {
        "rule": "capability",
        "reason": "lacks tools",
        "values": {"missing": ["tools"]},
    }


def test_escalation_only_goes_to_stronger_models() -> None:
    p_mid = Adequacy().posterior(MID, None).mean
    decision = choose(POOL, Need(input_tokens=500, max_tokens=200, tried=frozenset({"mid"}), stronger_than=p_mid), {})
    assert decision.chosen == "strong"
    assert decision.rejected["cheap"].rule == "not_stronger"
    assert decision.rejected["mid"].rule == "tried"


def test_policy_rules_reject_with_reasons() -> None:
    from polycascade.policies.routing import Denial

    def no_vendor_a(s: ModelSpec, need: Need) -> Denial | None:
        return Denial("residency", "vendor A not allowed", {"vendor": s.vendor}) if s.vendor == "A" else None

    decision = choose(POOL, NEED, {}, rules=[no_vendor_a])
    assert decision.chosen == "mid"
    assert decision.rejected["cheap"].values == {"vendor": "A"}


def test_no_candidate_left() -> None:
    decision = choose([CHEAP], Need(tried=frozenset({"cheap"})), {})
    assert decision.chosen is None and decision.rejected["cheap"].rule == "tried"


def test_exploration_lets_a_new_cheap_model_earn_trust_deterministically() -> None:
    newcomer = spec("newcomer", "0.05", 0.3, "D")  # below the threshold on its prior alone
    settings_ = RoutingSettings(explore=True)
    chosen = [choose([*POOL, newcomer], NEED, {}, settings_, rng=random.Random(seed)).chosen for seed in range(200)]
    assert 0 < chosen.count("newcomer") < 200  # sometimes explored, not always
    assert set(chosen) <= {"newcomer", "cheap"}  # never an exploration above the greedy choice's cost
    again = [choose([*POOL, newcomer], NEED, {}, settings_, rng=random.Random(seed)).chosen for seed in range(200)]
    assert again == chosen
    assert choose([*POOL, newcomer], NEED, {}).chosen == "cheap"  # no exploration without it


@settings(max_examples=200, deadline=None)
@given(
    prices=st.lists(st.decimals(min_value="0.01", max_value="50", places=2), min_size=1, max_size=8),
    qualities=st.lists(st.floats(min_value=0.05, max_value=0.99), min_size=8, max_size=8),
    fails=st.lists(st.integers(min_value=0, max_value=20), min_size=8, max_size=8),
)
def test_the_choice_is_always_an_allowed_candidate_with_minimal_expected_cost(
    prices: list[Decimal], qualities: list[float], fails: list[int]
) -> None:
    pool = [spec(f"m{i}", str(p), qualities[i], vendor=f"V{i}") for i, p in enumerate(prices)]
    tallies = {f"m{i}": Tally(0, fails[i]) for i in range(len(pool))}
    decision = choose(pool, NEED, tallies)
    assert decision.chosen in {s.id for s in pool}
    adequate = [c for c in decision.candidates if c.p_pass >= 0.5]
    chosen = decision.estimate
    assert chosen is not None
    if adequate:
        assert chosen.expected_total <= min(c.expected_total for c in adequate) + 1e-15
    else:
        assert chosen.p_pass == max(c.p_pass for c in decision.candidates)


# answers verified by agreement: opinions priced with the escalation they may cause
WEAK, FAIR, SECOND = spec("weak", "0.05", 0.2, "W"), spec("fair", "0.1", 0.8, "F"), spec("second", "0.2", 0.8, "S")
ARBITER = spec("arbiter", "10", 0.95, "X")
BY_AGREEMENT = Need(input_tokens=500, max_tokens=200, rungs_left=3, by_agreement=True)


def test_a_first_opinion_is_priced_with_its_second_opinion_and_the_escalation() -> None:
    decision = choose([ARBITER, WEAK, FAIR, SECOND], BY_AGREEMENT, {})
    assert decision.chosen == "fair"  # not the cheapest call: "weak" would rarely be confirmed
    by = {c.model: c for c in decision.candidates}
    fair, second, arbiter = by["fair"], by["second"], by["arbiter"]
    confirmed = fair.p_pass * second.p_pass
    expected = fair.call_cost + second.call_cost + (1 - confirmed) * arbiter.call_cost
    assert abs(fair.expected_total - expected) < 1e-12
    assert "first opinion" in decision.reason


def test_a_second_opinion_is_any_other_vendor_worth_its_price_and_need_not_be_stronger() -> None:
    need = replace(BY_AGREEMENT, rungs_left=2, confirming=0.8, tried=frozenset({"fair"}), independent_of=frozenset("F"))
    decision = choose([ARBITER, WEAK, FAIR, SECOND], need, {})
    assert decision.chosen == "second" and "second opinion" in decision.reason
    assert "fair" in decision.rejected and "arbiter" not in decision.rejected


def test_on_the_last_rung_only_the_call_itself_counts() -> None:
    last = choose(POOL, replace(NEED, rungs_left=1), {})
    assert all(c.expected_total == c.call_cost for c in last.candidates)
    assert last.chosen == "cheap"  # still the cheapest adequate; the threshold guards quality
    assert choose(POOL, replace(BY_AGREEMENT, rungs_left=1), {}).reason.startswith("cheapest expected total")


def test_first_opinion_pricing_matches_brute_force_on_a_large_pool() -> None:
    rng = random.Random(5)
    pool = [
        spec(f"m{i}", f"{rng.uniform(0.01, 20):.4f}", rng.uniform(0.05, 0.95), f"V{rng.randrange(12)}")
        for i in range(60)
    ]
    decision = choose(pool, BY_AGREEMENT, {}, RoutingSettings(threshold=0.7))
    by = {c.model: c for c in decision.candidates}
    adequate = [c for c in decision.candidates if c.p_pass >= 0.7]

    def arbiter(floor: float) -> float:  # the cheapest adequate model stronger than both, else the strongest
        stronger = [c for c in decision.candidates if c.p_pass > floor]
        fit = [c for c in stronger if c in adequate]
        return (
            min(c.call_cost for c in fit) if fit else max(stronger, key=lambda c: c.p_pass).call_cost if stronger else 0
        )

    for a in by.values():
        seconds = [
            b.call_cost + (1 - a.p_pass * b.p_pass) * arbiter(max(a.p_pass, b.p_pass))
            for b in by.values()
            if b.vendor != a.vendor
        ]
        assert abs(a.expected_total - (a.call_cost + min(seconds))) < 1e-9 * max(1.0, a.expected_total)
    assert decision.chosen == min(by.values(), key=lambda c: (c.expected_total, -c.p_pass, c.model)).model
