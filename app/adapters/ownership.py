"""Which partitions this worker may act for, kept current by faust's rebalance signals and a lease.

faust runs agents on through a rebalance (`stream_wait_empty=False`): an event of a
partition that was just revoked may still be in an agent's hands while the new owner
starts on it from the committed offset. An agent asks `owns(tp)` before each side
effect (a QBO call, a forward, a table row) and abandons the event — unacknowledged —
when the answer is no; callbacks registered with `on_revoke` run inside the revocation,
before the new owner can start.

A worker frozen past the session timeout (a long GC pause, a hung or SIGSTOPped host) is
a zombie when it wakes: the group gave its partitions away, but it learns so only at its
next heartbeat, and meanwhile its agents carry on. So ownership is also a lease: the
coordinator removes a member no sooner than a session timeout after the last heartbeat
it answered, and that heartbeat left here no later than when it was sent. Until then
this worker still holds its partitions; after, every effect waits (`held`) until a
heartbeat is answered again (the lease renewed) or the partitions are revoked (the event
abandoned). Kafka's transactions would fence only Kafka writes, never a QuickBooks call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from app import metrics
from app.adapters.transient import Abandoned

log = logging.getLogger("magqb")

# The partition of the event an agent is handling: effects deep inside a handler fence on it.
CURRENT_TP: contextvars.ContextVar[Any] = contextvars.ContextVar("magqb_current_tp", default=None)
FENCE_POLL_SECONDS = 0.1


def _now() -> float:
    return time.monotonic()  # a name of its own, for tests to move the lease's clock alone

RevokeCallback = Callable[[set[Any]], Awaitable[None]]
# The log-end offsets of partitions (a plain client's end_offsets): where each ended when we took it over.
EndOffsets = Callable[[list[Any]], Awaitable[Mapping[Any, int]]]


class Ownership:
    def __init__(self, app: Any, end_offsets: EndOffsets | None = None, timeout: float = 30.0,
                 session_timeout: float | None = None) -> None:
        self._app = app
        self._owned: set[Any] = set()
        # The lease: a heartbeat answered within this long of being sent keeps the membership (a tenth of
        # the session timeout spare, for the two hosts' clocks not ticking at quite the same rate).
        self._lease = session_timeout * 0.9 if session_timeout else None
        self._lease_until = float("inf")
        self._joined_at: float | None = None
        self._lapsed_logged = False
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
        """Assigned to this worker (an effect also waits for the lease: `held`)."""
        return tp in self._owned

    @property
    def epoch(self) -> int:
        """Changes at every assignment: an effect begun in one epoch and ended in another may have crossed a
        rebalance, even when the partition is ours again."""
        return self._epoch

    def leased(self) -> bool:
        return _now() < self._lease_until

    def renewed(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` was answered: the group keeps this member a session from then on."""
        if self._lease is not None:
            self._lease_until = max(self._lease_until if self._lease_until != float("inf") else 0.0,
                                    sent_at + self._lease)
            if self._lapsed_logged:
                self._lapsed_logged = False
                log.warning("the group answered a heartbeat again: effects go on for the partitions still held")

    async def held(self, tp: Any | None = None, stopping: Callable[[], bool] = lambda: False) -> None:
        """Before an effect for `tp` (default: the partition of the event being handled): return while this
        worker holds it; wait while the lease has lapsed; raise Abandoned once it is revoked or we stop."""
        tp = tp if tp is not None else CURRENT_TP.get()
        if tp is None:
            return
        while True:
            if stopping() or tp not in self._owned:
                metrics.EFFECTS_FENCED.inc()
                raise Abandoned
            if self.leased():
                return
            if not self._lapsed_logged:
                self._lapsed_logged = True
                log.error("no heartbeat answered for %.0fs (this worker was paused, or its host hung): it may no "
                          "longer own its partitions, so nothing is sent, written or acknowledged until the group "
                          "answers or takes them away", _now() - self._lease_until + (self._lease or 0))
            await asyncio.sleep(FENCE_POLL_SECONDS)

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
        shown = sorted(f"{getattr(tp, 'topic', tp)}/{getattr(tp, 'partition', '')}" for tp in assigned
                       if not str(getattr(tp, "topic", tp)).endswith("-changelog"))
        log.info("partitions assigned: %d (%s)", len(assigned), ", ".join(shown[:12]) or "none")
        if self._lease is not None:
            # From when the group answered the join (recorded by the wrapper below; the first time, now: the
            # wrappers go on at the first assignment).
            joined, self._joined_at = self._joined_at, None
            self._lease_until = (joined if joined is not None else _now()) + self._lease
            self._watch_heartbeats()
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

    def _watch_heartbeats(self) -> None:
        """Renew the lease at every heartbeat the group answers. aiokafka keeps this to itself: its coordinator's
        `_do_heartbeat` (aiokafka 0.14, in faust's consumer thread) is wrapped once. Should a later aiokafka move
        it, the lease is not kept (a warning says so) and ownership is the rebalance signals' alone, as before."""
        try:
            coordinator = self._app.consumer._thread._ensure_consumer()._coordinator
            beat = coordinator._do_heartbeat
            join = coordinator._on_join_complete
        except AttributeError as exc:
            log.warning("the group's heartbeats cannot be watched (%s): a worker frozen past the session timeout is "
                        "not fenced", exc)
            self._lease, self._lease_until = None, float("inf")
            return
        if getattr(beat, "magqb_lease", False):
            return

        async def watched() -> Any:
            sent_at = _now()
            answered = await beat()
            # aiokafka counts "rebalancing" as answered: the member stays, but only until the rebalance
            # timeout, and it is about to give its partitions up. That is no renewal.
            rejoin = getattr(coordinator, "_rejoin_needed_fut", None)
            if answered and not (rejoin is not None and rejoin.done()):
                self.renewed(sent_at)
            return answered

        async def joined(*args: Any, **kwargs: Any) -> Any:
            self._joined_at = _now()  # the group's answer to the join: the session counts from here
            return await join(*args, **kwargs)

        watched.magqb_lease = True  # type: ignore[attr-defined]
        coordinator._do_heartbeat = watched
        coordinator._on_join_complete = joined

    def assume(self, tps: set[Any]) -> None:
        """For tests without a broker: act as if these were assigned."""
        self._owned = set(tps)
