"""Which partitions this worker may act for, kept current by faust's rebalance signals.

faust runs agents on through a rebalance (`stream_wait_empty=False`): an event of a
partition that was just revoked may still be in an agent's hands while the new owner
starts on it from the committed offset. An agent asks `owns(tp)` before each side
effect (a QBO call, a forward, a table row) and abandons the event — unacknowledged —
when the answer is no; callbacks registered with `on_revoke` run inside the revocation,
before the new owner can start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("magqb")

RevokeCallback = Callable[[set[Any]], Awaitable[None]]


# Record timestamps come from the producer's clock: a record stamped up to this long after our assignment
# is still treated as one an earlier owner may have seen.
CLOCK_SKEW_SECONDS = 5.0


class Ownership:
    def __init__(self, app: Any, clock: Callable[[], float] = time.time) -> None:
        self._owned: set[Any] = set()
        self._assigned_at: dict[Any, float] = {}
        self._clock = clock
        self._callbacks: list[RevokeCallback] = []
        app.on_partitions_revoked.connect(self._revoked)
        app.on_partitions_assigned.connect(self._assigned)

    def owns(self, tp: Any) -> bool:
        return tp in self._owned

    def maybe_handled_before(self, tp: Any, record_timestamp: float) -> bool:
        """Whether a record may have been in an earlier owner's hands (or ours, before a rebalance): it was
        written before this worker took the partition over. Such a command may have reached QuickBooks."""
        return record_timestamp < self._assigned_at.get(tp, float("inf")) + CLOCK_SKEW_SECONDS

    def on_revoke(self, callback: RevokeCallback) -> None:
        self._callbacks.append(callback)

    async def _revoked(self, sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        self._owned.difference_update(revoked)
        for callback in self._callbacks:
            try:
                await callback(set(revoked))
            except Exception:
                log.exception("a revocation callback failed")

    async def _assigned(self, sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        self._owned = set(assigned)  # the eager protocol hands out the whole assignment each time
        now = self._clock()
        self._assigned_at = {tp: now for tp in assigned}

    def assume(self, tps: set[Any]) -> None:
        """For tests without a broker: act as if these were assigned."""
        self._owned = set(tps)
