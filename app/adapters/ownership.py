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
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("magqb")

RevokeCallback = Callable[[set[Any]], Awaitable[None]]


class Ownership:
    def __init__(self, app: Any) -> None:
        self._owned: set[Any] = set()
        self._callbacks: list[RevokeCallback] = []
        app.on_partitions_revoked.connect(self._revoked)
        app.on_partitions_assigned.connect(self._assigned)

    def owns(self, tp: Any) -> bool:
        return tp in self._owned

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

    def assume(self, tps: set[Any]) -> None:
        """For tests without a broker: act as if these were assigned."""
        self._owned = set(tps)
