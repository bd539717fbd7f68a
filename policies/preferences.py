"""What one request prefers, beside cost and adequacy: a latency bound, an order (cost, latency,
throughput), a price cap, vendors and models to keep or avoid.

Preferences narrow what the policy allows and never widen it: they only add denials (rule
`preference`, or `latency` with the estimate and the bound compared), after every policy rule.
Latency is learned like adequacy, from calls as they finish: a decayed histogram per (model, task
kind), so a slow afternoon is forgotten within hours; a model with no history has a prior.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from polycascade.catalog import ModelSpec
from polycascade.records import frozen
from polycascade.tasks import Preferences

__all__ = ["LatencyBook", "LatencyEstimate", "Preferences", "preference_denial"]

MILLION = Decimal(1_000_000)

Percentile = Literal["p50", "p95"]


@frozen
class LatencyEstimate:
    """Seconds to a full answer at the median and the 95th percentile; `calls`: how much history
    (decayed) stands behind it, 0 for the prior; output tokens per second where known."""

    p50: float
    p95: float
    calls: float = 0.0
    tokens_per_s: float | None = None

    def at(self, percentile: Percentile) -> float:
        return self.p50 if percentile == "p50" else self.p95


PRIOR = LatencyEstimate(p50=2.0, p95=8.0)  # the catalog has no latencies: a cautious guess, soon outweighed
_EDGES = tuple(0.05 * 1.25**i for i in range(48))  # 50 ms … ~2.2 min, 25% apart
PRIOR_WEIGHT = 1.0  # the prior counts as one call: a p95 trusts history from about twenty calls on


class LatencyBook:
    """Latency per (model, task kind) from the calls that finished: a histogram whose weights halve
    every `half_life_s`, read as quantiles. Routing estimates, not accounting."""

    def __init__(self, half_life_s: float = 3600.0) -> None:
        self.half_life_s = half_life_s
        self._bins: dict[tuple[str, str], _Histogram] = {}

    def observe(self, model: str, kind: str, seconds: float, output_tokens: int, now: float) -> None:
        if seconds <= 0:
            return
        for key in ((model, kind), (model, "*")):
            self._bins.setdefault(key, _Histogram()).add(seconds, output_tokens, now, self.half_life_s)

    def estimate(self, model: str, kind: str, now: float) -> LatencyEstimate:
        """The (model, kind) history, else the model's on any kind, blended with the prior."""
        for key in ((model, kind), (model, "*")):
            found = self._bins.get(key)
            if found is not None and found.weight(now, self.half_life_s) > 0.5:
                return found.estimate(now, self.half_life_s)
        return PRIOR


class _Histogram:
    """Decayed counts per latency bucket, and decayed output tokens over seconds (throughput)."""

    __slots__ = ("at", "counts", "seconds", "tokens")

    def __init__(self) -> None:
        self.counts = [0.0] * (len(_EDGES) + 1)
        self.tokens = self.seconds = self.at = 0.0

    def _decay(self, now: float, half_life_s: float) -> None:
        if self.at and now - self.at < half_life_s / 64:  # under 1% of weight to shed: not worth a pass yet
            return
        factor = 0.5 ** (max(now - self.at, 0.0) / half_life_s) if self.at else 1.0
        if factor < 1.0:
            self.counts = [c * factor for c in self.counts]
            self.tokens, self.seconds = self.tokens * factor, self.seconds * factor
        self.at = now

    def add(self, seconds: float, output_tokens: int, now: float, half_life_s: float) -> None:
        self._decay(now, half_life_s)
        self.counts[_bucket(seconds)] += 1.0
        self.tokens += output_tokens
        self.seconds += seconds

    def weight(self, now: float, half_life_s: float) -> float:
        self._decay(now, half_life_s)
        return sum(self.counts)

    def estimate(self, now: float, half_life_s: float) -> LatencyEstimate:
        self._decay(now, half_life_s)
        counts = [c + PRIOR_WEIGHT * p for c, p in zip(self.counts, _PRIOR_SHAPE, strict=True)]
        speed = self.tokens / self.seconds if self.seconds > 0 and self.tokens > 0 else None
        return LatencyEstimate(_quantile(counts, 0.5), _quantile(counts, 0.95), sum(self.counts), speed)


def _bucket(seconds: float) -> int:
    return bisect.bisect_left(_EDGES, seconds)  # the first edge at or above it; past the last: the overflow


def _quantile(counts: list[float], q: float) -> float:
    """The upper edge of the bucket holding the q-th quantile (a slight overestimate: safe for a bound)."""
    target, running = q * sum(counts), 0.0
    for i, c in enumerate(counts):
        running += c
        if running >= target:
            return _EDGES[i] if i < len(_EDGES) else _EDGES[-1] * 1.25
    return _EDGES[-1]


def _prior_shape() -> list[float]:
    """The prior as bucket weights: half at its median, half at its 95th percentile."""
    shape = [0.0] * (len(_EDGES) + 1)
    shape[_bucket(PRIOR.p50)] += 0.5
    shape[_bucket(PRIOR.p95)] += 0.5
    return shape


_PRIOR_SHAPE = _prior_shape()


def preference_denial(
    spec: ModelSpec, prefer: Preferences, latency: Mapping[str, LatencyEstimate]
) -> tuple[str, str, dict[str, Any]] | None:
    """(rule, reason, values) when `prefer` rules `spec` out, else None."""
    vendor = spec.vendor.lower()
    if prefer.only_models is not None and spec.id not in prefer.only_models:
        return "preference", "not among only_models", {"only_models": sorted(prefer.only_models)}
    if prefer.only_vendors is not None and vendor not in prefer.only_vendors:
        return "preference", f"{spec.vendor} is not among only_vendors", {"only_vendors": sorted(prefer.only_vendors)}
    if vendor in prefer.ignore_vendors:
        return "preference", f"{spec.vendor} is in ignore_vendors", {"ignore_vendors": sorted(prefer.ignore_vendors)}
    prices = (("max_price_in", prefer.max_price_in, spec.input_price), ("max_price_out", prefer.max_price_out,
              spec.output_price))  # fmt: skip
    for name, cap, per_token in prices:
        if cap is not None and (price := (per_token * MILLION).normalize()) > cap:
            return "preference", f"${price} per 1M tokens is above {name} ${cap}", {"price": str(price), name: str(cap)}
    if prefer.max_latency_s is not None and (estimate := latency.get(spec.id)) is not None:
        seen = estimate.at(prefer.latency_percentile)
        if seen > prefer.max_latency_s:
            return "latency", (
                f"{prefer.latency_percentile} latency {seen:.2f} s over max_latency_s {prefer.max_latency_s:g}"
            ), {"percentile": prefer.latency_percentile, "estimate_s": round(seen, 3),
                "max_latency_s": prefer.max_latency_s, "calls": round(estimate.calls, 1)}  # fmt: skip
    return None
