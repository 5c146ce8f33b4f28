"""Which records an earlier owner may have handled: decided by offsets against the partition's end at the
takeover, never by record timestamps (a producer's clock ahead of the worker's used to make a redelivered
command look fresh, and skip the DocNumber lookup)."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

import pytest

from app import metrics
from app.adapters.ownership import Ownership
from app.adapters.transient import Abandoned

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
        self.consumer: Any = None


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


class Coordinator:
    """aiokafka's group coordinator, as far as the lease sees it: a heartbeat the group answers or not."""

    def __init__(self) -> None:
        self.answer = True
        self._rejoin_needed_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def _do_heartbeat(self) -> bool:
        return self.answer

    async def _on_join_complete(self, *args: Any) -> None:
        return None


class FaustConsumer:
    def __init__(self, coordinator: Coordinator) -> None:
        self._thread = self
        self._consumer = type("C", (), {"_coordinator": coordinator})()

    def _ensure_consumer(self) -> Any:
        return self._consumer


def leased() -> tuple[App, Coordinator, Ownership]:
    """A worker whose ownership is a lease of 0.9 × a 10 s session, over aiokafka's coordinator as the lease sees it."""
    app, coordinator = App(), Coordinator()
    app.consumer = FaustConsumer(coordinator)
    return app, coordinator, Ownership(app, session_timeout=10.0)


async def test_a_worker_frozen_past_its_lease_makes_no_effect_until_the_group_answers_or_takes_it_away(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app, coordinator, own = leased()
    clock = [1000.0]
    monkeypatch.setattr("app.adapters.ownership._now", lambda: clock[0])
    monkeypatch.setattr("app.adapters.ownership.FENCE_POLL_SECONDS", 0.001)
    await app.on_partitions_assigned.send({"tp0", "tp1"})
    await own.held("tp0")  # just joined: held for 9 s (the session timeout less a tenth)
    clock[0] += 8.9
    await own.held("tp0")
    clock[0] += 0.2  # 9.1 s without an answered heartbeat: the group may have given the partitions away
    waiting = asyncio.ensure_future(own.held("tp0"))
    await asyncio.sleep(0.02)
    assert not waiting.done()  # no effect, no event given up either: a slow heartbeat is not a lost partition
    assert await app.consumer._ensure_consumer()._coordinator._do_heartbeat()  # the wrapped heartbeat, answered
    await asyncio.wait_for(waiting, 1)  # renewed from when the heartbeat was sent
    clock[0] += 9.5
    fenced_before = metrics.EFFECTS_FENCED._value.get()
    waiting = asyncio.ensure_future(own.held("tp1"))
    await asyncio.sleep(0.02)
    coordinator.answer = False
    assert not await app.consumer._ensure_consumer()._coordinator._do_heartbeat()  # unanswered: no renewal
    await asyncio.sleep(0.02)
    assert not waiting.done()
    await app.on_partitions_revoked.send({"tp0", "tp1"})  # the zombie learns it was left out
    with pytest.raises(Abandoned):
        await asyncio.wait_for(waiting, 1)
    assert metrics.EFFECTS_FENCED._value.get() == fenced_before + 1


async def test_the_heartbeat_is_wrapped_once_however_often_partitions_are_assigned() -> None:
    app, coordinator, _ = leased()
    await app.on_partitions_assigned.send({"tp0"})
    first = coordinator._do_heartbeat
    await app.on_partitions_assigned.send({"tp0", "tp1"})
    assert coordinator._do_heartbeat is first and getattr(first, "magqb_lease", False)


async def test_a_heartbeat_answered_while_rebalancing_renews_nothing_and_a_join_counts_from_its_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app, coordinator, own = leased()
    clock = [500.0]
    monkeypatch.setattr("app.adapters.ownership._now", lambda: clock[0])
    await app.on_partitions_assigned.send({"tp0"})
    coordinator._rejoin_needed_fut.set_result(None)  # the group is rebalancing: aiokafka still says "answered"
    clock[0] += 5
    assert await coordinator._do_heartbeat()
    clock[0] += 4.5  # 9.5 s after the join: no renewal came of the rebalancing answer
    assert not own.leased()
    await coordinator._on_join_complete(1, "m", "faust", b"")  # the group answered the join at 509.5 ...
    clock[0] += 3  # ... and the assignment reached us 3 s later: the lease counts from the answer
    await app.on_partitions_assigned.send({"tp0"})
    clock[0] += 6.2
    assert not own.leased()
