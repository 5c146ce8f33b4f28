"""Spend a realm's QBO quota well: never over it, 429s the exception, and slower after one.

QBO counts 500 requests per rolling minute and 10 per second per realm. The pacer
keeps our own rolling windows a little under those limits (sent time is not QBO's
arrival time), waits out a 429 (Retry-After, else QBO's advice of 60 s) and then
runs slower, recovering its pace step by step. Pure: callers pass the clock.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

# Keep 1 % of the minute quota and one request per second in hand for clock skew and latency jitter.
MINUTE_MARGIN = 0.99
SLOWDOWN = 0.8
RECOVERY_STEP = 0.02
MIN_SCALE = 0.5
# A Retry-After longer than this is not believed: an hour-long pause on a proxy's whim would stop
# a shop's bookkeeping; past the cap the ladder and the circuit breaker take over.
RETRY_AFTER_CAP = 15 * 60.0
_DELTA_SECONDS = re.compile(r"^[0-9]{1,20}$")


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds from a Retry-After header (RFC 9110: delay-seconds or an HTTP-date), capped at
    RETRY_AFTER_CAP; None when absent or not one of those two forms (treated as absent)."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.match(text):
        return min(float(int(text)), RETRY_AFTER_CAP)
    if not text or not text[0].isalpha():  # "-5", "1.5", "1e9", "nan", "inf", "" are not Retry-After values
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is not one
        return None
    return min(max(0.0, when.timestamp() - now_epoch), RETRY_AFTER_CAP)


@dataclass
class Pacer:
    per_minute: int = 500
    per_second: int = 10
    scale: float = 1.0  # < 1 after a 429: the share of the quota we allow ourselves
    paused_until: float = 0.0
    _minute: deque[float] = field(default_factory=deque)
    _second: deque[float] = field(default_factory=deque)

    def _limits(self) -> tuple[int, int]:
        per_minute = max(1, math.floor(self.per_minute * MINUTE_MARGIN * self.scale)) if self.per_minute else 0
        per_second = max(1, math.floor((self.per_second - 1) * self.scale)) if self.per_second else 0
        return per_minute, per_second

    def delay(self, now: float) -> float:
        """Seconds to wait before the next request may be sent (0: now)."""
        wait = max(0.0, self.paused_until - now)
        per_minute, per_second = self._limits()
        if per_second and self._second:
            # Evenly spaced, not bursts: a request delayed on its way cannot bunch up with the next ones.
            wait = max(wait, self._second[-1] + 1.0 / per_second - now)
        for window, limit, span in ((self._minute, per_minute, 60.0), (self._second, per_second, 1.0)):
            if not limit:
                continue
            while window and window[0] <= now - span:
                window.popleft()
            if len(window) >= limit:
                wait = max(wait, window[len(window) - limit] + span - now)
        return wait

    def last_minute(self, now: float) -> int:
        """Requests recorded in the last 60 seconds. Reads a copy, changes nothing: a metrics scrape
        may ask from another thread (the deque is copied in one step under the GIL)."""
        return sum(1 for t in list(self._minute) if t > now - 60.0)

    def pace_per_minute(self) -> int:
        """The requests per minute allowed now (0: no limit)."""
        return self._limits()[0]

    def record(self, now: float) -> None:
        self._minute.append(now)
        self._second.append(now)

    def throttled(self, now: float, retry_after: float | None, backoff: float) -> float:
        """QBO said 429: pause the realm, slow down. Returns the pause in seconds."""
        pause = retry_after if retry_after is not None and retry_after >= 0 else backoff
        self.paused_until = max(self.paused_until, now + pause)
        self.scale = max(MIN_SCALE, self.scale * SLOWDOWN)
        return pause

    def succeeded(self) -> None:
        if self.scale < 1.0:
            self.scale = min(1.0, self.scale + RECOVERY_STEP)
