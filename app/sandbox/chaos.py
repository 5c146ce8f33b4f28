"""The sandbox as a fault-injection rig: QBO's real quotas, plus injected failures.

Quotas follow Intuit's documented limits (reference/qbo.md §1): per realm 500
requests per rolling minute and 10 per second; batch calls 40 per minute, each
batch item counted like a call. Injected faults are rates in [0, 1] drawn from
one seeded RNG, so a run with the same `seed` and the same requests is repeatable.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field


class FaultSettings(BaseModel):
    """What `magqb sandbox --flags` and `PUT /_sandbox/faults` set (same names, underscores)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fail_rate: float = Field(0.0, ge=0, le=1, description="share of calls answered HTTP 500/503")
    throttle_rate: float = Field(0.0, ge=0, le=1, description="share of calls answered with a spurious 429")
    hang_rate: float = Field(0.0, ge=0, le=1, description="share of calls that hang past the client's timeout")
    hang_seconds: float = Field(150.0, ge=0, description="how long a hung call hangs (QBO times out at 120 s)")
    latency_ms: float = Field(0.0, ge=0, description="added latency on every call")
    latency_jitter_ms: float = Field(0.0, ge=0, description="plus a uniform random 0..jitter")
    commit_then_fail_rate: float = Field(
        0.0, ge=0, le=1, description="share of creates that commit, then answer 500 or drop the connection"
    )
    requestid_forget_rate: float = Field(
        0.0, ge=0, le=1,
        description="share of repeated requestids answered as if new (Intuit reports say requestid is not always honoured)",
    )
    token_ttl: int = Field(3600, ge=1, description="access-token lifetime, seconds")
    refresh_token_grace: int = Field(24 * 3600, ge=0, description="seconds an older refresh token stays valid")
    refresh_token_hard_ttl: int = Field(5 * 365 * 24 * 3600, ge=1, description="seconds from consent to the refresh "
                                        "token's hard expiry (Intuit: 5 years)")
    quota_per_minute: int = Field(500, ge=0, description="requests per rolling minute per realm (0 = off)")
    quota_per_second: int = Field(10, ge=0, description="requests per second per realm (0 = off)")
    batch_per_minute: int = Field(40, ge=0, description="batch calls per rolling minute per realm (0 = off)")
    retry_after: bool = Field(False, description="send Retry-After: 60 with a 429")
    throttle_xml: bool = Field(False, description="answer 429s in XML, as QBO's gateway sometimes does")
    seed: int | None = Field(None, description="seed of the fault RNG, for repeatable runs")
    # A company setting rather than a fault, set the same way: Preferences.SalesFormsPrefs.CustomTxnNumbers.
    custom_txn_numbers: bool = Field(True, description="the company's custom transaction numbers (Settings → "
                                     "Sales); off, QBO numbers sales forms itself and ignores the DocNumber sent")


class ThrottleWindow:
    """Counts events in a rolling window; `admit` says whether `n` more fit under `limit`."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._events: deque[float] = deque()

    def _trim(self, now: float) -> None:
        cutoff = now - self.seconds
        events = self._events
        while events and events[0] <= cutoff:
            events.popleft()

    def room(self, limit: int) -> int:
        now = self._clock()
        self._trim(now)
        return limit - len(self._events)

    def add(self, n: int = 1) -> None:
        now = self._clock()
        self._events.extend([now] * n)

    def clear(self) -> None:
        self._events.clear()


@dataclass
class RealmQuota:
    """The realm's request budget: every call (and every batch item) spends from both windows."""

    clock: Callable[[], float] = time.monotonic
    minute: ThrottleWindow = field(init=False)
    second: ThrottleWindow = field(init=False)
    batch_minute: ThrottleWindow = field(init=False)

    def __post_init__(self) -> None:
        self.minute = ThrottleWindow(60.0, self.clock)
        self.second = ThrottleWindow(1.0, self.clock)
        self.batch_minute = ThrottleWindow(60.0, self.clock)

    def admit(self, settings: FaultSettings, calls: int = 1, batch: bool = False) -> bool:
        """Spend `calls` if they fit; a throttled request spends nothing."""
        if settings.quota_per_minute and self.minute.room(settings.quota_per_minute) < calls:
            return False
        if settings.quota_per_second and self.second.room(settings.quota_per_second) < calls:
            return False
        if batch and settings.batch_per_minute and self.batch_minute.room(settings.batch_per_minute) < 1:
            return False
        self.minute.add(calls)
        self.second.add(calls)
        if batch:
            self.batch_minute.add(1)
        return True

    def clear(self) -> None:
        for window in (self.minute, self.second, self.batch_minute):
            window.clear()


class Dice:
    """The fault RNG: one seeded stream for every decision."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def choice(self, options: tuple[int, ...]) -> int:
        return options[self._rng.randrange(len(options))]

    def latency(self, settings: FaultSettings) -> float:
        jitter = self._rng.uniform(0, settings.latency_jitter_ms) if settings.latency_jitter_ms else 0.0
        return (settings.latency_ms + jitter) / 1000.0
