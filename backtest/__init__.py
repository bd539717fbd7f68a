"""Backtesting cost policies on recorded outcomes, through the live routing, cascade and policy code."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .traces import TraceSet, load_traces

if TYPE_CHECKING:
    from .run import run_backtest, split
    from .target import backtest_at_cost

__all__ = ["TraceSet", "backtest_at_cost", "load_traces", "run_backtest", "split"]

_REPLAY = {"run_backtest": ".run", "split": ".run", "backtest_at_cost": ".target"}


def __getattr__(name: str) -> Any:
    """The replay imports the cascade (LangGraph, most of a second): only when asked for, so a
    caller can read a traces file meanwhile (see `polycascade backtest`)."""
    if name in _REPLAY:
        return getattr(import_module(_REPLAY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
