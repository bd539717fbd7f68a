"""Backtesting cost policies on recorded outcomes, through the live routing, cascade and policy code."""

from .run import run_backtest, split
from .target import backtest_at_cost
from .traces import TraceSet, load_traces

__all__ = ["TraceSet", "backtest_at_cost", "load_traces", "run_backtest", "split"]
