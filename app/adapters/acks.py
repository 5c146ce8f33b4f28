"""Acknowledge only finished work, in offset order per partition.

faust acknowledges a stream's events itself: `events()` acks the current event when
the iterator moves on *or is closed*, and `take_events()` acks the whole batch in a
`finally` — and at shutdown faust closes those iterators while the agent is still
working on what they yielded, then commits. A SIGTERM therefore committed half-done
work: commands whose QBO call was still in flight, a record a retry rung was holding,
an order event halfway through (issue #9: 41 of 90 orders booked across three
restarts). Here agents iterate `stream.noack()` and acknowledge an event only once
what it asked for is durable (a result, a delay topic, a dead letter, a table row),
through an `AckFrontier`: events finish in any order, acks go out in offset order,
so a committed offset never passes an unfinished event. What is left unacknowledged
at a stop is delivered again to the next owner, where the order-state table, the
requestids and the DocNumber guard make the repeat harmless.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(eq=False)
class Slot(Generic[T]):
    item: T
    done: bool = False


class AckFrontier(Generic[K, T]):
    """Per key (a topic partition), the tracked items in arrival order; `finish` releases the
    finished prefix. Pure bookkeeping: the caller acknowledges what it returns, in order."""

    def __init__(self) -> None:
        self._queues: dict[K, deque[Slot[T]]] = {}
        self._size = 0

    def track(self, key: K, item: T) -> Slot[T]:
        """Call in delivery order: a partition's events arrive in offset order."""
        slot = Slot(item)
        self._queues.setdefault(key, deque()).append(slot)
        self._size += 1
        return slot

    def finish(self, key: K, slot: Slot[T]) -> list[T]:
        """Mark `slot` finished; returns the items that may now be acknowledged, oldest first."""
        slot.done = True
        queue = self._queues.get(key)
        released: list[T] = []
        while queue and queue[0].done:
            released.append(queue.popleft().item)
        self._size -= len(released)
        if queue is not None and not queue:
            del self._queues[key]
        return released

    def drop(self, key: K) -> None:
        """Forget a key's items (its partition was revoked: they will be delivered again)."""
        queue = self._queues.pop(key, None)
        if queue:
            self._size -= len(queue)

    def __len__(self) -> int:
        """Tracked items not yet released (finished ones behind an unfinished one included)."""
        return self._size


def manual_acks(stream: Any) -> Any:
    """The stream with faust's own acknowledgements off (faust's StreamT type does not declare noack)."""
    return stream.noack()


async def acknowledge(stream: Any, event: Any) -> None:
    """The one way an agent acknowledges: the consumer is told the event is finished (it refuses
    every other ack — see app.adapters.faust_consumer), then the stream acks it."""
    finished = getattr(stream.app.consumer, "finished", None)
    if finished is not None:
        finished(event.message)
    await stream.ack(event)
