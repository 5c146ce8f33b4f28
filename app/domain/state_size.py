"""An order's state row fits in one Kafka record, however many large credit memos and invoices wait in it.

A row carries the order body (until booked), its story (bounded) and its later events; a credit memo that
waits for its order keeps its body. Ten credit memos of 500 KB waiting for an order made a row no producer
sends: its save failed for good and the partition stalled. Here a row that would not fit leaves the bodies of
its later events out — largest first — keeping where each is in the order log (`FollowUp.body_at`); the agent
reads them back before a decision needs them. And an order takes at most MAX_FOLLOW_UPS later events; more
are parked for a person (no real order has them).
"""

from __future__ import annotations

from typing import Any

from app import jsonutil
from schemas.state import FollowUp, LogRef, OrderState

MAX_FOLLOW_UPS = 200  # credit memos, paid invoices and the cancellation of one order
ROW_SLACK = 4096  # the record's key, headers and framing beside the row


class StateTooLarge(Exception):
    """Even without the later events' bodies the row does not fit (cannot happen within MAX_FOLLOW_UPS)."""


def row_bytes(state: OrderState) -> int:
    return len(jsonutil.dumps(state.model_dump(mode="json")))


def fit(state: OrderState, max_record_bytes: int) -> OrderState:
    """`state` as a row that fits: the bodies of later events that have a place in the log left out, largest
    first, until it does."""
    limit = max_record_bytes - ROW_SLACK
    if row_bytes(state) <= limit:
        return state
    sizes = sorted(((len(jsonutil.dumps(f.body)), i) for i, f in enumerate(state.follow_ups)
                    if f.body is not None and f.body_at is not None), reverse=True)
    follow_ups = list(state.follow_ups)
    for _, i in sizes:
        follow_ups[i] = follow_ups[i].model_copy(update={"body": None})
        trimmed = state.model_copy(update={"follow_ups": follow_ups})
        if row_bytes(trimmed) <= limit:
            return trimmed
    raise StateTooLarge(f"order {state.order_ref}: its state is {row_bytes(state)} bytes, more than a record's "
                        f"{limit} even without its later events' bodies")


def missing_bodies(state: OrderState) -> list[LogRef]:
    """The log places of the bodies a decision may need that the row left out."""
    return [f.body_at for f in state.follow_ups if f.body is None and f.body_at is not None and f.status != "done"]


def with_bodies(state: OrderState, bodies: dict[tuple[str, int, int], dict[str, Any]]) -> OrderState:
    """`state` with the bodies read back from the log put in place."""
    def filled(f: FollowUp) -> FollowUp:
        if f.body is None and f.body_at is not None and f.status != "done":
            body = bodies.get(key(f.body_at))
            if body is not None:
                return f.model_copy(update={"body": body})
        return f

    return state.model_copy(update={"follow_ups": [filled(f) for f in state.follow_ups]})


def placed(state: OrderState, event_id: str, at: LogRef) -> OrderState:
    """The follow-ups the event `event_id` brought, with where it is in the log."""
    if not any(f.event_id == event_id and f.body_at is None and f.body is not None for f in state.follow_ups):
        return state
    return state.model_copy(update={"follow_ups": [
        f.model_copy(update={"body_at": at}) if f.event_id == event_id and f.body_at is None and f.body is not None
        else f for f in state.follow_ups]})


def key(at: LogRef) -> tuple[str, int, int]:
    return at.topic, at.partition, at.offset
