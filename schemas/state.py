"""Rows of the Faust tables (stored in their changelog topics, so they cross process boundaries)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OrderStatus = Literal["resolving", "requested", "synced", "failed", "skipped"]


class TotalMismatchRecord(BaseModel):
    model_config = ConfigDict(frozen=True)
    document_total: Decimal
    magento_grand_total: Decimal
    difference: Decimal


class HistoryEntry(BaseModel):
    """One step of an order's story, for `magqb status`: an event received, a command sent, a result."""

    model_config = ConfigDict(frozen=True)
    at: datetime
    what: str  # order event | command | result | parked
    detail: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


HISTORY_MAX = 40


class OrderState(BaseModel):
    """Where an order stands. `resolving`: waiting for its customer/items; `requested`: the
    create-document command is out; `synced`: the QBO document exists; `failed`: a command
    failed for good or the order could not be mapped/reconciled (parked in the dead-letter
    topic; `magqb dlq retry` or a new delivery of the order tries again); `skipped`: cancelled
    in Magento before it was booked (a later, non-cancelled delivery books it)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    status: OrderStatus
    order_ref: str
    event_id: str
    # The order body, kept until the document exists: a failure at any step can map it again.
    order: dict[str, Any] | None = None
    # Request ids of the commands sent for this order and not answered yet. An order that is
    # resolving or requested always has one; a failed one has a dead letter.
    outstanding: list[str] = Field(default_factory=list)
    # Mixed into this attempt's request ids: "" for the first, the dead letter's id after `dlq retry`,
    # so QBO does not answer a retried request with the fault it gave the first time.
    salt: str = ""
    # QBO refused a cached customer/item id (inactive, deleted): the order's ids were resolved again once.
    refs_refreshed: bool = False
    doc_type: str | None = None
    doc_number: str | None = None
    qbo_id: str | None = None
    mismatch: TotalMismatchRecord | None = None
    error: str | None = None
    duplicates_seen: int = 0
    # When the webhook (or import, replay) of the delivery being booked was received: booking latency.
    received_at: datetime | None = None
    total_amt: Decimal | None = None
    # The order's story, newest last, at most HISTORY_MAX steps (the first one always kept).
    history: list[HistoryEntry] = Field(default_factory=list)
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class CustomerEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    customer_id: str
    display_name: str


class ItemEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    item_id: str


def with_history(state: OrderState, *entries: HistoryEntry) -> OrderState:
    """`state` with `entries` appended to its story, capped (the first step, how it came, is kept)."""
    history = [*state.history, *entries]
    if len(history) > HISTORY_MAX:
        history = [history[0], *history[-(HISTORY_MAX - 1):]]
    return state.model_copy(update={"history": history, "updated_at": datetime.now(UTC)})
