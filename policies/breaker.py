"""A circuit breaker per vendor: closed → open (cooldown) → half-open (one probe) → closed.

Pure state: the caller passes the time, so tests and backtests replay it exactly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from .config import CircuitBreakerConfig

__all__ = ["CircuitBreaker"]

State = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    config: CircuitBreakerConfig
    state: State = "closed"
    opened_at: float = 0.0
    probe_in_flight: bool = False
    _events: deque[tuple[float, bool]] = field(default_factory=deque)
    _failures: int = 0  # among _events, kept as they come and go: observe() is on every call's path

    def allows(self, now: float) -> bool:
        if self.state == "open" and now - self.opened_at >= self.config.cooldown_s:
            self.state, self.probe_in_flight = "half_open", False
        if self.state == "half_open":
            return not self.probe_in_flight
        return self.state == "closed"

    def on_dispatch(self, now: float) -> None:
        """A call was admitted; in half-open state it is the one probe."""
        if self.allows(now) and self.state == "half_open":
            self.probe_in_flight = True

    def observe(self, now: float, ok: bool) -> None:
        if self.state == "half_open":
            self.probe_in_flight = False
            if ok:
                self.state = "closed"
                self._forget()
            else:
                self.state, self.opened_at = "open", now
            return
        self._events.append((now, ok))
        self._failures += not ok
        while self._events and now - self._events[0][0] > self.config.window_s:
            self._failures -= not self._events.popleft()[1]
        calls = len(self._events)
        if calls >= self.config.min_calls and self._failures / calls >= self.config.failure_rate:
            self.state, self.opened_at = "open", now
            self._forget()

    def _forget(self) -> None:
        self._events.clear()
        self._failures = 0

    def describe(self, now: float) -> dict[str, object]:
        return {"state": self.state, "reopens_in_s": max(0.0, self.config.cooldown_s - (now - self.opened_at))}
