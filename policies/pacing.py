"""Pacing: spend a target amount per task, on average, by adjusting what a correct answer is worth.

Plans by worth (`policies.agreement`) trade accuracy for money at a rate V, the value of a correct
answer. A fixed V spends whatever it spends; a budget says what to spend. The pacer moves V so that
the spend per finished task tracks `target`: after each task, log V moves by `gain` for every
target's worth the task cost less than the target (more: V falls). That is integral control on the
running total, or dual ascent on the budget constraint: over n tasks the spend is

    n · target − (log V_n − log V_0) · target / gain

so it stays within a few dozen tasks' worth of the budget once V has settled.

Why not one V chosen offline: plans change in steps (a whole task kind switches to a dearer model
at some V), so a fixed V lands on one side of a step and leaves budget unspent, or overspends.
Hovering at the step, the pacer mixes the two plans in the proportion that spends the budget, which
is the most accuracy the budget buys (a budget-constrained optimum mixes two value-optimal plans).

It assumes kinds are mixed over time, as live traffic mixes them: on a batch sorted by kind, V
would drift to spend the target on each kind in turn. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .routing import RoutingSettings

__all__ = ["Pacer"]


@dataclass
class Pacer:
    target: float  # USD per task, on average
    value: float  # what a correct answer is worth now, in USD
    gain: float = 0.005  # log V moves this much per target's worth of under- or overspend
    tasks: int = 0
    spent: float = 0.0

    @classmethod
    def for_routing(cls, routing: RoutingSettings) -> Pacer | None:
        """The pacer `routing.target_cost` asks for, if any, from `routing.answer_value` or else a
        guess: a correct answer worth 20 tasks' budget. Started far from where it settles, a pacer
        over- or underspends by its climb: where a backtest's pacer ended is a better start."""
        if routing.target_cost is None:
            return None
        return cls(routing.target_cost, routing.answer_value or 20 * routing.target_cost)

    def __post_init__(self) -> None:
        if not (self.target > 0 and self.value > 0 and self.gain > 0):
            raise ValueError(f"pacing needs a positive target, value and gain (got {self})")

    def observe(self, cost: float) -> None:
        """A task finished, costing `cost` USD in all."""
        self.tasks += 1
        self.spent += cost
        self.value *= math.exp(self.gain * (self.target - cost) / self.target)

    @property
    def mean_spend(self) -> float:
        return self.spent / self.tasks if self.tasks else 0.0
