"""In-order acknowledgement of finished work (app.adapters.acks)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from app.adapters.acks import AckFrontier


def test_an_event_finished_early_waits_for_the_ones_before_it() -> None:
    f: AckFrontier[str, int] = AckFrontier()
    slots = {o: f.track("p0", o) for o in (5, 6, 7)}
    other = f.track("p1", 3)
    assert f.finish("p0", slots[6]) == []  # 5 is still running
    assert f.finish("p0", slots[7]) == []
    assert f.finish("p1", other) == [3]  # partitions are independent
    assert f.finish("p0", slots[5]) == [5, 6, 7]
    assert len(f) == 0


def test_an_unfinished_event_holds_back_every_ack_behind_it() -> None:
    f: AckFrontier[str, int] = AckFrontier()
    slots = [f.track("p", o) for o in range(10)]
    released = []
    for s in slots[3:]:
        released += f.finish("p", s)
    released += f.finish("p", slots[0]) + f.finish("p", slots[1])
    assert released == [0, 1]  # 2 never finished (the worker stopped): nothing past it is acknowledged
    assert len(f) == 8


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=60), st.randoms())
def test_acks_are_in_offset_order_and_never_pass_an_unfinished_event(events, rnd: random.Random) -> None:
    f: AckFrontier[str, int] = AckFrontier()
    tracked = [(key, offset, finishes, f.track(key, offset)) for offset, (key, finishes) in enumerate(events)]
    order = [t for t in tracked if t[2]]
    rnd.shuffle(order)
    acked: dict[str, list[int]] = {}
    for key, _, _, slot in order:
        acked.setdefault(key, []).extend(f.finish(key, slot))
    for key in "abc":
        mine = [(o, fin) for k, o, fin, _ in tracked if k == key]
        expected = []
        for offset, finished in mine:
            if not finished:
                break
            expected.append(offset)
        assert acked.get(key, []) == expected


def test_a_revoked_partition_is_dropped_and_its_redelivery_starts_a_fresh_queue() -> None:
    f: AckFrontier[str, int] = AckFrontier()
    stuck = f.track("p", 5)  # its task was cancelled at the revocation: it will never finish
    f.track("p", 6)
    f.drop("p")
    assert len(f) == 0
    again = [f.track("p", o) for o in (5, 6)]  # delivered again, from the committed offset
    assert f.finish("p", stuck) == []  # a late finish of the dropped copy changes nothing
    assert f.finish("p", again[0]) == [5] and f.finish("p", again[1]) == [6]
