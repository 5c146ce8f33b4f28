"""Rows of the Faust tables (stored in their changelog topics, so they cross process boundaries)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OrderStatus = Literal["resolving", "requested", "synced", "failed", "skipped", "pending"]
FollowUpKind = Literal["refund", "payment", "void"]
# waiting: for the order's own document (or a person, once parked); resolving: for its items;
# requested: the command is out; done: QuickBooks has it; failed: parked in the dead-letter topic.
FollowUpStatus = Literal["waiting", "resolving", "requested", "done", "failed"]


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


class SaleFacts(BaseModel):
    """What later documents of a booked order need from its sale, kept when the order body is not."""

    model_config = ConfigDict(frozen=True)
    customer_id: str
    customer_name: str
    currency: str
    exchange_rate: Decimal | None = None
    payment_method: str = ""
    # order item id → its tax rate (percent): a credit memo line has none of its own.
    tax_rates: dict[str, Decimal] = Field(default_factory=dict)
    # The order's store: its refunds and payments are numbered with the store's prefixes, whatever
    # their own bodies say (a sender may leave store_id out of a credit memo).
    store_id: int | None = None


class LogRef(BaseModel):
    """Where an event is in the order log: a body too large to keep in a state row is read back from there."""

    model_config = ConfigDict(frozen=True)
    topic: str
    partition: int
    offset: int


class FollowUp(BaseModel):
    """A later event of a booked order and the QuickBooks document it becomes: a credit memo (a
    RefundReceipt or CreditMemo), a paid invoice (a Payment), the cancellation (a void)."""

    model_config = ConfigDict(frozen=True)
    kind: FollowUpKind
    key: str  # the credit memo's or invoice's entity_id; "void" for the cancellation
    ref: str  # its increment id, for humans
    status: FollowUpStatus
    event_id: str
    body: dict[str, Any] | None = None  # the credit memo / invoice, until QuickBooks has its document
    # Where its event is in the log: the body is left out of the row (and read back) when the row would not fit.
    body_at: LogRef | None = None
    outstanding: list[str] = Field(default_factory=list)
    salt: str = ""
    refs_refreshed: bool = False  # QBO refused a cached item id of it: resolved again once
    # Its create went out without a DocNumber at least once (the company numbered it): looked up by its note too.
    unnumbered: bool = False
    doc_type: str | None = None
    doc_number: str | None = None
    qbo_id: str | None = None
    total_amt: Decimal | None = None  # what it books (a refund's or payment's amount; a void's is the sale's)
    error: str | None = None


class OrderState(BaseModel):
    """Where an order stands. `resolving`: waiting for its customer/items; `requested`: the
    create-document command is out; `synced`: the QBO document exists; `failed`: a command
    failed for good or the order could not be mapped/reconciled (parked in the dead-letter
    topic; `magqb dlq retry` or a new delivery of the order tries again); `skipped`: cancelled
    in Magento before it was booked (final: no later delivery books it)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    status: OrderStatus  # pending: a credit memo or invoice came before the order itself
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
    # Its create went out without a DocNumber at least once (the company numbered it): looked up by its note too.
    unnumbered: bool = False
    doc_type: str | None = None
    doc_number: str | None = None
    qbo_id: str | None = None
    mismatch: TotalMismatchRecord | None = None
    error: str | None = None
    duplicates_seen: int = 0
    # When the webhook (or import, replay) of the delivery being booked was received: booking latency.
    received_at: datetime | None = None
    total_amt: Decimal | None = None
    order_updated_at: datetime | None = None  # the newest order delivery's updated_at (Magento's clock)
    sync_token: str | None = None  # the document's SyncToken when created: what a void sends first
    sale: SaleFacts | None = None  # set when the document is requested
    # Credit memos, payments and the cancellation, in the order they came.
    follow_ups: list[FollowUp] = Field(default_factory=list)
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


def with_history(state: OrderState, *entries: HistoryEntry, touch: bool = True) -> OrderState:
    """`state` with `entries` appended to its story, capped (the first step, how it came, is kept). `touch`:
    the order moved (a duplicate delivery does not: an order stuck stays stuck however often it is re-sent)."""
    history = [*state.history, *entries]
    if len(history) > HISTORY_MAX:
        history = [history[0], *history[-(HISTORY_MAX - 1):]]
    update: dict[str, Any] = {"history": history}
    if touch:
        update["updated_at"] = datetime.now(UTC)
    return state.model_copy(update=update)
