"""Which model gets the next rung of a task: a pure function of candidates, history and need.

1. Reject candidates that cannot or may not take the call (capabilities, context window,
   already tried, not stronger than the rung that just failed, and every policy rule), each
   with the rule's name and the values it compared.
2. Estimate P(pass) per candidate from the ledger's verdicts (`Adequacy`).
3. Rank by expected total cost: this call, plus P(fail) × the expected cost of the best plan
   among stronger candidates (computed strongest-first, so it is exact for the ladder). On the
   last rung there is no plan after it: the call's own cost.
4. Choose the cheapest plan among candidates expected to be adequate (P(pass) ≥ threshold); if
   none is, the strongest. With exploration on, a Thompson sample may instead pick a candidate
   whose call costs no more than the greedy choice: new cheap models earn trust, safely.

When answers are verified by agreement (`Need.by_agreement`), no single answer can pass: the
first opinion is priced together with its cheapest second opinion, and a second opinion (for an
answer with P(pass) `Need.confirming`) with the chance P(disagree) ≈ 1 − q·p of paying for the
escalation too. Opinions are checks, not the final word, so the threshold does not filter them;
it applies to the escalation that settles a disagreement.

With `RoutingSettings.answer_value` (what a correct answer is worth), agreement-checked tasks are
routed by whole plans instead, each worth V·P(correct) − E[cost] (`policies.agreement`): the
plan decides independence and escalation, and may stop and keep the answers so far.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

from polycascade.catalog import ModelSpec
from polycascade.records import frozen, replace
from polycascade.types import Tally

from .adequacy import Adequacy
from .agreement import Candidate, KindRecord, best_plan
from .preferences import LatencyEstimate, Preferences, preference_denial

__all__ = ["Decision", "Denial", "Estimate", "Need", "RoutingSettings", "Rule", "choose", "routes_by_plan"]

PLAN_MAX_CALLS = 4  # a plan by worth asks at most a, b, an arbiter c and a fourth model d


@frozen
class Need:
    """What the next call needs."""

    input_tokens: int = 0  # the prompt's estimate: routing and context windows
    max_input_tokens: int | None = None  # the most it can count (None: input_tokens): what budgets reserve
    max_tokens: int = 512
    capabilities: frozenset[str] = frozenset()
    tried: frozenset[str] = frozenset()
    stronger_than: float | None = None  # P(pass) of the rung that just failed
    avoid_vendors: frozenset[str] = frozenset()  # failover: vendors that just failed this task
    independent_of: frozenset[str] = frozenset()  # a second opinion must come from another vendor
    min_context: int = 0  # after a context-window error: larger than the window that overflowed
    rungs_left: int | None = None  # answers the task may still get, this one included
    by_agreement: bool = False  # an answer passes only when another vendor's answer agrees
    confirming: float | None = None  # a second opinion for an answer with this P(pass)
    answers: tuple[str, ...] = ()  # models that answered this task, oldest first
    prefer: Preferences | None = None  # the request's own preferences: they only narrow
    latency: Mapping[str, LatencyEstimate] | None = None  # per candidate, when `prefer` asks


@frozen
class Denial:
    rule: str
    reason: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": self.reason, "values": dict(self.values)}


class Rule(Protocol):
    """A policy rule: `None` allows the model, a `Denial` says why not."""

    def __call__(self, spec: ModelSpec, need: Need) -> Denial | None: ...


class Estimate(NamedTuple):  # a tuple: built for every candidate of every decision
    model: str
    vendor: str
    p_pass: float
    call_cost: float
    expected_total: float

    def to_dict(self, threshold: float | None = None) -> dict[str, Any]:
        """Plain floats: estimates rank candidates, they are not money (every decision renders ten)."""
        rendered = {
            "model": self.model,
            "vendor": self.vendor,
            "p_pass": self.p_pass,
            "call_cost_usd": self.call_cost,
            "expected_total_usd": self.expected_total,
        }
        if threshold is not None:
            rendered["adequate"] = self.p_pass >= threshold
        return rendered


@frozen
class Decision:
    chosen: str | None
    reason: str
    candidates: tuple[Estimate, ...]
    rejected: Mapping[str, Denial]
    threshold: float = 0.5
    stop: bool = False  # no further call is worth its cost: keep the answers so far

    @property
    def estimate(self) -> Estimate | None:
        return next((c for c in self.candidates if c.model == self.chosen), None)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """What the ledger keeps: the `top` best-ranked candidates (and the chosen), every rejection."""
        shown = [c for i, c in enumerate(self.candidates) if i < top or c.model == self.chosen]
        return {
            "chosen": self.chosen,
            "stop": self.stop,
            "reason": self.reason,
            "threshold": self.threshold,
            "candidates": [c.to_dict(self.threshold) for c in shown],
            "candidates_not_shown": len(self.candidates) - len(shown),
            "rejected": {model: d.to_dict() for model, d in sorted(self.rejected.items())},
        }


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    adequacy: Adequacy = Adequacy()
    threshold: float = 0.5
    output_fraction: float = 0.5  # expected output tokens as a share of max_tokens
    explore: bool = False
    explore_cost_ratio: float = 1.0  # exploration may pick a call costing up to this × the greedy one
    answer_value: float | None = None  # USD a correct answer is worth: agreement plans are then chosen by worth
    target_cost: float | None = None  # USD per task, on average: answer_value is paced to spend it (`policies.pacing`)
    pair_prior_tasks: float = 100.0  # how many tasks the every-kind record of a pair counts for, on one kind

    @property
    def by_worth(self) -> bool:
        """Agreement plans are chosen by worth: at a given answer value, or one paced to a spend target."""
        return self.answer_value is not None or self.target_cost is not None


class _Floats(dict[Decimal, float]):
    """Prices as floats, for ranking (money stays Decimal): a catalog has a few dozen distinct
    prices, and every candidate of every decision needs two."""

    def __missing__(self, price: Decimal) -> float:
        self[price] = value = float(price)
        return value


_FLOAT = _Floats()


def expected_call_cost(spec: ModelSpec, need: Need, output_fraction: float) -> float:
    return _FLOAT[spec.input_price] * need.input_tokens + _FLOAT[spec.output_price] * need.max_tokens * output_fraction


def max_call_cost(spec: ModelSpec, need: Need) -> Decimal:
    """The most this call can cost: what budgets reserve."""
    bound = need.input_tokens if need.max_input_tokens is None else need.max_input_tokens
    return _worst_case(spec.input_price, spec.output_price, bound, need.max_tokens)


@lru_cache(maxsize=4096)  # several rules ask it of every candidate of every decision
def _worst_case(input_price: Decimal, output_price: Decimal, input_tokens: int, max_tokens: int) -> Decimal:
    return input_price * input_tokens + output_price * max_tokens


def choose(
    pool: Sequence[ModelSpec],
    need: Need,
    tallies: Mapping[str, Tally],
    settings: RoutingSettings = RoutingSettings(),
    rules: Sequence[Rule] = (),
    rng: random.Random | None = None,
    agreement: KindRecord | None = None,
) -> Decision:
    """Decide the next rung. `tallies` maps model id to its verdicts on the task's kind;
    `agreement`, recorded agreement between models on that kind, if any."""
    if routes_by_plan(settings, need) and len(need.answers) < PLAN_MAX_CALLS:
        return _choose_plan(pool, need, tallies, settings, rules, agreement)
    allowed, rejected = _screen(pool, need, tallies, settings, rules)
    if not allowed:
        return Decision(None, "no candidate left", (), rejected, settings.threshold)
    if _is_opinion(need):
        costs = [expected_call_cost(spec, need, settings.output_fraction) for spec, _ in allowed]
        totals = _price_opinions(allowed, costs, need, settings.threshold)
        estimates = [
            Estimate(spec.id, spec.vendor, p, cost, total)
            for (spec, p), cost, total in zip(allowed, costs, totals, strict=True)
            if total is not None
        ]
        ranked = _ranked(estimates)
        return _decision(ranked[0].model, _why_opinion(ranked[0], need), ranked, rejected, settings)
    ranked = _ranked(_plan(allowed, need, settings.output_fraction))
    if need.prefer is not None and need.prefer.sort != "cost":
        return _fastest(allowed, ranked, need, rejected, settings)
    greedy = _greedy(ranked, settings.threshold)
    chosen, reason = greedy, _why(greedy, settings.threshold)
    if settings.explore and rng is not None:
        explored = _thompson(allowed, ranked, greedy, settings, tallies, rng)
        if explored is not None and explored.model != greedy.model:
            chosen = explored
            reason = (
                f"exploration: a Thompson sample made {explored.model} adequate at no more than {greedy.model}'s cost"
            )
    return _decision(chosen.model, reason, ranked, rejected, settings)


def _fastest(
    allowed: list[tuple[ModelSpec, float]],
    ranked: tuple[Estimate, ...],
    need: Need,
    rejected: dict[str, Denial],
    settings: RoutingSettings,
) -> Decision:
    """`sort: latency`: the adequate candidate with the least expected latency, escalations included
    (its median, plus P(fail) × the quickest stronger adequate one's); cost breaks ties.
    `sort: throughput`: the adequate candidate with the most output tokens per second."""
    assert need.prefer is not None
    p_of, latency = {spec.id: p for spec, p in allowed}, need.latency or {}
    adequate = [e for e in ranked if e.p_pass >= settings.threshold] or [max(ranked, key=lambda e: e.p_pass)]
    lat = {e.model: latency[e.model].p50 if e.model in latency else math.inf for e in ranked}

    def expected(e: Estimate) -> float:
        stronger = [lat[o.model] for o in adequate if p_of[o.model] > e.p_pass]
        return lat[e.model] + (1 - e.p_pass) * (min(stronger) if stronger else 0.0)

    if need.prefer.sort == "throughput":
        speed = {m: (latency[m].tokens_per_s or 0.0) if m in latency else 0.0 for m in lat}
        best = min(adequate, key=lambda e: (-speed[e.model], e.expected_total))
        reason = f"most output per second among adequate: {speed[best.model]:.0f} tokens/s"
    else:
        best = min(adequate, key=lambda e: (expected(e), e.expected_total))
        reason = (
            f"quickest expected among adequate: {expected(best):.2f} s with escalations (p50 {lat[best.model]:.2f} s)"
        )
    return _decision(best.model, reason, ranked, rejected, settings)


def routes_by_plan(settings: RoutingSettings, need: Need) -> bool:
    """Answers are checked by agreement and a correct one has a value: whole plans decide."""
    return settings.answer_value is not None and need.by_agreement


def _screen(
    pool: Sequence[ModelSpec],
    need: Need,
    tallies: Mapping[str, Tally],
    settings: RoutingSettings,
    rules: Sequence[Rule],
) -> tuple[list[tuple[ModelSpec, float]], dict[str, Denial]]:
    """The candidates every rule allows, with P(pass); and why each other one is not."""
    rejected: dict[str, Denial] = {}
    allowed: list[tuple[ModelSpec, float]] = []
    needed = max(need.input_tokens + need.max_tokens, need.min_context)  # the context window the call needs
    for spec, p in zip(pool, settings.adequacy.means(pool, tallies), strict=True):
        denial = _builtin_denial(spec, need, p, needed)
        for rule in rules if denial is None else ():
            if (denial := rule(spec, need)) is not None:
                break
        if (
            denial is None
            and need.prefer is not None
            and (why := preference_denial(spec, need.prefer, need.latency or {}))
        ):
            denial = Denial(*why)
        if denial is None:
            allowed.append((spec, p))
        else:
            rejected[spec.id] = denial
    return allowed, rejected


def _choose_plan(
    pool: Sequence[ModelSpec],
    need: Need,
    tallies: Mapping[str, Tally],
    settings: RoutingSettings,
    rules: Sequence[Rule],
    agreement: KindRecord | None,
) -> Decision:
    """By worth (see `policies.agreement`): the plan decides independence and escalation itself."""
    assert settings.answer_value is not None
    free = replace(need, independent_of=frozenset(), stronger_than=None, confirming=None)
    allowed, rejected = _screen(pool, free, tallies, settings, rules)
    output = need.max_tokens * settings.output_fraction
    by_id = {spec.id: spec for spec in pool}
    answered = [by_id[m] for m in need.answers if m in by_id]
    if not allowed and not answered:
        return Decision(None, "no candidate left", (), rejected, settings.threshold)
    outputs = agreement.output_tokens if agreement else {}  # recorded output lengths, where known

    def candidate(spec: ModelSpec, p: float) -> Candidate:
        tokens = min(outputs.get(spec.id, output), need.max_tokens)
        return Candidate(spec.id, spec.vendor, p, _FLOAT[spec.input_price], _FLOAT[spec.output_price] * tokens)

    candidates = tuple(candidate(spec, p) for spec, p in allowed)
    plan = best_plan(
        candidates,
        tuple(candidate(spec, p) for spec, p in zip(answered, settings.adequacy.means(answered, tallies), strict=True)),
        agreement,
        value=settings.answer_value,
        prompt_tokens=need.input_tokens,
        rungs_left=int(min(_rungs_left(need), PLAN_MAX_CALLS)),
        prior_tasks=settings.pair_prior_tasks,
    )
    reason = (
        f"a correct answer is worth ${settings.answer_value:g}: {plan.describe()}; P(correct) {plan.p_correct:.2f}, "
        f"expected cost ${plan.expected_cost:.6f} (best of {plan.considered} plans)"
    )
    first = plan.calls[0] if plan.calls else None  # no call: stop, keep the answers so far
    estimates = []
    for c in candidates:  # each call costed as the plan costed it; the first call carries the plan's total
        cost = c.cost(need.input_tokens)
        estimates.append(Estimate(c.model, c.vendor, c.p_pass, cost, plan.expected_cost if c.model == first else cost))
    return _decision(first, reason, _ranked(estimates), rejected, settings, stop=first is None)


def _ranking(e: Estimate) -> tuple[float, float, str]:
    """Cheapest expected total first; then the likelier to pass; then by name, so ties repeat."""
    return (e.expected_total, -e.p_pass, e.model)


def _ranked(estimates: list[Estimate]) -> tuple[Estimate, ...]:
    return tuple(sorted(estimates, key=_ranking))


def _decision(
    chosen: str | None,
    reason: str,
    ranked: tuple[Estimate, ...],
    rejected: dict[str, Denial],
    settings: RoutingSettings,
    stop: bool = False,
) -> Decision:
    return Decision(chosen, reason, ranked, rejected, settings.threshold, stop)


_TRIED = Denial("tried", "already attempted for this task")


@lru_cache(maxsize=1024)  # denials are immutable and these repeat on every decision of every task
def _vendor_denial(rule: str, vendor: str) -> Denial:
    if rule == "failover":
        return Denial(rule, f"{vendor} just failed this task; failing over to another vendor")
    return Denial(rule, "a second opinion must come from a vendor not yet asked", {"vendor": vendor})


def _builtin_denial(spec: ModelSpec, need: Need, p: float, needed: int) -> Denial | None:
    if spec.id in need.tried:
        return _TRIED
    if spec.vendor in need.avoid_vendors:
        return _vendor_denial("failover", spec.vendor)
    if spec.vendor in need.independent_of:
        return _vendor_denial("independence", spec.vendor)
    if need.capabilities and (missing := need.capabilities - spec.capabilities):
        return Denial("capability", f"lacks {', '.join(sorted(missing))}", {"missing": sorted(missing)})
    if needed > spec.context_window:
        return Denial(
            "context_window", "prompt and answer do not fit", {"needed": needed, "window": spec.context_window}
        )
    if need.stronger_than is not None and p <= need.stronger_than:
        return Denial(
            "not_stronger",
            "escalation needs a stronger model than the one that failed",
            {"p_pass": round(p, 4), "failed_p_pass": round(need.stronger_than, 4)},
        )
    return None


def _plan(allowed: list[tuple[ModelSpec, float]], need: Need, output_fraction: float) -> list[Estimate]:
    """Expected total cost of starting at each candidate, strongest first: E = c + (1-p)·best(stronger)."""
    estimates: list[Estimate] = []
    best_stronger: float | None = None  # None: nothing stronger, a failure ends the task unverified
    last = _rungs_left(need) <= 1
    costed = [(spec, p, expected_call_cost(spec, need, output_fraction)) for spec, p in allowed]
    for spec, p, cost in sorted(costed, key=lambda c: (-c[1], c[2])):
        total = cost + (1 - p) * (best_stronger or 0.0)
        estimates.append(Estimate(spec.id, spec.vendor, p, cost, total))
        if not last:
            best_stronger = total if best_stronger is None else min(best_stronger, total)
    return estimates


def _rungs_left(need: Need) -> float:
    return math.inf if need.rungs_left is None else need.rungs_left  # None: no limit known


def _is_opinion(need: Need) -> bool:
    """A first or second opinion under agreement, with a rung left for the other opinion."""
    return need.confirming is not None or (need.by_agreement and _rungs_left(need) >= 2)


def _price_opinions(
    allowed: list[tuple[ModelSpec, float]], costs: list[float], need: Need, threshold: float
) -> list[float | None]:
    """Expected totals of opinions: E(b | q) = c_b + (1 − q·p_b) · escalation past both, and for a
    first opinion a, E(a) = c_a + the best E(b | p_a) among other vendors' models (None: there is none)."""
    ps = [p for _, p in allowed]
    rungs_after = _rungs_left(need) - (1 if need.confirming is not None else 2)
    escalate = _Escalation(ps, costs, threshold).cost if rungs_after > 0 else lambda floor: 0.0
    past = [escalate(p) for p in ps]  # the escalation past each opinion alone
    if need.confirming is not None:
        q, past_q = need.confirming, escalate(need.confirming)
        return [c + (1 - q * p) * (e if p >= q else past_q) for c, p, e in zip(costs, ps, past, strict=True)]
    rows = [(spec.vendor, c, p, e) for (spec, p), c, e in zip(allowed, costs, past, strict=True)]
    by_cost = sorted(rows, key=lambda row: row[1])
    totals: list[float | None] = []
    for vendor, cost, p_a, past_a in rows:
        second = _best_second(by_cost, vendor, p_a, past_a)
        totals.append(None if second is None else cost + second)
    return totals if any(t is not None for t in totals) else list(costs)


def _best_second(
    by_cost: list[tuple[str, float, float, float]], vendor: str, p_a: float, past_a: float
) -> float | None:
    """min over other vendors' b of E(b | p_a). Each term is at least c_b, so the scan, cheapest
    first, stops at the first b dearer than the best so far: a few steps, even among thousands."""
    best: float | None = None
    for v, c, p, past in by_cost:
        if best is not None and c >= best:
            break
        if v != vendor:
            total = c + (1 - p_a * p) * (past if p >= p_a else past_a)
            if best is None or total < best:
                best = total
    return best


class _Escalation:
    """The call cost of the rung that settles a disagreement: the cheapest adequate candidate
    stronger than both opinions (else the strongest of those), by bisection on P(pass)."""

    def __init__(self, ps: list[float], costs: list[float], threshold: float) -> None:
        ranked = sorted(zip(ps, costs, strict=True), key=lambda r: r[0])
        self.p = [p for p, _ in ranked]
        self.suffix: list[float] = [0.0] * (len(ranked) + 1)  # [i]: stronger than p[i-1]; [n]: nothing is
        cheapest_adequate: float | None = None
        for i in range(len(ranked) - 1, -1, -1):
            p, cost = ranked[i]
            if p >= threshold and (cheapest_adequate is None or cost < cheapest_adequate):
                cheapest_adequate = cost
            self.suffix[i] = cheapest_adequate if cheapest_adequate is not None else ranked[-1][1]

    def cost(self, floor: float) -> float:
        return self.suffix[bisect.bisect_right(self.p, floor)]


def _greedy(ranked: tuple[Estimate, ...], threshold: float) -> Estimate:
    """The best-ranked adequate candidate; if none is adequate, the strongest."""
    adequate = next((e for e in ranked if e.p_pass >= threshold), None)
    return adequate or max(ranked, key=lambda e: (e.p_pass, -e.call_cost))


def _why_opinion(chosen: Estimate, need: Need) -> str:
    role = "second opinion" if need.confirming is not None else "first opinion (answers pass by agreement)"
    return f"{role}: cheapest expected total ${chosen.expected_total:.6f}, escalation on disagreement included"


def _why(chosen: Estimate, threshold: float) -> str:
    if chosen.p_pass >= threshold:
        return (
            f"cheapest expected total ${chosen.expected_total:.6f} among models with "
            f"P(pass) >= {threshold:g} (P={chosen.p_pass:.2f})"
        )
    return f"no model reaches P(pass) >= {threshold:g}; strongest available (P={chosen.p_pass:.2f})"


def _thompson(
    allowed: list[tuple[ModelSpec, float]],
    estimates: Sequence[Estimate],
    greedy: Estimate,
    settings: RoutingSettings,
    tallies: Mapping[str, Tally],
    rng: random.Random,
) -> Estimate | None:
    """The cheapest candidate whose sampled P(pass) is adequate, within the exploration cost cap."""
    by_id = {e.model: e for e in estimates}
    cap = greedy.call_cost * settings.explore_cost_ratio
    affordable = sorted(
        ((by_id[spec.id], spec) for spec, _ in allowed if by_id[spec.id].call_cost <= cap),
        key=lambda pair: (pair[0].call_cost, pair[0].model),
    )
    for estimate, spec in affordable:  # one draw per candidate, in a fixed order: seeded runs repeat
        if settings.adequacy.posterior(spec, tallies.get(spec.id)).sample(rng) >= settings.threshold:
            return estimate
    return None
