"""Agreement plans: the front holds the plan a brute-force search finds, for any prompt length and value."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polycascade.catalog import ModelSpec
from polycascade.policies.agreement import Candidate, KindRecord, PairRecord, _Odds, best_plan
from polycascade.policies.routing import Need, RoutingSettings, choose

from .conftest import make_spec


def candidates(rng: random.Random, n: int) -> tuple[Candidate, ...]:
    return tuple(
        Candidate(f"m{i}", f"v{rng.randrange(4)}", rng.uniform(0.2, 0.95), rng.uniform(0, 1e-5), rng.uniform(0, 1e-3))
        for i in range(n)
    )


def record(rng: random.Random, pool: tuple[Candidate, ...], pooled: KindRecord | None = None) -> KindRecord:
    pairs = {}
    for a, b in itertools.combinations(sorted(c.model for c in pool), 2):
        if rng.random() < 0.7:  # some pairs were never recorded: independent estimates for those
            tasks = rng.randrange(1, 300)
            disagree = rng.randrange(tasks + 1)
            right = {c.model: rng.uniform(0, disagree) for c in pool}
            settled = {c: rng.uniform(0, r) for c, r in right.items()}
            unsettled = {c: rng.uniform(0, disagree - s) for c, s in settled.items()}
            after = {(c.model, d.model): rng.uniform(0, unsettled[c.model]) for c in pool for d in pool if c != d}
            pairs[(a, b)] = PairRecord(
                tasks, rng.uniform(0, tasks - disagree), disagree, right, settled, unsettled, after
            )
    return KindRecord(pairs, accuracy={c.model: rng.uniform(0.2, 0.9) for c in pool}, pooled=pooled)


def brute_force(pool, answers, rec, value, tokens, rungs, s):  # every plan, spelled out
    odds = _Odds(rec, s)

    def cost(c):
        return c.input_price * tokens + c.fixed_cost

    def arbitrated(a, b, left):  # (P(a ≠ b, then right), E[cost of the arbiters]) for each way to settle a ≠ b
        plans = []
        for c in pool:
            if c in (a, b):
                continue
            plans.append((odds.right_when_disputed(a, b, c), odds.disputed(a, b) * cost(c)))
            for d in pool if left >= 2 else ():
                if d not in (a, b, c):
                    p = odds.settled_right(a, b, c) + odds.right_after(a, b, c, d)
                    plans.append((p, odds.disputed(a, b) * cost(c) + odds.unsettled(a, b, c) * cost(d)))
        return plans

    plans = []  # worth of each plan
    if len(answers) == 3:
        a, b, c = answers
        unsettled = odds.unsettled(a, b, c)
        plans.append(value * odds.right_unsettled(a, b, c) / unsettled)
        plans += [value * odds.right_after(a, b, c, d) / unsettled - cost(d) for d in pool]
    elif len(answers) == 2:
        a, b = answers
        disputed = odds.disputed(a, b)
        plans.append(value * odds.right_when_disputed(a, b, b) / disputed)
        plans += [(value * p - k) / disputed for p, k in arbitrated(a, b, rungs)]
    elif len(answers) == 1:
        (a,) = answers
        plans.append(value * a.p_pass)
        for b in pool:
            if b.vendor == a.vendor:
                continue
            agree = odds.agree_right(a, b)
            plans.append(value * (agree + odds.right_when_disputed(a, b, b)) - cost(b))
            if rungs >= 2:
                plans += [value * (agree + p) - cost(b) - k for p, k in arbitrated(a, b, rungs - 1)]
    else:
        plans += [value * c.p_pass - cost(c) for c in pool]
        for a, b in itertools.permutations(pool, 2):
            if a.vendor != b.vendor and rungs >= 3:
                agree = odds.agree_right(a, b)
                plans += [value * (agree + p) - cost(a) - cost(b) - k for p, k in arbitrated(a, b, rungs - 2)]
    return max(plans)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), stage=st.sampled_from([0, 1, 2, 3]), rungs=st.sampled_from([1, 2, 3, 4]))
def test_the_front_holds_a_plan_worth_the_most(seed: int, stage: int, rungs: int) -> None:
    rng = random.Random(seed)
    everyone = candidates(rng, 9)
    answers, pool = everyone[:stage], everyone[stage:]
    if stage >= 2 and answers[0].vendor == answers[1].vendor:
        answers = (answers[0], answers[1]._replace(vendor="other"), *answers[2:])
    rec = record(rng, everyone, pooled=record(rng, everyone))
    value = rng.uniform(0.001, 0.05)
    for tokens in (0, 10, 500, 3_000, 100_000):
        plan = best_plan(pool, answers, rec, value=value, prompt_tokens=tokens, rungs_left=rungs, prior_tasks=4)
        assert plan.value == pytest.approx(
            brute_force(pool, answers, rec, value, tokens, rungs, 4), rel=1e-9, abs=1e-12
        )


def test_recorded_disputes_steer_the_arbiter_away_from_a_model_that_is_only_good_on_average() -> None:
    flash = Candidate("flash", "Google", 0.7, 0.0, 0.0001)
    deep = Candidate("deep", "DeepSeek", 0.55, 0.0, 0.0002)
    phi = Candidate("phi", "Microsoft", 0.45, 0.0, 0.0002)
    pro = Candidate("pro", "Google", 0.75, 0.0, 0.002)
    pool = (flash, pro)
    answers = (deep, phi)
    optimistic = best_plan(pool, answers, None, value=0.01, prompt_tokens=0, rungs_left=1, prior_tasks=4)
    assert optimistic.calls == ("flash",)  # independent errors: flash is as good as ever after a dispute
    # recorded: when deep and phi disagreed, flash was right 40% of the time and pro 70%
    disputes = PairRecord(1000, 200, 600, {"flash": 240, "pro": 420, "deep": 150, "phi": 120})
    rec = KindRecord({("deep", "phi"): disputes})
    informed = best_plan(pool, answers, rec, value=0.01, prompt_tokens=0, rungs_left=1, prior_tasks=4)
    assert informed.calls == ("pro",) and informed.p_correct == pytest.approx((420 + 4 * 0.7525 * 0.75) / 603.01)


def test_a_sure_answer_is_kept_unless_a_correct_one_is_worth_checking_it() -> None:
    sure = Candidate("sure", "A", 0.97, 0.0, 0.001)
    other = Candidate("other", "B", 0.6, 0.0, 0.001)
    best = Candidate("best", "C", 0.99, 0.0, 0.01)
    plan = best_plan((other, best), (sure,), None, value=0.01, prompt_tokens=100, rungs_left=2, prior_tasks=4)
    assert plan.calls == () and plan.expected_cost == 0 and "unverified" in plan.describe()
    worth_checking = best_plan((other, best), (sure,), None, value=10, prompt_tokens=100, rungs_left=2, prior_tasks=4)
    assert worth_checking.calls == ("other", "best")  # a cheap check, and the best model only if they disagree
    assert worth_checking.p_correct == pytest.approx(0.97 * 0.6 + (1 - 0.97 * 0.6) * 0.99)


def sure_answer_so_far() -> tuple[list[ModelSpec], Need]:
    """A pool of three, and the need after "sure" (rated 0.97) answered under agreement."""
    pool = [
        make_spec("sure", "0.1", 0.97, "A"),
        make_spec("other", "0.1", 0.6, "B"),
        make_spec("best", "10", 0.99, "C"),
    ]
    return pool, Need(input_tokens=500, max_tokens=200, by_agreement=True, tried=frozenset({"sure"}), answers=("sure",))


def test_routing_by_worth_stops_when_no_call_is_worth_its_cost() -> None:
    (sure, other, best), need = sure_answer_so_far()
    need = replace(need, independent_of=frozenset({"A"}), confirming=0.97, rungs_left=2)
    decision = choose([sure, other, best], need, {}, RoutingSettings(answer_value=0.0001))
    assert decision.chosen is None and decision.stop and "keep the answer so far" in decision.reason
    decision = choose([sure, other, best], need, {}, RoutingSettings(answer_value=10.0))
    assert decision.chosen == "other" and not decision.stop and "worth $10" in decision.reason
    assert decision.estimate is not None and decision.estimate.expected_total > decision.estimate.call_cost


def test_a_large_pool_is_searched_through_a_shortlist_of_efficient_candidates() -> None:
    rng = random.Random(3)
    pool = candidates(rng, 2_000)
    plan = best_plan(pool, (), None, value=0.02, prompt_tokens=800, rungs_left=3, prior_tasks=4)
    assert plan.calls and plan.considered < 24**3 + 24

    def cost(c: Candidate) -> float:
        return c.input_price * 800 + c.fixed_cost

    for model in plan.calls:  # every model asked is one no cheaper model matches
        chosen = next(c for c in pool if c.model == model)
        assert not any(cost(c) < cost(chosen) and c.p_pass >= chosen.p_pass for c in pool)


def test_a_thin_record_leans_on_the_pairs_record_over_every_kind() -> None:
    a, b, c = Candidate("a", "A", 0.6, 0, 0), Candidate("b", "B", 0.5, 0, 0), Candidate("c", "C", 0.8, 0, 0)
    # over every kind, c was right on 40% of a/b disputes, where independent errors predict 0.7 × 0.7 = 49%
    pooled = KindRecord({("a", "b"): PairRecord(1000, 200, 700, {"c": 280})}, accuracy={"a": 0.5, "b": 0.6, "c": 0.7})
    thin = KindRecord({("a", "b"): PairRecord(10, 3, 6, {"c": 6})}, pooled=pooled)
    target = (1 - 0.6 * 0.5) * 0.8 * (280 / 1000) / ((1 - 0.5 * 0.6) * 0.7)
    assert _Odds(thin, 100).right_when_disputed(a, b, c) == pytest.approx((6 + 100 * target) / 110)
    assert _Odds(KindRecord(), 100).right_when_disputed(a, b, c) == pytest.approx(0.7 * 0.8)  # nothing recorded


def test_the_decision_records_each_call_costed_as_the_plan_costed_it() -> None:
    (sure, other, best), need = sure_answer_so_far()
    record = KindRecord(output_tokens={"other": 10.0})  # "other" answers in 10 tokens, not the usual 100
    decision = choose([sure, other, best], need, {}, RoutingSettings(answer_value=10.0), agreement=record)
    chosen = decision.estimate
    assert chosen is not None and chosen.model == "other"
    assert chosen.call_cost == pytest.approx(float(other.input_price) * 500 + float(other.output_price) * 10)


def test_when_the_arbiter_settles_nothing_a_fourth_answer_is_asked_if_it_is_worth_it() -> None:
    a, b, c, d = (make_spec(m, "0.1", 0.6, v) for m, v in (("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")))
    # recorded: a and b disputed 100 of 200 tasks; c then matched neither on 40, and d was right on 36 of those
    disputes = PairRecord(200, 80, 100, {"c": 30}, {"c": 20}, {"c": 40}, {("c", "d"): 36})
    record = KindRecord({("a", "b"): disputes})
    need = Need(input_tokens=500, max_tokens=200, by_agreement=True, answers=("a", "b", "c"), rungs_left=1)
    need = replace(need, tried=frozenset(need.answers))
    asked = choose([a, b, c, d], need, {}, RoutingSettings(answer_value=1.0, pair_prior_tasks=0), agreement=record)
    assert asked.chosen == "d" and "ask d" in asked.reason and "P(correct) 0.90" in asked.reason
    kept = choose([a, b, c, d], need, {}, RoutingSettings(answer_value=1e-6, pair_prior_tasks=0), agreement=record)
    assert kept.chosen is None and kept.stop  # c's answer stands: right on (30 − 20) of the 40


def test_a_plan_may_end_with_a_fourth_model_on_a_three_way_split() -> None:
    cheap = [Candidate(m, v, p, 0.0, 1e-4) for m, v, p in (("a", "A", 0.6), ("b", "B", 0.6), ("c", "C", 0.3))]
    strong = Candidate("d", "D", 0.9, 0.0, 1e-2)
    # a and b disagree on half the tasks; c settles most of those; on the rest only d is any good
    pair = PairRecord(1000, 450, 500, {"c": 300, "d": 450}, {"c": 290}, {"c": 200}, {("c", "d"): 180})
    record = KindRecord({("a", "b"): pair})
    plan = best_plan((*cheap, strong), (), record, value=0.05, prompt_tokens=0, rungs_left=4, prior_tasks=0)
    assert plan.calls == ("a", "b", "c", "d") and "while answers disagree" in plan.describe()
    assert plan.p_correct == pytest.approx(0.45 + 0.29 + 0.18)
    assert plan.expected_cost == pytest.approx(2e-4 + 0.5 * 1e-4 + 0.2 * 1e-2)
    three = best_plan((*cheap, strong), (), record, value=0.05, prompt_tokens=0, rungs_left=3, prior_tasks=0)
    assert len(three.calls) <= 3  # max_rungs 3: no room for a fourth
