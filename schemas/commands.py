"""Commands on `qbo.commands`: what the dispatcher must do in QuickBooks.

Each command carries a deterministic `request_id` (QBO `requestid`): the same
intent always gets the same id, across retries, restarts and replays.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.qbo import DocType, FormType, PaymentDocument, SalesDocument

COMMAND_VERSION: Literal[1] = 1


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = COMMAND_VERSION
    order_id: str = Field(min_length=1, description="Magento entity_id of the order that needs it")
    order_ref: str = Field(min_length=1, description="Magento increment_id, for humans and logs")
    realm_id: str = Field(min_length=1)
    request_id: str = Field(min_length=1, max_length=50)
    issued_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class EnsureCustomer(_Command):
    type: Literal["ensure_customer"] = "ensure_customer"
    fresh: bool = False  # QBO refused the cached id: look it up again, not in the dispatcher's cache
    email: str  # "" for the shared guest customer (mapping file: customers.guests = "single")
    key: str | None = None  # the customers table key; None (older commands) = the e-mail
    currency: str | None = None  # the customer's currency (QBO: a customer books in one currency only)
    display_name: str = Field(min_length=1, max_length=500)
    given_name: str | None = None
    family_name: str | None = None
    company_name: str | None = None


class EnsureItem(_Command):
    type: Literal["ensure_item"] = "ensure_item"
    fresh: bool = False
    name: str = Field(min_length=1, max_length=100, description="QBO Item Name (unique): the SKU")
    sku: str | None = None
    description: str | None = None
    item_type: Literal["NonInventory", "Service"] = "NonInventory"
    income_account_id: str


class CreateDocument(_Command):
    """The order's SalesReceipt/Invoice, or a credit memo's RefundReceipt/CreditMemo."""

    type: Literal["create_document"] = "create_document"
    doc_type: FormType
    document: SalesDocument
    magento_grand_total: Decimal
    store_id: int | None = None  # the order's Magento store (a DocNumber held by another store's order says which)
    # An earlier attempt for this order may have reached QuickBooks (a dlq retry, ids resolved again):
    # the dispatcher looks the DocNumber up before creating. A fresh command goes straight to create.
    verify: bool = False
    # `reconcile --fix` on a booked order: the QBO Id it was booked as. If that document still exists
    # (renumbered, its note edited) it is the order's document, and nothing is created.
    known_id: str | None = None
    # An earlier attempt went out without its DocNumber (the company numbered it then): with `verify`, it is
    # looked up by its note as well as by its number, whatever the company's setting is now.
    find_by_note: bool = False


class VoidDocument(_Command):
    """Magento cancelled a booked order: void its SalesReceipt/Invoice (it stays, with zero amounts).
    Without `qbo_id` (the order's create was parked with no answer: it may or may not be in QuickBooks)
    the document is looked up by `doc_number` first, proven the order's by its PrivateNote; none: done."""

    type: Literal["void_document"] = "void_document"
    doc_type: DocType
    qbo_id: str | None = Field(default=None, min_length=1)
    doc_number: str
    sync_token: str | None = None  # the one it was created with; a stale one costs a read and a retry
    # Without qbo_id, where a company that numbers documents itself has it: the customer's documents.
    customer_id: str | None = None
    unnumbered: bool = False  # its create went out without a DocNumber once: look among the customer's too


class ReceivePayment(_Command):
    """A Magento invoice of an order booked as a QBO Invoice was paid: a Payment applied to that Invoice."""

    type: Literal["receive_payment"] = "receive_payment"
    invoice_ref: str  # the Magento invoice's increment id
    payment: PaymentDocument
    verify: bool = False


AnyCommand = EnsureCustomer | EnsureItem | CreateDocument | VoidDocument | ReceivePayment
QboCommand = Annotated[AnyCommand, Field(discriminator="type")]
command_adapter: TypeAdapter[AnyCommand] = TypeAdapter(QboCommand)


def encode_command(cmd: AnyCommand) -> bytes:
    return cmd.model_dump_json().encode()


def decode_command(raw: bytes) -> AnyCommand:
    return command_adapter.validate_json(raw)
