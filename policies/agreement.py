"""Agreement plans: which models to ask when answers are verified by cross-vendor agreement.

Under agreement an answer stands when another vendor's answer matches it. A plan asks a, then b
(another vendor); if they agree, that answer stands; if not, an arbiter c answers, and c's answer
stands when it matches one of theirs (of another vendor than c). If it matches neither, the
answer c gave stands, or a fourth model d answers, whose answer stands. Asking one model and
keeping its answer, unverified, is a plan too. With V what a correct answer is worth to the
caller (`RoutingSettings.answer_value`), a plan is worth

    V · P(correct) − E[cost]
    P(correct) = P(a = b, right) + P(a ≠ b, c settles it, right) + P(a ≠ b, c does not, d right)
    E[cost]    = c_a + c_b + P(a ≠ b) · c_c + P(a ≠ b, c does not settle it) · c_d

(without d: P(a ≠ b, c right) and no fourth call). The probabilities are counted on recorded
outcomes of the task kind (`PairRecord`, e.g. from a backtest's train split), shrunk by
`prior_tasks` pseudo-tasks towards a target: what independent errors would give, scaled by how
far the same pair's record over every kind departs from it (`KindRecord.pooled`). Independent
errors alone are optimistic where it matters most: a question two models dispute is a hard one,
and the arbiter is right less often than on average; with no record at all, they are all there is.

A plan's cost is a cost per prompt token times T plus the expected outputs' cost, so only plans
no other plan matches in P(correct) at no more of either cost can be worth the most, whatever V
and T: that front is built once per kind, answers so far and candidates (cached; V may change on
every task when paced, `policies.pacing`), and a decision scans it. The search is exact for pools
of up to `MAX_CANDIDATES`; a larger pool is first cut to a shortlist.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    # when they disagreed and c answered: c matched one of theirs (of another vendor) and was right,
    # c matched neither, and then d was right
    settled_right: Mapping[str, float] = field(default_factory=dict)  # c → times
    unsettled: Mapping[str, float] = field(default_factory=dict)  # c → times
    right_after: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (c, d) → times


@dataclass(frozen=True, eq=False)  # hashed by identity: a cache key for the fronts built from it
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
    calls: tuple[str, ...]  # models still to ask, in order, each only while answers disagree; () keeps the answers
    p_correct: float
    expected_cost: float
    value: float
    considered: int  # plans compared

    def describe(self) -> str:
        if not self.calls:
            return "keep the answer so far, unverified"
        if len(self.calls) == 1:
            return f"ask {self.calls[0]}"
        return f"ask {self.calls[0]}, then {', then '.join(self.calls[1:])} while answers disagree"


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
    """The plan worth most for this prompt, given the answers so far: none; one; two that disagree;
    or three, the third agreeing with neither of the first two."""
    shortlist = _shortlist(candidates, prompt_tokens)
    front = _front(shortlist, tuple(answers), record or _NO_RECORD, min(rungs_left, 4), prior_tasks)
    return front.best(value, prompt_tokens)


MAX_CANDIDATES = 24  # plans grow with the fourth power of candidates: beyond this, a shortlist


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


class _Line(NamedTuple):
    p_correct: float
    slope: float  # expected cost per prompt token
    fixed: float  # expected cost of the outputs
    calls: tuple[str, ...]


class _Front:
    """The plans no other plan matches in P(correct) at no more cost per prompt token and no more
    fixed cost: whatever the answer value and prompt length, the best plan is one of these."""

    def __init__(self, lines: list[_Line]) -> None:
        front: list[_Line] = []
        slopes: list[float] = []  # a staircase of the plans kept so far: slope rising, fixed cost falling
        fixeds: list[float] = []
        for line in sorted(lines, key=lambda x: (-x.p_correct, x.slope, x.fixed, x.calls)):
            i = bisect.bisect_right(slopes, line.slope)
            if i and fixeds[i - 1] <= line.fixed:
                continue  # a plan at least as likely to be right costs no more
            front.append(line)
            i -= i > 0 and slopes[i - 1] == line.slope
            j = i
            while j < len(fixeds) and fixeds[j] >= line.fixed:
                j += 1
            slopes[i:j], fixeds[i:j] = [line.slope], [line.fixed]
        self.front = front
        self.considered = len(lines)

    def best(self, value: float, tokens: int) -> Plan:
        line = max(self.front, key=lambda x: value * x.p_correct - x.slope * tokens - x.fixed)
        cost = line.slope * tokens + line.fixed
        return Plan(line.calls, line.p_correct, cost, value * line.p_correct - cost, self.considered)


@lru_cache(maxsize=4096)
def _front(
    candidates: tuple[Candidate, ...],
    answers: tuple[Candidate, ...],
    record: KindRecord,
    rungs_left: int,
    prior_tasks: float,
) -> _Front:
    odds = _Odds(record, prior_tasks)
    lines = []
    for option in _options(candidates, answers, odds, rungs_left):
        slope = sum(candidates[i].input_price * w for i, w in option.weights)
        fixed = sum(candidates[i].fixed_cost * w for i, w in option.weights)
        lines.append(_Line(option.p_correct, slope, fixed, option.calls))
    return _Front(lines)


def _options(
    candidates: tuple[Candidate, ...], answers: tuple[Candidate, ...], odds: _Odds, rungs_left: int
) -> list[_Option]:
    if len(answers) == 3:  # the arbiter settled nothing: keep its answer, or ask a fourth model
        a, b, c = answers
        unsettled = odds.unsettled(a, b, c)
        options = [_Option((), odds.right_unsettled(a, b, c) / unsettled, ())]
        options += [
            _Option((d.model,), odds.right_after(a, b, c, d) / unsettled, ((i, 1.0),)) for i, d in enumerate(candidates)
        ]
        return options
    if len(answers) == 2:  # they disagreed: keep the later answer, or ask an arbiter
        a, b = answers
        disputed = odds.disputed(a, b)
        options = [_Option((), odds.right_when_disputed(a, b, b) / disputed, ())]
        for calls, p, weights in _arbitrations(candidates, a, b, (), odds, rungs_left):
            options.append(_Option(calls, p / disputed, tuple((i, w / disputed) for i, w in weights)))
        return options
    if len(answers) == 1:  # keep it; or ask b, keeping b's answer if they disagree; or b, then arbiters
        (a,) = answers
        options = [_Option((), a.p_pass, ())]
        options += [
            _Option((b.model,), odds.agree_right(a, b) + odds.right_when_disputed(a, b, b), ((j, 1.0),))
            for j, b in enumerate(candidates)
            if b.vendor != a.vendor
        ]
        if rungs_left >= 2:
            options += _checked(candidates, a, None, odds, rungs_left - 1)
        return options
    options = [_Option((c.model,), c.p_pass, ((i, 1.0),)) for i, c in enumerate(candidates)]
    if rungs_left >= 3:  # with two rungs a disagreement has no arbiter: one answer does as well
        for i, a in enumerate(candidates):
            options += _checked(candidates, a, i, odds, rungs_left - 2)
    return options


def _checked(
    candidates: tuple[Candidate, ...], a: Candidate, a_index: int | None, odds: _Odds, arbiters: int
) -> list[_Option]:
    """Plans that ask b of another vendor after a (b's index above a's when a is a candidate too:
    each pair once), then arbiters while answers disagree."""
    options = []
    first = () if a_index is None else ((a_index, 1.0),)
    start = 0 if a_index is None else a_index + 1
    for j in range(start, len(candidates)):
        b = candidates[j]
        if b.vendor == a.vendor:
            continue
        agree_right, pair = odds.agree_right(a, b), _order(a, b, a_index)
        taken = (j,) if a_index is None else (a_index, j)
        for calls, p, weights in _arbitrations(candidates, a, b, taken, odds, arbiters):
            options.append(_Option((*pair, *calls), agree_right + p, (*first, (j, 1.0), *weights)))
    return options


def _arbitrations(
    candidates: tuple[Candidate, ...], a: Candidate, b: Candidate, taken: tuple[int, ...], odds: _Odds, arbiters: int
) -> Iterator[tuple[tuple[str, ...], float, tuple[tuple[int, float], ...]]]:
    """After a and b: an arbiter c if they disagree, and d if c agrees with neither. Each as
    (calls, P(a ≠ b and the answer that stands is right), (candidate index, chance it is called))."""
    disputed = odds.disputed(a, b)
    for k, c in enumerate(candidates):
        if k in taken:
            continue
        yield (c.model,), odds.right_when_disputed(a, b, c), ((k, disputed),)
        if arbiters < 2:
            continue
        settled, unsettled = odds.settled_right(a, b, c), odds.unsettled(a, b, c)
        for m, d in enumerate(candidates):
            if m != k and m not in taken:
                yield (c.model, d.model), settled + odds.right_after(a, b, c, d), ((k, disputed), (m, unsettled))


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

    def settled_right(self, a: Candidate, b: Candidate, c: Candidate) -> float:
        """P(a ≠ b, and c matches the one of them that is right, of another vendor than c)."""
        return self._estimate(a, b, lambda r: r.settled_right.get(c.model, 0.0), lambda p: _settles(a, b, c, p))

    def unsettled(self, a: Candidate, b: Candidate, c: Candidate) -> float:
        """P(a ≠ b, and c matches neither): a fourth answer would be asked."""

        def independent(p: _P) -> float:
            return max(1 - p(a) * p(b) - _settles(a, b, c, p), 0.0)

        return max(self._estimate(a, b, lambda r: r.unsettled.get(c.model, 0.0), independent), 1e-9)

    def right_unsettled(self, a: Candidate, b: Candidate, c: Candidate) -> float:
        """P(a ≠ b, c matches neither and is right)."""
        return max(self.right_when_disputed(a, b, c) - self.settled_right(a, b, c), 0.0)

    def right_after(self, a: Candidate, b: Candidate, c: Candidate, d: Candidate) -> float:
        def independent(p: _P) -> float:
            return max(1 - p(a) * p(b) - _settles(a, b, c, p), 0.0) * p(d)

        return self._estimate(a, b, lambda r: r.right_after.get((c.model, d.model), 0.0), independent)

    def _estimate(
        self,
        a: Candidate,
        b: Candidate,
        count: Callable[[PairRecord], float],
        independent: Callable[[_P], float],
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


_P = Callable[[Candidate], float]  # a model's chance of being right


def _settles(a: Candidate, b: Candidate, c: Candidate, p: _P) -> float:
    """Independent errors: c is right, and so is exactly one of a and b, of another vendor than c."""
    return p(c) * (p(a) * (1 - p(b)) * (a.vendor != c.vendor) + p(b) * (1 - p(a)) * (b.vendor != c.vendor))
