"""The consumer acknowledges only finished work and never commits past a record still in hand
(app.adapters.faust_consumer, rules 4 and 5). The bookkeeping is faust's own; the app, transport and
Kafka are stand-ins."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from intervaltree import IntervalTree

from app.adapters.faust_consumer import RewindingConsumer

TPX = TP("qbo.commands", 0)


def consumer(committed: int | None = None) -> Any:
    c: Any = RewindingConsumer.__new__(RewindingConsumer)
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._committed_offset = defaultdict(lambda: None)
    c._gap = defaultdict(IntervalTree)
    c._unacked_messages = set()
    c._n_acked = 0
    c._waiting_for_ack = None
    c._finished = set()
    c._first_delivered = {}
    c._start_checked = set()
    c.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    if committed is not None:
        c._committed_offset[TPX] = committed
    return c


class Message:
    def __init__(self, offset: int) -> None:
        self.tp, self.offset, self.topic, self.acked = TPX, offset, TPX.topic, False


def message(offset: int) -> Any:
    return Message(offset)


def test_faust_acking_on_its_own_counts_for_nothing() -> None:
    c = consumer(committed=10)
    skipped = message(10)  # fetched under an old generation: faust skips it, and acks it
    assert c.ack(skipped) is False and not skipped.acked
    assert c._new_offset(TPX) is None
    c.finished(skipped)  # the agent really finished it
    assert c.ack(skipped) is True
    assert c._new_offset(TPX) == 11


def test_a_hole_of_one_record_after_the_committed_offset_is_not_committed_past() -> None:
    c = consumer(committed=10)
    for offset in (11, 12):
        m = message(offset)
        c.finished(m)
        c.ack(m)
    assert c._new_offset(TPX) is None  # faust's own answer here is 13, past the unfinished record 10
    m10 = message(10)
    c.finished(m10)
    c.ack(m10)
    assert c._new_offset(TPX) == 13


def test_a_partition_never_committed_commits_only_from_its_first_delivered_record() -> None:
    c = consumer()
    c._first_delivered[TPX] = 0
    m1 = message(1)
    c.finished(m1)
    c.ack(m1)
    assert c._new_offset(TPX) is None  # record 0 is still in hand (faust would commit 2)
    m0 = message(0)
    c.finished(m0)
    c.ack(m0)
    assert c._new_offset(TPX) == 2


async def test_past_records_deleted_before_they_were_handled_commits_go_on_from_the_log_start() -> None:
    c = consumer(committed=10)

    async def earliest(*tps: Any) -> dict[Any, int]:
        return {TPX: 15}  # offsets 10..14 were deleted (retention) before anything handled them

    c.earliest_offsets = earliest
    await c._check_log_start(TPX, 10)
    for offset in (15, 16):
        m = message(offset)
        c.finished(m)
        c.ack(m)
    assert c._new_offset(TPX) == 17
    c2 = consumer(committed=10)
    c2.earliest_offsets = earliest
    await c2._check_log_start(TPX, 10)
    m = message(16)  # the record at the log start is still in hand
    c2.finished(m)
    c2.ack(m)
    assert c2._new_offset(TPX) is None
    c3 = consumer(committed=10)  # nothing deleted: the record at the committed offset is awaited

    async def intact(*tps: Any) -> dict[Any, int]:
        return {TPX: 0}

    c3.earliest_offsets = intact
    await c3._check_log_start(TPX, 10)
    m = message(15)
    c3.finished(m)
    c3.ack(m)
    assert c3._new_offset(TPX) is None and c3._committed_offset[TPX] == 10
