"""The cycle collector and a backtest's heap: a million long-lived, acyclic objects.

CPython's full collections walk every tracked object. Loaded traces never become cyclic garbage,
nor does a replay create any (`tests/test_backtest.py` pins that), so the walks find nothing.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused", "frozen_heap"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside the block (objects are still freed when unreferenced)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Everything alive now outlives the block: out of the collector's sight until it ends.

    A full collection would walk the loaded traces again and again (0.6 s of a 1M-row split went
    to that alone), and a forked worker's would write to every page it shares with its parent.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
