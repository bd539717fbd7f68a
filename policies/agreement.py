"""Agreement plans: which models to ask when answers are verified by cross-vendor agreement.

Under agreement an answer stands when another vendor's answer matches it. A plan asks a, then b
(another vendor); if they agree, that answer stands; if not, an arbiter c answers. Asking one model
and keeping its answer, unverified, is a plan too. With V what a correct answer is worth to the
caller (`RoutingSettings.answer_value`), a plan is worth

    V · P(correct) − E[cost]
    P(correct) = P(a = b, right) + P(a ≠ b, c right)      E[cost] = c_a + c_b + P(a ≠ b) · c_c

The probabilities are counted on recorded outcomes of the task kind (`PairRecord`, e.g. from a
backtest's train split), shrunk by `prior_tasks` pseudo-tasks towards a target: what independent
errors would give (p_a·p_b, and (1 − p_a·p_b)·p_c), scaled by how far the same pair's record over
every kind departs from it (`KindRecord.pooled`). Independent errors alone are optimistic where it
matters most: a question two models dispute is a hard one, and the arbiter is right less often
than on average; with no record at all, they are all there is.

A call's cost is linear in the prompt's tokens T, so each plan's worth is a line in T. The best
plan for any T is read off the upper envelope of those lines, built once per kind, answers so far
and candidates (cached), so a decision costs a bisection, not a search over every triple. The
search is exact for pools of up to `MAX_CANDIDATES`; a larger pool is first cut to a shortlist.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

__all__ = ["Candidate", "KindRecord", "PairRecord", "Plan", "best_plan"]


@dataclass(frozen=True, slots=True)
class PairRecord:
    """Recorded outcomes of one pair of models on one task kind."""

    tasks: int  # both answered
    agree_right: float  # they agreed, and were right
    disagree: int
    right_when_disputed: Mapping[str, float] = field(default_factory=dict)  # model → times right when they disagreed


@dataclass(frozen=True, eq=False)  # hashed by identity: a cache key for the envelopes built from it
class KindRecord:
    """What was recorded on one task kind: how pairs agreed (keyed by model ids in sorted order),
    each model's accuracy, and its mean output tokens (a verbose model's answer costs more than
    max_tokens suggests). `pooled` is the same record over every kind."""

    pairs: Mapping[tuple[str, str], PairRecord] = field(default_factory=dict)
    output_tokens: Mapping[str, float] = field(default_factory=dict)
    accuracy: Mapping[str, float] = field(default_factory=dict)  # each model's mean `correct` here
    pooled: KindRecord | None = None  # leaned on where this kind's record is thin

    def pair(self, a: str, b: str) -> PairRecord | None:
        return self.pairs.get((a, b) if a < b else (b, a))


class Candidate(NamedTuple):
    model: str
    vendor: str
    p_pass: float  # the router's adequacy estimate on this kind
    input_price: float  # per prompt token
    fixed_cost: float  # the expected output's cost

    def cost(self, prompt_tokens: int) -> float:
        return self.input_price * prompt_tokens + self.fixed_cost


class Plan(NamedTuple):
    calls: tuple[str, ...]  # models still to ask, in order; () keeps the answers so far
    p_correct: float
    expected_cost: float
    value: float
    considered: int  # plans compared

    def describe(self) -> str:
        if not self.calls:
            return "keep the answer so far, unverified"
        if len(self.calls) == 1:
            return f"ask {self.calls[0]}"
        arbiter = f", {self.calls[2]} if they disagree" if len(self.calls) > 2 else ""
        return f"ask {self.calls[0]} and {self.calls[1]}{arbiter}"


class _Option(NamedTuple):
    calls: tuple[str, ...]
    p_correct: float
    weights: tuple[tuple[int, float], ...]  # (candidate index, chance it is called)


def best_plan(
    candidates: Sequence[Candidate],
    answers: Sequence[Candidate],
    record: KindRecord | None,
    *,
    value: float,
    prompt_tokens: int,
    rungs_left: int,
    prior_tasks: float,
) -> Plan:
    """The plan worth most for this prompt, given the answers so far (none, one, or two that disagree)."""
    shortlist = _shortlist(candidates, prompt_tokens)
    envelope = _envelope(shortlist, tuple(answers), record or _NO_RECORD, value, min(rungs_left, 3), prior_tasks)
    return envelope.at(prompt_tokens)


MAX_CANDIDATES = 24  # plans grow with the cube of candidates: beyond this, a shortlist


def _shortlist(candidates: Sequence[Candidate], tokens: int) -> tuple[Candidate, ...]:
    """All candidates in a pool of up to MAX_CANDIDATES (the search is exact); in a larger one,
    those no cheaper candidate matches in P(pass), evenly thinned to MAX_CANDIDATES."""
    if len(candidates) <= MAX_CANDIDATES:
        return tuple(candidates)
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.cost(tokens), -c.p_pass, c.model)):
        if not front or c.p_pass > front[-1].p_pass:
            front.append(c)
    if len(front) > MAX_CANDIDATES:
        step = (len(front) - 1) / (MAX_CANDIDATES - 1)
        front = [front[round(i * step)] for i in range(MAX_CANDIDATES)]
    return tuple(front)


_NO_RECORD = KindRecord()


class _Envelope:
    """The upper envelope of plan-worth lines v(T) = intercept − slope·T, for T ≥ 0."""

    def __init__(self, lines: list[tuple[float, float, Plan]]) -> None:
        hull: list[tuple[float, float, Plan]] = []  # by falling slope: dearer per token first
        for line in sorted(lines, key=lambda x: (-x[0], x[1], x[2].calls)):
            while hull and hull[-1][0] == line[0]:
                hull.pop()  # same slope, lower or equal intercept: sorted after, so it wins
            while len(hull) >= 2 and _crossing(hull[-2], line) <= _crossing(hull[-2], hull[-1]):
                hull.pop()
            hull.append(line)
        self.hull = hull
        self.breaks = [_crossing(hull[i], hull[i + 1]) for i in range(len(hull) - 1)]
        self.considered = len(lines)

    def at(self, tokens: int) -> Plan:
        slope, intercept, plan = self.hull[bisect.bisect_right(self.breaks, tokens)]
        cost = plan.expected_cost + slope * tokens
        return plan._replace(expected_cost=cost, value=intercept - slope * tokens, considered=self.considered)


def _crossing(left: tuple[float, float, Plan], right: tuple[float, float, Plan]) -> float:
    """Where `right` (cheaper per token) overtakes `left`."""
    return (left[1] - right[1]) / (left[0] - right[0])


@lru_cache(maxsize=4096)
def _envelope(
    candidates: tuple[Candidate, ...],
    answers: tuple[Candidate, ...],
    record: KindRecord,
    value: float,
    rungs_left: int,
    prior_tasks: float,
) -> _Envelope:
    odds = _Odds(record, prior_tasks)
    lines = []
    for option in _options(candidates, answers, odds, rungs_left):
        slope = sum(candidates[i].input_price * w for i, w in option.weights)
        fixed = sum(candidates[i].fixed_cost * w for i, w in option.weights)
        plan = Plan(option.calls, option.p_correct, fixed, 0.0, 0)
        lines.append((slope, value * option.p_correct - fixed, plan))
    return _Envelope(lines)


def _options(
    candidates: tuple[Candidate, ...], answers: tuple[Candidate, ...], odds: _Odds, rungs_left: int
) -> list[_Option]:
    if len(answers) == 2:  # they disagreed: keep the later answer, or ask an arbiter
        a, b = answers
        disputed = odds.disputed(a, b)
        options = [_Option((), odds.right_when_disputed(a, b, b) / disputed, ())]
        options += [
            _Option((c.model,), odds.right_when_disputed(a, b, c) / disputed, ((i, 1.0),))
            for i, c in enumerate(candidates)
        ]
        return options
    if len(answers) == 1:  # keep it; or ask b, keeping b's answer if they disagree; or b, then an arbiter
        (a,) = answers
        options = [_Option((), a.p_pass, ())]
        options += [
            _Option((b.model,), odds.agree_right(a, b) + odds.right_when_disputed(a, b, b), ((j, 1.0),))
            for j, b in enumerate(candidates)
            if b.vendor != a.vendor
        ]
        if rungs_left >= 2:
            options += _triples(candidates, a, None, odds)
        return options
    options = [_Option((c.model,), c.p_pass, ((i, 1.0),)) for i, c in enumerate(candidates)]
    if rungs_left >= 3:  # with two rungs a disagreement has no arbiter: one answer does as well
        for i, a in enumerate(candidates):
            options += _triples(candidates, a, i, odds)
    return options


def _triples(candidates: tuple[Candidate, ...], a: Candidate, a_index: int | None, odds: _Odds) -> list[_Option]:
    """Plans that ask b of another vendor after a (b's index above a's when a is a candidate too:
    each pair once), then an arbiter on disagreement."""
    options = []
    first = () if a_index is None else ((a_index, 1.0),)
    start = 0 if a_index is None else a_index + 1
    for j in range(start, len(candidates)):
        b = candidates[j]
        if b.vendor == a.vendor:
            continue
        agree_right, disputed = odds.agree_right(a, b), odds.disputed(a, b)
        for k, c in enumerate(candidates):
            if k != j and k != a_index:
                p = agree_right + odds.right_when_disputed(a, b, c)
                options.append(_Option((*_order(a, b, a_index), c.model), p, (*first, (j, 1.0), (k, disputed))))
    return options


def _order(a: Candidate, b: Candidate, a_index: int | None) -> tuple[str, ...]:
    if a_index is None:
        return (b.model,)  # a has answered: b is next
    # the stronger second: if they disagree and no arbiter is worth asking, the later answer stands
    return (a.model, b.model) if (a.p_pass, a.model) <= (b.p_pass, b.model) else (b.model, a.model)


class _Odds:
    """A pair's record on this kind, shrunk towards a target: what independent errors would give,
    scaled by how far the same pair's record over every kind departs from independence."""

    def __init__(self, record: KindRecord, prior_tasks: float) -> None:
        self.record, self.pooled, self.s = record, record.pooled, prior_tasks

    def agree_right(self, a: Candidate, b: Candidate) -> float:
        return self._estimate(a, b, lambda r: r.agree_right, lambda p: p(a) * p(b))

    def disputed(self, a: Candidate, b: Candidate) -> float:
        return max(self._estimate(a, b, lambda r: r.disagree, lambda p: 1 - p(a) * p(b)), 1e-9)

    def right_when_disputed(self, a: Candidate, b: Candidate, c: Candidate) -> float:
        def count(r: PairRecord) -> float:
            return r.right_when_disputed.get(c.model, 0.0)

        if c.model in (a.model, b.model):  # one of the two: right while the other is wrong
            other = b if c.model == a.model else a
            return self._estimate(a, b, count, lambda p: p(c) * (1 - p(other)))
        return self._estimate(a, b, count, lambda p: (1 - p(a) * p(b)) * p(c))

    def _estimate(
        self,
        a: Candidate,
        b: Candidate,
        count: Callable[[PairRecord], float],
        independent: Callable[[Callable[[Candidate], float]], float],
    ) -> float:
        target = independent(lambda m: m.p_pass)
        pooled = self.pooled.pair(a.model, b.model) if self.pooled else None
        if self.pooled and pooled and pooled.tasks:
            accuracy = self.pooled.accuracy
            expected = independent(lambda m: accuracy.get(m.model, m.p_pass))
            if expected > 0:
                target = min(1.0, target * count(pooled) / pooled.tasks / expected)
        pair = self.record.pair(a.model, b.model)
        if pair is None:
            return target
        return (count(pair) + self.s * target) / (pair.tasks + self.s)
