"""Which partitions this worker may act for, kept current by faust's rebalance signals.

faust runs agents on through a rebalance (`stream_wait_empty=False`): an event of a
partition that was just revoked may still be in an agent's hands while the new owner
starts on it from the committed offset. An agent asks `owns(tp)` before each side
effect (a QBO call, a forward, a table row) and abandons the event — unacknowledged —
when the answer is no; callbacks registered with `on_revoke` run inside the revocation,
before the new owner can start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger("magqb")

RevokeCallback = Callable[[set[Any]], Awaitable[None]]
# The log-end offsets of partitions (a plain client's end_offsets): where each ended when we took it over.
EndOffsets = Callable[[list[Any]], Awaitable[Mapping[Any, int]]]


class Ownership:
    def __init__(self, app: Any, end_offsets: EndOffsets | None = None, timeout: float = 30.0) -> None:
        self._owned: set[Any] = set()
        # Per partition, its log-end offset when this worker last took it over: a record below it was
        # written before, and an earlier owner (or we, before the rebalance) may have handled it. Offsets,
        # not record timestamps: a producer's clock ahead of ours must not make an old record look new.
        self._boundary: dict[Any, int] = {}
        self._epoch = 0
        self._end_offsets = end_offsets
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._callbacks: list[RevokeCallback] = []
        app.on_partitions_revoked.connect(self._revoked)
        app.on_partitions_assigned.connect(self._assigned)

    def owns(self, tp: Any) -> bool:
        return tp in self._owned

    def maybe_handled_before(self, tp: Any, offset: int) -> bool:
        """Whether a record may have been in an earlier owner's hands (or ours, before a rebalance): it was
        written before this worker took the partition over. Such a command may have reached QuickBooks.
        Until the partition's end at the takeover is known, every record may have been."""
        boundary = self._boundary.get(tp)
        return boundary is None or offset < boundary

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
        self._boundary = {}
        self._epoch += 1
        if self._end_offsets is not None and assigned:
            # Learnt beside the rebalance, not inside it: meanwhile every record counts as maybe handled.
            task = asyncio.ensure_future(self._learn(set(assigned), self._epoch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _learn(self, tps: set[Any], epoch: int) -> None:
        assert self._end_offsets is not None
        try:
            ends = await asyncio.wait_for(self._end_offsets(sorted(tps)), self._timeout)
        except Exception as exc:  # noqa: BLE001 - unknown ends only cost lookups: every record counts as maybe handled
            log.warning("the end offsets of the partitions taken over are unknown (%s: %s): commands are looked "
                        "up in QuickBooks before they are created until the next rebalance",
                        exc.__class__.__name__, exc)
            return
        if epoch == self._epoch:  # not a rebalance behind
            self._boundary.update({tp: int(ends[tp]) for tp in tps if tp in ends})

    def assume(self, tps: set[Any]) -> None:
        """For tests without a broker: act as if these were assigned."""
        self._owned = set(tps)
