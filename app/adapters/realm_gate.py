"""Every QBO call of a realm passes this gate: the pacer (quota), the circuit breaker, 429 pauses.

One gate per realm per process; since `qbo.commands` is keyed by realm, one
worker at a time dispatches for a realm, so the gate sees all of its traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from app import metrics
from app.domain.circuit import CircuitBreaker, CircuitState
from app.domain.pacing import Pacer, parse_retry_after

log = logging.getLogger("magqb.dispatcher")


class RealmGate:
    def __init__(
        self,
        realm_id: str,
        pacer: Pacer,
        breaker: CircuitBreaker,
        throttle_backoff: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.realm_id = realm_id
        self.pacer = pacer
        self.breaker = breaker
        self.throttle_backoff = throttle_backoff
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._published = False
        self._publish()
        metrics.QBO_THROTTLED.labels(realm=realm_id)  # at 0 from the start: the first 429s show as an increase

    def _publish(self) -> None:
        # Read when scraped: a realm that went quiet shows 0 requests, not the last busy minute.
        pacer, clock = self.pacer, self._clock
        metrics.QBO_REQUESTS_LAST_MINUTE.labels(realm=self.realm_id).set_function(lambda: pacer.last_minute(clock()))
        metrics.QBO_PACE.labels(realm=self.realm_id).set_function(pacer.pace_per_minute)
        self._published = True

    def forget(self) -> None:
        """The realm's partition was revoked: its per-realm figures are the next owner's (this worker
        publishes them again at its next call, if the partition came back to it)."""
        for gauge in (metrics.QBO_REQUESTS_LAST_MINUTE, metrics.QBO_PACE, metrics.CIRCUIT_OPEN,
                      metrics.REALM_BLOCKED, metrics.REFRESH_TOKEN_EXPIRY):
            with contextlib.suppress(KeyError):
                gauge.remove(self.realm_id)
        self._published = False

    async def before_call(self) -> None:
        """Wait until the quota and the breaker allow one more call, then spend it."""
        if not self._published:
            self._publish()
        async with self._lock:
            announced = False
            while True:
                now = self._clock()
                # The quota first: the breaker's half-open probe is handed out only to a caller who goes now.
                wait = self.pacer.delay(now)
                if wait <= 0:
                    wait = self.breaker.allow(now)
                metrics.CIRCUIT_OPEN.labels(realm=self.realm_id).set(self.breaker.state is CircuitState.OPEN)
                if wait <= 0:
                    self.pacer.record(now)
                    return
                if wait > 1 and not announced:
                    log.info("realm=%s pausing QBO calls for %.1fs (%s)", self.realm_id, wait,
                             "circuit open" if self.breaker.state is CircuitState.OPEN else "quota")
                    announced = True
                await self._sleep(min(wait, 1.0))

    def not_sent(self) -> None:
        """A call let through that never left (no token after all, or fenced): a half-open probe it was goes to
        the next caller now, not after the probe timeout."""
        if self.breaker.state is CircuitState.HALF_OPEN:
            self.breaker.probe_started = None

    def after_call(self, status: int, retry_after: str | None) -> None:
        now = self._clock()
        failed = status == 0 or status >= 500
        was_open = self.breaker.state
        self.breaker.record(failed, now)  # a 429 is QBO answering: not a failure for the breaker
        if status == 429:
            metrics.QBO_THROTTLED.labels(realm=self.realm_id).inc()
            seconds = parse_retry_after(retry_after, self._wall())
            pause = self.pacer.throttled(now, seconds, self.throttle_backoff)
            log.warning("realm=%s QBO throttled us (429): pausing %.0fs, pace now %.0f%% of quota",
                        self.realm_id, pause, self.pacer.scale * 100)
            return
        if self.breaker.state is CircuitState.OPEN and was_open is not CircuitState.OPEN:
            log.error("realm=%s QBO keeps failing: circuit open, next probe in %.0fs", self.realm_id,
                      self.breaker.cooldown)
        elif self.breaker.state is CircuitState.CLOSED and was_open is CircuitState.HALF_OPEN:
            log.info("realm=%s QBO answered the probe: circuit closed", self.realm_id)
        if not failed:
            self.pacer.succeeded()
