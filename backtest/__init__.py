"""Backtesting cost policies on recorded outcomes, through the live routing, cascade and policy code."""

from .run import run_backtest, split
from .traces import TraceSet, load_traces
from .tune import tune_answer_value

__all__ = ["TraceSet", "load_traces", "run_backtest", "split", "tune_answer_value"]
