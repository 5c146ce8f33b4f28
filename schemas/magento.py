"""The Magento 2 order as it reaches us (`GET /V1/orders/{id}` shape, `OrderInterface`).

Real senders disagree on types: REST sends numbers as JSON numbers, observer/I/O
events send DB strings ("700.000000", "673"), keys with null values are left
out, guests have no `customer_id`. The models accept all of those and keep
money as Decimal (see reference/magento.md §1 and §5.10).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator


def _lines(v: Any) -> Any:
    # REST sends street as an array; observer events join the lines with "\n".
    if isinstance(v, str):
        return [line for line in v.split("\n")]
    return v


# QBO holds at most 10 digits before the point in a line Amount (reference/qbo.md, "Line Amount max
# 15 digits (10.5)"): an amount at or beyond 10^10 can never be booked, and bounding it keeps every
# sum and rounding inside Decimal's 28 digits. NaN, infinities and huge exponents are refused here.
MAX_AMOUNT = Decimal(10) ** 10
MAX_QTY = Decimal(10) ** 9
MAX_LINES = 1000  # QBO takes at most 750 lines on a taxable form; 1000 Magento items leave room for children
MAX_ID = 2**63 - 1  # Kafka keys and JSON must hold it

# Validation runs in pydantic-core (Rust): numbers arrive as JSON numbers or numeric strings,
# floats become Decimal through their shortest repr (53.6 → Decimal('53.6')), never binary noise.
Money = Annotated[Decimal, Field(allow_inf_nan=False, gt=-MAX_AMOUNT, lt=MAX_AMOUNT)]
Id = Annotated[int, Field(ge=0, le=MAX_ID)]
Text = str  # numbers sent where Magento declares strings ("increment_id": 1000017) become text
Flag = bool  # 0/1, "0"/"1", true/false
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(v: str | None) -> str | None:
    if v is not None and (not v.strip() or _CONTROL.search(v)):
        raise ValueError("must be printable text (it names the order in QuickBooks)")
    return v


# An order's, credit memo's or invoice's increment id (Magento: varchar(32)): it names documents in QuickBooks.
IncrementId = Annotated[Text | None, Field(max_length=32), AfterValidator(_printable)]


class _Lenient(BaseModel):
    # Magento payloads carry dozens of fields we do not use; the raw order is kept in the envelope.
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # Observer/DB-row payloads send null or "" where REST leaves the key out: same meaning.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None and v != ""}
        return data


class MagentoAddress(_Lenient):
    address_type: Text | None = None
    firstname: Text | None = None
    lastname: Text | None = None
    company: Text | None = None
    street: Annotated[list[Text], BeforeValidator(_lines)] = Field(default_factory=list)
    city: Text | None = None
    region: Text | None = None
    region_code: Text | None = None
    postcode: Text | None = None
    country_id: Text | None = None
    telephone: Text | None = None
    email: Text | None = None


class MagentoPayment(_Lenient):
    method: Text
    additional_information: list[Any] | dict[str, Any] | None = None


class MagentoOrderItem(_Lenient):
    item_id: Id | None = None
    parent_item_id: Id | None = None
    sku: Text = Field(min_length=1, max_length=255)
    name: Text | None = None
    product_type: Text | None = None
    qty_ordered: Annotated[Decimal, Field(allow_inf_nan=False, le=MAX_QTY)]
    price: Money = Decimal("0")
    base_price: Money = Decimal("0")
    row_total: Money = Decimal("0")
    tax_amount: Money = Decimal("0")
    tax_percent: Money = Decimal("0")
    discount_amount: Money = Decimal("0")
    order_id: Id | None = None

    @field_validator("sku")
    @classmethod
    def _usable_sku(cls, v: str) -> str:
        from app.domain.naming import item_name

        if not item_name(v):
            raise ValueError("has no character QuickBooks accepts in an item name (colons, tabs and control "
                             "characters are dropped)")
        return v

    @field_validator("qty_ordered")
    @classmethod
    def _positive_qty(cls, v: Decimal) -> Decimal:
        if v <= 0:
            raise ValueError("must be greater than 0")
        return v


def _parse_magento_time(v: Any) -> Any:
    if v is None or isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise ValueError("expected 'YYYY-MM-DD HH:MM:SS'")
    try:
        # Magento's "YYYY-MM-DD HH:MM:SS" (UTC, no offset) is ISO 8601 with a space: the C parser takes it.
        parsed = datetime.fromisoformat(v.strip())
        return parsed.replace(tzinfo=None) if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        pass
    s = v.strip().replace("T", " ").removesuffix("Z")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d"):
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    raise ValueError(f"not a Magento date-time: {v[:40]!r}")


class MagentoOrder(_Lenient):
    """The fields of a Magento order the product reads. Amounts are in the order currency."""

    entity_id: int = Field(ge=1, le=MAX_ID)
    increment_id: IncrementId = None
    state: Text | None = None
    status: Text | None = None
    store_id: Id | None = None
    created_at: Annotated[datetime | None, BeforeValidator(_parse_magento_time)] = None
    # When Magento last changed the order: of two deliveries, the older one must not undo the newer
    # (a new-order webhook retried after the cancellation was accepted).
    updated_at: Annotated[datetime | None, BeforeValidator(_parse_magento_time)] = None

    customer_email: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^@\s]+@[^@\s]+$",
                                                      max_length=254)]
    customer_id: Id | None = None
    customer_is_guest: Flag = False
    customer_firstname: Text | None = None
    customer_lastname: Text | None = None

    order_currency_code: Text = Field("USD", pattern=r"^[A-Za-z]{3}$")
    base_currency_code: Text | None = Field(None, pattern=r"^[A-Za-z]{3}$")
    base_to_order_rate: Money = Decimal("1")

    grand_total: Money
    subtotal: Money = Decimal("0")
    tax_amount: Money = Decimal("0")
    shipping_amount: Money = Decimal("0")
    shipping_tax_amount: Money = Decimal("0")
    shipping_discount_amount: Money = Decimal("0")
    shipping_description: Text | None = None
    discount_amount: Money = Decimal("0")
    discount_description: Text | None = None

    relation_parent_id: Text | None = None
    relation_parent_real_id: Text | None = None

    items: list[MagentoOrderItem] = Field(min_length=1, max_length=MAX_LINES)
    billing_address: MagentoAddress | None = None
    payment: MagentoPayment | None = None

    @field_validator("created_at")
    @classmethod
    def _plausible_date(cls, v: datetime | None) -> datetime | None:
        if v is not None and not 1970 <= v.year <= 2200:
            raise ValueError(f"year {v.year} is not a Magento order's")
        return v

    @model_validator(mode="before")
    @classmethod
    def _from_event_data(cls, data: Any) -> Any:
        """Adobe I/O observer events carry the model's data array, not the REST DTO:
        no `entity_id` (the items' `order_id` is the same key) and `addresses[]`
        instead of `billing_address`."""
        if not isinstance(data, dict):
            return data
        if "entity_id" not in data:
            items = data.get("items")
            if isinstance(items, list) and items and isinstance(items[0], dict) and items[0].get("order_id"):
                data = {**data, "entity_id": items[0]["order_id"]}
        if "billing_address" not in data and isinstance(data.get("addresses"), list):
            billing = [a for a in data["addresses"] if isinstance(a, dict) and a.get("address_type") == "billing"]
            if billing:
                data = {**data, "billing_address": billing[0]}
        return data

    @property
    def order_ref(self) -> str:
        """The human order number (increment id), or the entity id when a sender omits it."""
        return self.increment_id or str(self.entity_id)

    @property
    def key(self) -> str:
        """Kafka key and table key of the order."""
        return str(self.entity_id)


def extract_order(body: Any) -> Any:
    """Find the order object in the body shapes Magento senders use.

    - the bare order object (the blueprint, Adobe Commerce webhooks' `order` aside);
    - `{"data": {order}}` (Mage-OS async events);
    - `{"data": {"value": {order}}}` (Adobe I/O Events CloudEvents).
    """
    if isinstance(body, dict):
        if isinstance(body.get("order"), dict) and "items" not in body:
            return body["order"]
        data = body.get("data")
        if isinstance(data, dict) and "items" not in body:
            value = data.get("value")
            if isinstance(value, dict) and "items" in value:
                return value
            return data
    return body


# ---------------------------------------------------------------- what happens to an order later


# Keys only one of the two carries (InvoiceInterface / CreditmemoInterface): a body sent to the wrong
# webhook is refused rather than booked as the other.
INVOICE_ONLY = ("can_void_flag", "is_used_for_refund")
CREDITMEMO_ONLY = ("adjustment_positive", "adjustment_negative", "creditmemo_status")


class MagentoCreditMemoItem(_Lenient):
    """A refunded line (`CreditmemoItemInterface`). Its `parent_id` is the credit memo, not a parent item:
    a configurable's child comes with price 0, and a bundle books either its parent or its children."""

    order_item_id: Id | None = None
    sku: Text = Field(min_length=1, max_length=255)
    name: Text | None = None
    qty: Annotated[Decimal, Field(allow_inf_nan=False, ge=0, le=MAX_QTY)] = Decimal("0")
    price: Money = Decimal("0")
    row_total: Money = Decimal("0")
    tax_amount: Money = Decimal("0")
    discount_amount: Money = Decimal("0")

    @property
    def carries_money(self) -> bool:
        return self.qty > 0 and (self.row_total != 0 or self.tax_amount != 0 or self.discount_amount != 0)


class MagentoCreditMemo(_Lenient):
    """A refund of (part of) an order, as `GET /V1/creditmemo/{id}` returns it (reference/magento.md,
    "Credit memos and invoices"). grand_total = subtotal + shipping + tax + discount (negative)
    + adjustment_positive − adjustment_negative."""

    entity_id: int = Field(ge=1, le=MAX_ID)
    increment_id: IncrementId = None
    order_id: int = Field(ge=1, le=MAX_ID)
    store_id: Id | None = None
    invoice_id: Id | None = None
    state: Text | None = None
    created_at: Annotated[datetime | None, BeforeValidator(_parse_magento_time)] = None
    order_currency_code: Text | None = Field(None, pattern=r"^[A-Za-z]{3}$")
    grand_total: Annotated[Decimal, Field(allow_inf_nan=False, ge=0, lt=MAX_AMOUNT)]
    subtotal: Money = Decimal("0")
    tax_amount: Money = Decimal("0")
    shipping_amount: Money = Decimal("0")
    shipping_tax_amount: Money = Decimal("0")
    discount_amount: Money = Decimal("0")
    discount_description: Text | None = None
    adjustment: Money = Decimal("0")
    adjustment_positive: Money | None = None
    adjustment_negative: Money | None = None
    items: list[MagentoCreditMemoItem] = Field(default_factory=list, max_length=MAX_LINES)

    @model_validator(mode="before")
    @classmethod
    def _not_an_invoice(cls, data: Any) -> Any:
        # Posted to the wrong webhook, an invoice would validate here and book a refund of a sale.
        if isinstance(data, dict) and any(k in data for k in INVOICE_ONLY):
            raise ValueError(f"this is an invoice ({', '.join(k for k in INVOICE_ONLY if k in data)}), not a credit memo")
        return data

    @property
    def refund_ref(self) -> str:
        return self.increment_id or str(self.entity_id)

    @property
    def key(self) -> str:
        """The order's key: a credit memo travels on its order's partition."""
        return str(self.order_id)

    @property
    def refunded_extra(self) -> Decimal:
        """Adjustment Refund: money given back beyond the lines (0 when absent)."""
        if self.adjustment_positive is not None or self.adjustment_negative is not None:
            return self.adjustment_positive or Decimal("0")
        return self.adjustment if self.adjustment > 0 else Decimal("0")

    @property
    def fee_kept(self) -> Decimal:
        """Adjustment Fee: money kept back (a restocking fee), positive (0 when absent)."""
        if self.adjustment_positive is not None or self.adjustment_negative is not None:
            return self.adjustment_negative or Decimal("0")
        return -self.adjustment if self.adjustment < 0 else Decimal("0")


INVOICE_PAID = "2"  # Magento invoice states: 1 open, 2 paid, 3 canceled


class MagentoInvoice(_Lenient):
    """An invoice of an order (`GET /V1/invoices/{id}`). For an order booked as a QBO Invoice (a purchase
    order) its state 2 says the money came in; for one booked as a SalesReceipt it says nothing new."""

    entity_id: int = Field(ge=1, le=MAX_ID)
    increment_id: IncrementId = None
    order_id: int = Field(ge=1, le=MAX_ID)
    store_id: Id | None = None
    state: Text | None = None
    created_at: Annotated[datetime | None, BeforeValidator(_parse_magento_time)] = None
    updated_at: Annotated[datetime | None, BeforeValidator(_parse_magento_time)] = None
    order_currency_code: Text | None = Field(None, pattern=r"^[A-Za-z]{3}$")
    grand_total: Annotated[Decimal, Field(allow_inf_nan=False, ge=0, lt=MAX_AMOUNT)]

    @model_validator(mode="before")
    @classmethod
    def _not_a_credit_memo(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in CREDITMEMO_ONLY):
            raise ValueError(f"this is a credit memo ({', '.join(k for k in CREDITMEMO_ONLY if k in data)}), "
                             f"not an invoice")
        return data

    @property
    def invoice_ref(self) -> str:
        return self.increment_id or str(self.entity_id)

    @property
    def key(self) -> str:
        return str(self.order_id)

    @property
    def paid(self) -> bool:
        return str(self.state or "").strip().lower() in (INVOICE_PAID, "paid")


def extract_entity(body: Any, marker: str) -> Any:
    """The credit memo or invoice in a webhook body: bare, under its own name (`{"creditmemo": {…}}`),
    under `data` or `data.value` (async events). `marker` is a key only the wanted object has."""
    if isinstance(body, dict) and marker not in body:
        for key in ("creditmemo", "invoice", "entity"):
            if isinstance(body.get(key), dict):
                return body[key]
        data = body.get("data")
        if isinstance(data, dict):
            value = data.get("value")
            return value if isinstance(value, dict) and marker in value else data
    return body
