"""Circuit breakers per downstream: closed → open after N consecutive failures → half-open
after a reset time (one probe) → closed on success, open again on failure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = 5
    reset_s: float = 2.0
    max_reset_s: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    _current_reset_s: float = field(default=0.0, init=False)
    _probe_in_flight: bool = field(default=False, init=False)

    def allow(self, now: float | None = None) -> bool:
        """May a call go to the downstream now?  In half-open state exactly one probe may."""
        now = time.monotonic() if now is None else now
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now - self.opened_at >= self._current_reset_s:
            self.state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        if self.state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def next_probe_in(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self.opened_at + self._current_reset_s - now)

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._current_reset_s = 0.0
        self._probe_in_flight = False

    def record_failure(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            # The probe failed: back off harder before the next one.
            self._open(now, min(self.max_reset_s, max(self.reset_s, self._current_reset_s * 2)))
        elif self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold:
            self._open(now, self.reset_s)

    def _open(self, now: float, reset_s: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self._current_reset_s = reset_s
        self._probe_in_flight = False


class BreakerBoard:
    """The breakers of one process, created on first use."""

    def __init__(self, failure_threshold: int, reset_s: float) -> None:
        self._threshold = failure_threshold
        self._reset_s = reset_s
        self.breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str) -> CircuitBreaker:
        b = self.breakers.get(name)
        if b is None:
            b = self.breakers[name] = CircuitBreaker(name, self._threshold, self._reset_s)
        return b
