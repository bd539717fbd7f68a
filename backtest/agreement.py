"""What the router may learn about agreement from the train split: per task kind and pair of
models of different vendors, how often they agreed and were right, how often they disagreed,
and how often each model was right when they did (see `policies.agreement`).

Answers compare as the live check compares them (`agents.evaluators.normalise`); a blank answer
agrees with nothing. Counting every pair over every task is one matrix product per pair (numpy,
which the `backtest` extra brings); without numpy the router estimates from adequacy alone.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from agents.evaluators import normalise
from policies.agreement import KindRecord, PairRecord

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
    pooled = _kind(np, [t for tasks in by_kind.values() for t in tasks], models, pairs)
    return {kind: replace(_kind(np, tasks, models, pairs), pooled=pooled) for kind, tasks in by_kind.items()}


def _kind(np: Any, tasks: list[Trace], models: list[str], pairs: list[tuple[int, int]]) -> KindRecord:
    index = {m: j for j, m in enumerate(models)}
    shape = (len(tasks), len(models))
    codes = np.full(shape, -1, dtype=np.int64)  # -1: no outcome recorded
    right = np.zeros(shape)
    output = np.zeros(shape)
    blank = -2  # blank answers get codes of their own, below -1: they agree with nothing
    for t, trace in enumerate(tasks):
        for model, outcome in trace.outcomes.items():
            j = index[model]
            right[t, j] = outcome.correct
            output[t, j] = outcome.output_tokens or 0
            code = _code(outcome.answer or "")
            if code is None:
                code, blank = blank, blank - 1
            codes[t, j] = code
    present = codes != -1
    records = {}
    for a, b in pairs:
        both = present[:, a] & present[:, b]
        disputed = both & (codes[:, a] != codes[:, b])
        agreed = both & ~disputed
        right_when_disputed = disputed.astype(float) @ right
        records[(models[a], models[b])] = PairRecord(
            tasks=int(both.sum()),
            agree_right=float(right[agreed, a].sum()),
            disagree=int(disputed.sum()),
            right_when_disputed={models[j]: float(v) for j, v in enumerate(right_when_disputed) if v},
        )
    recorded = present & (output > 0)
    counts = recorded.sum(axis=0)
    means = (output * recorded).sum(axis=0) / np.maximum(counts, 1)
    answered = present.sum(axis=0)
    accuracy = (right * present).sum(axis=0) / np.maximum(answered, 1)
    return KindRecord(
        records,
        output_tokens={m: float(means[j]) for j, m in enumerate(models) if counts[j]},
        accuracy={m: float(accuracy[j]) for j, m in enumerate(models) if answered[j]},
    )


_CODES: dict[str, int] = {}


@lru_cache(maxsize=65536)  # answers repeat (a letter, a number): normalise each distinct text once
def _code(answer: str) -> int | None:
    text = normalise(answer)
    return _CODES.setdefault(text, len(_CODES)) if text else None
