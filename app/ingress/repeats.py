"""Bodies already recorded: a repeat is answered without writing it again, and a flood of them is refused.

A signed body captured once can be posted again without limit: the signature stays valid. Each copy
used to be appended to the order log (kept forever), and for a parked order mapped and sent to
QuickBooks again. Here the ingress remembers the digest of every event Kafka acknowledged (a bounded
LRU per process): a repeat is answered 202 with the event id it was recorded under and writes
nothing; more repeats from one source than its budget (a token bucket, MAGQB_INGRESS_REPEATS_PER_MINUTE)
are answered 429 with Retry-After. A new body never touches the budget: a flood of repeats cannot
hold back a store's real orders. Another ingress process, or one restarted, writes a repeat once more;
the orders agent then books nothing for it (see app.domain.order_flow).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from app import jsonutil
from app.domain.bounded import Lru


def digest(kind: str, key: str, body: object) -> str:
    """What a repeat shares with its original: the kind, the order and the body as parsed (whitespace and
    key order in the sender's bytes do not make a repeat new)."""
    return hashlib.sha256(f"{kind}\0{key}\0".encode() + jsonutil.dumps(body, sort_keys=True)).hexdigest()


@dataclass
class _Bucket:
    tokens: float
    at: float


class RepeatGuard:
    def __init__(self, per_minute: int, remembered: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._events: Lru[str, str] = Lru(remembered)  # digest → the event id it was recorded under
        self._buckets: dict[str, _Bucket] = {}
        self._clock = clock

    def recorded(self, body_digest: str) -> str | None:
        """The event id a body was recorded under, if this process recorded it."""
        return self._events.get(body_digest)

    def record(self, body_digest: str, event_id: str) -> None:
        self._events[body_digest] = event_id

    def admit(self, source: str) -> float:
        """Take one repeat from `source`'s budget: 0 when there was one, else the seconds until there is."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        rate = self.per_minute / 60.0
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(float(self.per_minute), now)
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return max(1.0, math.ceil((1.0 - bucket.tokens) / rate))
