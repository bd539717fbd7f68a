"""How likely a model is to pass evaluation on a task kind: a Beta–Bernoulli posterior.

The prior comes from the model's configured quality (0–1) with a strength in pseudo-observations;
every evaluator verdict stored in the ledger adds one pass or one fail.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from polycascade.catalog import ModelSpec
from polycascade.types import Tally

__all__ = ["Adequacy", "Posterior"]


@dataclass(frozen=True, slots=True)
class Posterior:
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def sample(self, rng: random.Random) -> float:
        return rng.betavariate(self.alpha, self.beta)


@dataclass(frozen=True, slots=True)
class Adequacy:
    """`prior_strength` pseudo-observations at the model's quality (or `default_quality`)."""

    prior_strength: float = 4.0
    default_quality: float = 0.5

    def means(self, specs: Sequence[ModelSpec], tallies: Mapping[str, Tally]) -> list[float]:
        """The posterior mean of each model: asked of every candidate of every decision, so in one loop."""
        strength, default = self.prior_strength, self.default_quality
        out = []
        for spec in specs:
            quality = spec.quality if spec.quality is not None else default
            quality = 0.01 if quality < 0.01 else 0.99 if quality > 0.99 else quality  # min/max cost twice as much
            tally = tallies.get(spec.id)
            if tally is not None:
                quality = (quality * strength + tally.passes) / (strength + tally.passes + tally.fails)
            out.append(quality)
        return out

    def posterior(self, spec: ModelSpec, tally: Tally | None) -> Posterior:
        quality = self.means((spec,), {})[0]  # the prior's mean
        passes, fails = (tally.passes, tally.fails) if tally else (0, 0)
        return Posterior(quality * self.prior_strength + passes, (1 - quality) * self.prior_strength + fails)
