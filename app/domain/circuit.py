"""A circuit breaker per realm: when QBO fails persistently, stop calling it for a cool-down,
keep the commands in Kafka, probe once, and resume when the probe succeeds. Pure."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    window: int = 20  # the last N calls
    threshold: float = 0.8  # share of them failing (5xx, timeouts, connection errors) that opens it
    min_calls: int = 10
    cooldown: float = 30.0
    # Half-open lets exactly one probe through; a probe that never reports back (its caller was
    # cancelled) is given up after this long and another may go.
    probe_timeout: float = 60.0
    state: CircuitState = CircuitState.CLOSED
    opened_at: float = 0.0
    probe_started: float | None = None
    _outcomes: deque[bool] = field(default_factory=deque)  # True = failed

    def allow(self, now: float) -> float:
        """0 when a call may go now; else seconds until the next probe."""
        if self.state is CircuitState.OPEN:
            remaining = self.opened_at + self.cooldown - now
            if remaining > 0:
                return remaining
            self.state = CircuitState.HALF_OPEN
            self.probe_started = None
        if self.state is CircuitState.HALF_OPEN:
            if self.probe_started is not None and now - self.probe_started < self.probe_timeout:
                return min(1.0, self.probe_started + self.probe_timeout - now)  # the probe is out: wait for it
            self.probe_started = now  # this caller is the probe
        return 0.0

    def record(self, failed: bool, now: float) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self.probe_started = None
            if failed:
                self.state, self.opened_at = CircuitState.OPEN, now
            else:
                self.state = CircuitState.CLOSED
                self._outcomes.clear()
            return
        self._outcomes.append(failed)
        while len(self._outcomes) > self.window:
            self._outcomes.popleft()
        if len(self._outcomes) >= self.min_calls and sum(self._outcomes) / len(self._outcomes) >= self.threshold:
            self.state, self.opened_at = CircuitState.OPEN, now
            self._outcomes.clear()
