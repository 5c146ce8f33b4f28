"""A state row always fits one Kafka record (app.domain.state_size): bodies by their place in the log."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain import state_size
from app.domain.mapping import MappingConfig
from app.domain.order_life import on_creditmemo
from app.domain.state_size import MAX_FOLLOW_UPS, StateTooLarge, fit, missing_bodies, placed, row_bytes, with_bodies
from schemas.magento import MagentoCreditMemo
from schemas.state import FollowUp, ItemEntry, LogRef, OrderState

LIMIT = 1_000_000


def memo(n: int, size: int) -> dict[str, Any]:
    return {"entity_id": n + 1, "increment_id": f"2{n:08d}", "order_id": 1, "state": 2, "grand_total": 10.8,
            "subtotal": 10, "tax_amount": 0.8, "items": [{"order_item_id": 1, "sku": "PROD001", "name": "P", "qty": 1,
                                                          "price": 10, "row_total": 10, "tax_amount": 0.8}],
            "comments": [{"comment": "x" * size}]}


def waiting(n: int, size: int) -> OrderState:
    """An order not received yet with `n` credit memos of `size` bytes waiting, each placed in the log."""
    state: OrderState | None = None
    for i in range(n):
        body = memo(i, size)
        d = on_creditmemo(state, MagentoCreditMemo.model_validate(body), body, f"cm{i}",
                          lambda name: ItemEntry(item_id="1"), MappingConfig(), "123")
        assert d.state is not None and d.outcome == "waiting_for_order"
        state = placed(d.state, f"cm{i}", LogRef(topic="magento.orders", partition=3, offset=100 + i))
    assert state is not None
    return state


def test_a_row_that_would_not_fit_leaves_the_largest_bodies_out_and_gets_them_back() -> None:
    state = waiting(3, 600_000)
    assert row_bytes(state) > LIMIT  # what used to be sent, and refused by the producer for ever
    row = fit(state, LIMIT)
    assert row_bytes(row) <= LIMIT - state_size.ROW_SLACK
    assert [f.body is None for f in row.follow_ups].count(True) == 2  # as few as it takes
    refs = missing_bodies(row)
    assert len(refs) == 2 and {r.offset for r in refs} < {100, 101, 102}
    back = with_bodies(row, {state_size.key(r): memo(r.offset - 100, 600_000) for r in refs})
    assert back.follow_ups == state.follow_ups
    small = waiting(3, 100)
    assert fit(small, LIMIT) is small and missing_bodies(small) == []


def test_a_body_without_a_place_in_the_log_is_never_left_out() -> None:
    state = OrderState(status="pending", order_ref="1", event_id="e", follow_ups=[
        FollowUp(kind="refund", key="1", ref="r", status="waiting", event_id="e", body={"x": "y" * 1_100_000})])
    with pytest.raises(StateTooLarge):
        fit(state, LIMIT)


def test_an_order_takes_at_most_so_many_later_events_and_more_are_parked_for_a_person() -> None:
    state = waiting(MAX_FOLLOW_UPS, 10)
    assert len(state.follow_ups) == MAX_FOLLOW_UPS and row_bytes(fit(state, LIMIT)) < LIMIT
    body = memo(MAX_FOLLOW_UPS, 10)
    d = on_creditmemo(state, MagentoCreditMemo.model_validate(body), body, "one-more",
                      lambda name: ItemEntry(item_id="1"), MappingConfig(), "123")
    assert d.outcome == "parked" and d.state is None and d.parked is not None
    assert d.parked.reason == "too_many_later_events" and d.parked.retry_event is not None
    again = on_creditmemo(state, MagentoCreditMemo.model_validate(memo(0, 10)), memo(0, 10), "cm0-again",
                          lambda name: ItemEntry(item_id="1"), MappingConfig(), "123")
    assert again.outcome == "duplicate"  # one it has is still known
