"""Which records an earlier owner may have handled: decided by offsets against the partition's end at the
takeover, never by record timestamps (a producer's clock ahead of the worker's used to make a redelivered
command look fresh, and skip the DocNumber lookup)."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from app.adapters.ownership import Ownership

TP = namedtuple("TP", "topic partition")  # faust's TP is a NamedTuple like this one


class Signal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fn: Any) -> None:
        self.receivers.append(fn)

    async def send(self, value: set[Any]) -> None:
        for fn in self.receivers:
            await fn(None, value)


class App:
    def __init__(self) -> None:
        self.on_partitions_revoked = Signal()
        self.on_partitions_assigned = Signal()


async def learnt(own: Ownership) -> None:
    """Wait (bounded) for the end-offset lookups the assignments started."""
    async with asyncio.timeout(5):
        await asyncio.gather(*list(own._tasks))


async def test_records_written_before_the_takeover_may_have_been_handled_after_it_not() -> None:
    app, asked = App(), []
    commands = TP("qbo.commands", 3)

    async def ends(tps: list[Any]) -> dict[Any, int]:
        asked.append(list(tps))
        return {("qbo.commands", 3): 120}  # plain tuples, as the admin client answers

    own = Ownership(app, ends)
    await app.on_partitions_assigned.send({commands})
    assert own.owns(commands)
    assert own.maybe_handled_before(commands, 500)  # before the end is known: every record may have been
    await learnt(own)
    assert own.maybe_handled_before(commands, 119)  # written before we took it over
    assert not own.maybe_handled_before(commands, 120)  # written after: ours alone, whatever its timestamp says
    assert asked == [[commands]]
    await app.on_partitions_assigned.send({commands})  # a rebalance: a new takeover, learnt anew
    assert own.maybe_handled_before(commands, 500)


async def test_unknown_ends_cost_lookups_never_a_skipped_one() -> None:
    app = App()

    async def broken(tps: list[Any]) -> dict[Any, int]:
        raise OSError("no broker")

    own = Ownership(app, broken)
    tp = TP("qbo.commands", 0)
    await app.on_partitions_assigned.send({tp})
    await learnt(own)  # the attempt to learn the ends is over
    assert own.maybe_handled_before(tp, 10**9)
    assert Ownership(App()).maybe_handled_before(tp, 0)  # no end offsets at all (tests without a broker)


async def test_an_answer_for_an_older_assignment_is_not_taken() -> None:
    app, release = App(), asyncio.Event()
    tp = TP("qbo.commands", 1)

    answers = iter([5, 9])  # the partition's end at the first takeover, then at the second
    first_done = asyncio.Event()

    async def slow(tps: list[Any]) -> dict[Any, int]:
        end = next(answers)
        if end == 5:  # the first takeover's answer comes late, after the second's
            await release.wait()
            first_done.set()
        return {("qbo.commands", 1): end}

    own = Ownership(app, slow)
    await app.on_partitions_assigned.send({tp})
    await app.on_partitions_assigned.send({tp})  # rebalanced again before the first answer
    # The second takeover's lookup ends first (the first one waits for `release`).
    done, _ = await asyncio.wait(set(own._tasks), timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    assert not own.maybe_handled_before(tp, 9)  # the second takeover's answer
    release.set()
    await learnt(own)
    assert first_done.is_set()
    assert own.maybe_handled_before(tp, 8)  # not the first's late 5: records 5..8 came before the second
