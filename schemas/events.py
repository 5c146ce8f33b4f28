"""Result events on `qbo.results` (keyed by order id): what happened in QuickBooks.

The order-state, customer and item tables are derived from these events only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from app.redact import scrub
from schemas.qbo import DocType, FormType

EVENT_VERSION: Literal[1] = 1


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = EVENT_VERSION
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    order_id: str
    order_ref: str
    realm_id: str
    request_id: str
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class CustomerResolved(_Result):
    type: Literal["customer_resolved"] = "customer_resolved"
    email: str
    key: str | None = None  # the customers table key; None (older events) = the e-mail
    customer_id: str
    display_name: str
    created: bool


class ItemResolved(_Result):
    type: Literal["item_resolved"] = "item_resolved"
    name: str
    item_id: str
    created: bool


class DocumentCreated(_Result):
    type: Literal["document_created"] = "document_created"
    doc_type: FormType
    doc_number: str
    qbo_id: str
    total_amt: Decimal
    created: bool = Field(description="False when an existing document with the DocNumber was found")
    sync_token: str | None = None  # what a void needs (None: older events)
    # The customer the document is booked to (QuickBooks' word, not the table's): its refunds and payments go
    # to the same one. None: older events.
    customer_id: str | None = None


class DocumentVoided(_Result):
    type: Literal["document_voided"] = "document_voided"
    doc_type: DocType
    qbo_id: str  # "" when `absent`
    doc_number: str
    # A void looked up by DocNumber (the order's create was parked) found no document of the order: nothing to void.
    absent: bool = False


class PaymentReceived(_Result):
    type: Literal["payment_received"] = "payment_received"
    qbo_id: str
    ref_num: str
    amount: Decimal
    created: bool


class CommandFailed(_Result):
    """The dispatcher gave up on a command. The orders agent parks the order (a dead letter with the
    order itself) or, for `stale_reference`, resolves the order's customer and items again once."""

    type: Literal["command_failed"] = "command_failed"
    command_type: str
    error_class: str
    message: str
    fault: dict[str, Any] | None = None
    # permanent | retries_exhausted | internal | docnumber_taken | stale_reference (None: older events)
    reason: str | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)  # schemas.dead_letter.Attempt, newest last
    command: dict[str, Any] | None = None  # the command as dispatched
    # A create sent without its DocNumber (the company numbers documents itself): QBO may hold it under its own.
    unnumbered: bool = False

    @field_validator("message")
    @classmethod
    def _no_secrets(cls, v: str) -> str:
        return scrub(v)


AnyResult = CustomerResolved | ItemResolved | DocumentCreated | DocumentVoided | PaymentReceived | CommandFailed
ResultEvent = Annotated[AnyResult, Field(discriminator="type")]
result_adapter: TypeAdapter[AnyResult] = TypeAdapter(ResultEvent)


def encode_result(ev: AnyResult) -> bytes:
    return ev.model_dump_json().encode()


def decode_result(raw: bytes) -> AnyResult:
    return result_adapter.validate_json(raw)
