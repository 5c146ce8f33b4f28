"""Which failures are the world's (retry the same event) and which are the event's (dead-letter it).

An agent's work on one event is a handful of Kafka writes around pure decisions. A
write that fails or times out says nothing about the event: it is retried, the event
staying unacknowledged, until it works or the worker stops (then the next owner gets
it). Any other exception is deterministic for that event — a bug, data the mapping
cannot handle — and retrying it would block every event behind it: the caller
dead-letters the event with the exception instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from faust.exceptions import ProducerSendError

T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
STEP = 0.25  # how often a wait looks at the stop flag


class Abandoned(Exception):
    """The worker is stopping: the event is left unacknowledged for the next owner."""


# A record the broker will never take: retrying it would stall everything behind it.
PERMANENT_KAFKA_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PERMANENT_KAFKA_ERRORS):
        return False
    return isinstance(exc, KafkaError | ProducerSendError | TimeoutError | OSError)


async def pause(seconds: float, stopping: Callable[[], bool]) -> None:
    """Sleep, in short steps; raise Abandoned as soon as the worker is stopping."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if stopping():
            raise Abandoned
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(min(remaining, STEP))


async def retry_transient(
    work: Callable[[], Awaitable[T]],
    stopping: Callable[[], bool],
    log: logging.Logger,
    what: str,
    every_error: bool = False,
) -> T:
    """Run `work` until it succeeds. Transient failures (with `every_error`, all of them: for work
    that is only Kafka writes) are retried with backoff (0.5 s doubling to 30 s) while the worker
    runs; any other exception propagates. A stop raises Abandoned — also for an error raised while
    stopping, which is the stop's (a closed producer or HTTP session), not the event's."""
    delay = FIRST_DELAY
    while True:
        try:
            return await work()
        except Abandoned:
            raise  # revoked or fenced (app.adapters.ownership): not an error to retry
        except Exception as exc:
            if stopping():
                raise Abandoned from exc
            if isinstance(exc, PERMANENT_KAFKA_ERRORS) or not (every_error or is_transient(exc)):
                raise
            log.warning("%s: %s (%s); retrying in %.1fs, nothing acknowledged", what, exc.__class__.__name__,
                        str(exc)[:200], delay)
        await pause(delay, stopping)
        delay = min(delay * 2, MAX_DELAY)
