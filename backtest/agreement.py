"""What the router may learn about agreement from the train split: per task kind and pair of
models of different vendors, how often they agreed and were right, how often they disagreed,
how often each model was right when they did, and what a third and a fourth answer did then
(see `policies.agreement`).

Answers compare as the live check compares them (`agents.evaluators.normalise`); a blank answer
agrees with nothing. Counting every pair over every task is one matrix product per pair (numpy,
which the `backtest` extra brings); without numpy the router estimates from adequacy alone.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from polycascade.agents.evaluators import normalise
from polycascade.policies.agreement import KindRecord, PairRecord

from .traces import Trace, TraceSet

__all__ = ["agreement_from"]


def agreement_from(traces: TraceSet, train_ids: Iterable[str]) -> dict[str, KindRecord]:
    try:
        import numpy as np
    except ImportError:
        return {}
    by_kind: dict[str, list[Trace]] = defaultdict(list)
    for task_id in train_ids:
        trace = traces.tasks[task_id]
        by_kind[trace.category].append(trace)
    models = sorted(traces.models)
    vendors = [traces.models[m].vendor for m in models]
    pairs = [(a, b) for a, b in itertools.combinations(range(len(models)), 2) if vendors[a] != vendors[b]]
    codes = _Codes()
    tables = {kind: _Table.of(np, tasks, models, codes) for kind, tasks in by_kind.items()}
    vendor_codes = np.array([vendors.index(v) for v in vendors])
    pooled = _Table.joined(np, list(tables.values())).record(np, models, vendor_codes, pairs)
    return {
        kind: replace(table.record(np, models, vendor_codes, pairs), pooled=pooled) for kind, table in tables.items()
    }


@dataclass
class _Table:
    """Tasks × models: each answer as a code (equal codes agree), `correct`, output tokens."""

    codes: Any
    right: Any
    output: Any

    @classmethod
    def of(cls, np: Any, tasks: list[Trace], models: list[str], answer_code: _Codes) -> _Table:
        index = {m: j for j, m in enumerate(models)}
        shape = (len(tasks), len(models))
        table = cls(np.full(shape, -1, dtype=np.int64), np.zeros(shape), np.zeros(shape))  # code -1: no outcome
        blank = -2  # each blank answer gets a code of its own, below -1: it agrees with nothing
        for t, trace in enumerate(tasks):
            for model, outcome in trace.outcomes.items():
                j = index[model]
                table.right[t, j] = outcome.correct
                table.output[t, j] = outcome.output_tokens or 0
                code = answer_code(outcome.answer or "")
                if code is None:
                    code, blank = blank, blank - 1
                table.codes[t, j] = code
        return table

    @classmethod
    def joined(cls, np: Any, tables: list[_Table]) -> _Table:
        return cls(*(np.concatenate([getattr(t, f) for t in tables]) for f in ("codes", "right", "output")))

    def record(self, np: Any, models: list[str], vendors: Any, pairs: list[tuple[int, int]]) -> KindRecord:
        present = self.codes != -1
        records = {}
        for a, b in pairs:
            both = present[:, a] & present[:, b]
            disputed = both & (self.codes[:, a] != self.codes[:, b])
            codes, right, answered = self.codes[disputed], self.right[disputed], present[disputed]
            # a third answer settles the dispute when it matches one of theirs, of another vendor than its own
            matches_a = (codes == codes[:, [a]]) & (vendors != vendors[a])
            settles = answered & (matches_a | ((codes == codes[:, [b]]) & (vendors != vendors[b])))
            unsettled = answered & ~settles
            right_after = unsettled.T.astype(float) @ right  # [c, d]: d right after c settled nothing
            arbiters = [j for j in range(len(models)) if j not in (a, b)]
            records[(models[a], models[b])] = PairRecord(
                tasks=int(both.sum()),
                agree_right=float(self.right[both & ~disputed, a].sum()),
                disagree=int(disputed.sum()),
                right_when_disputed=_nonzero(models, right.sum(axis=0)),
                settled_right=_nonzero(models, (settles * right).sum(axis=0), arbiters),
                unsettled=_nonzero(models, unsettled.sum(axis=0), arbiters),
                right_after={
                    (models[c], models[d]): float(right_after[c, d])
                    for c in arbiters
                    for d in arbiters
                    if c != d and right_after[c, d]
                },
            )
        recorded = present & (self.output > 0)
        outputs, answered = recorded.sum(axis=0), present.sum(axis=0)
        mean_output = (self.output * recorded).sum(axis=0) / np.maximum(outputs, 1)
        accuracy = (self.right * present).sum(axis=0) / np.maximum(answered, 1)
        return KindRecord(
            records,
            output_tokens={m: float(mean_output[j]) for j, m in enumerate(models) if outputs[j]},
            accuracy={m: float(accuracy[j]) for j, m in enumerate(models) if answered[j]},
        )


def _nonzero(models: list[str], counts: Any, among: list[int] | None = None) -> dict[str, float]:
    return {models[j]: float(counts[j]) for j in (range(len(models)) if among is None else among) if counts[j]}


class _Codes:
    """One code per answer the live check calls equal (`normalise`); None for a blank answer."""

    def __init__(self) -> None:
        self.by_answer: dict[str, int | None] = {}  # answers repeat (a letter, a number): normalise each once
        self.by_text: dict[str, int] = {}

    def __call__(self, answer: str) -> int | None:
        if answer not in self.by_answer:
            text = normalise(answer)
            self.by_answer[answer] = self.by_text.setdefault(text, len(self.by_text)) if text else None
        return self.by_answer[answer]
