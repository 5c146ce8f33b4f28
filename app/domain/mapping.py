"""Magento order → QuickBooks SalesReceipt/Invoice. Pure: no IO, no clock, no globals.

Where an order's tax, shipping, discount, lines and identity get decided.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from app.domain.money import ZERO, line_product, to_cents
from app.domain.naming import DISPLAY_NAME_MAX, clean_name, customer_display_name, item_name, with_qualifier
from schemas.magento import MagentoOrder, MagentoOrderItem
from schemas.qbo import (
    DiscountDetail,
    DocLine,
    DocType,
    FormType,
    Ref,
    SalesDocument,
    SalesItemDetail,
    TaxDetail,
    lines_total,
)

DOC_NUMBER_MAX = 21
TAX = "TAX"
NON = "NON"


EXCHANGE_RATE_PLACES = Decimal("0.0000000001")


class MappingError(ValueError):
    """The order cannot be mapped with this configuration (e.g. a tax rate with no QBO tax code)."""


@dataclass(frozen=True)
class PaymentRule:
    """What a Magento payment method books: a SalesReceipt (paid) or an Invoice (paid later)."""

    document: DocType = "SalesReceipt"
    deposit_account_id: str | None = None  # SalesReceipt (Invoice: its Payments): None = the default deposit account
    refund_account_id: str | None = None  # RefundReceipt paid from: None = the account the sale went to
    payment_method_id: str | None = None  # SalesReceipt PaymentMethodRef
    terms_id: str | None = None  # Invoice SalesTermRef
    due_days: int | None = None  # Invoice DueDate = TxnDate + due_days


@dataclass(frozen=True)
class StoreNumbers:
    """A store's own number prefixes (mapping file `[stores.<store_id>]`): where two stores number
    their orders, credit memos or invoices alike. None = the installation's prefix."""

    doc_number_prefix: str | None = None
    refund_number_prefix: str | None = None
    payment_number_prefix: str | None = None


@dataclass(frozen=True)
class MappingConfig:
    """Everything `map_order` may be told; built from the mapping file (app/mapping_file.py)."""

    doc_number_prefix: str = "MAG-"
    deposit_account_id: str = "4"
    deposit_account_name: str = "Undeposited Funds"
    discount_account_id: str = "86"
    income_account_id: str = "79"
    item_type: Literal["NonInventory", "Service"] = "NonInventory"
    shipping_item_name: str = "Shipping"
    adjustment_item_name: str = "Rounding Adjustment"
    # A credit memo's Adjustment Refund (paid back beyond the lines) and Adjustment Fee (kept back).
    refund_adjustment_item_name: str = "Refund Adjustment"
    refund_fee_item_name: str = "Refund Fee"
    refund_number_prefix: str = "MAG-CM-"  # + the credit memo's increment id
    payment_number_prefix: str = "MAG-PAY-"  # PaymentRefNum: + the Magento invoice's increment id
    # Magento's grand_total and the document's total may differ by rounding up to this much: the
    # difference becomes an explicit adjustment line. Beyond it the order is not booked.
    adjustment_tolerance: Decimal = Decimal("0.05")
    store_timezone: str = "UTC"
    home_currency: str = "USD"
    guest_policy: Literal["per_email", "single"] = "per_email"
    guest_customer_name: str = "Web Store Guest"
    tax_mode: Literal["us", "global"] = "us"
    tax_prices: Literal["TaxExcluded", "TaxInclusive"] = "TaxExcluded"
    tax_codes: Mapping[str, str] = field(default_factory=dict)  # Magento rate in percent → QBO TaxCode id
    zero_rate_code: str | None = None  # global: the code of untaxed lines when "0" is not in tax_codes
    default_payment: PaymentRule = PaymentRule()
    stores: Mapping[int, StoreNumbers] = field(default_factory=dict)  # store_id → its own prefixes
    # Payment comes later for a purchase order: book an Invoice.
    payment_rules: Mapping[str, PaymentRule] = field(
        default_factory=lambda: {"purchaseorder": PaymentRule(document="Invoice")}
    )

    @property
    def prices_include_tax(self) -> bool:
        return self.tax_mode == "global" and self.tax_prices == "TaxInclusive"

    def _store(self, store_id: int | None) -> StoreNumbers:
        return self.stores.get(store_id, StoreNumbers()) if store_id is not None else StoreNumbers()

    def doc_prefix(self, store_id: int | None) -> str:
        return self._store(store_id).doc_number_prefix or self.doc_number_prefix

    def refund_prefix(self, store_id: int | None) -> str:
        return self._store(store_id).refund_number_prefix or self.refund_number_prefix

    def payment_prefix(self, store_id: int | None) -> str:
        return self._store(store_id).payment_number_prefix or self.payment_number_prefix

    @property
    def doc_prefixes(self) -> tuple[str, ...]:
        """Every sale and refund DocNumber prefix of the installation (reconcile tells ours by them)."""
        found = [self.doc_number_prefix, self.refund_number_prefix]
        for numbers in self.stores.values():
            found += [p for p in (numbers.doc_number_prefix, numbers.refund_number_prefix) if p]
        return tuple(dict.fromkeys(p for p in found if p))


@dataclass(frozen=True)
class CustomerNeed:
    key: str  # the customers table key: the lower-cased e-mail, or the shared guest customer's (+ "|EUR" …)
    email: str  # lower-cased; "" for the shared guest customer
    display_name: str
    given_name: str | None
    family_name: str | None
    company_name: str | None


    currency: str | None = None  # the order's: a QBO customer books in one currency only

    def in_currency(self, currency: str, home: str) -> CustomerNeed:
        """A foreign-currency buyer is a customer of its own ("Jane Doe (EUR)"), next to the home one."""
        if currency == home:
            return replace(self, currency=currency)
        return replace(self, key=f"{self.key}|{currency}", currency=currency,
                       display_name=with_qualifier(self.display_name, currency))


@dataclass(frozen=True)
class ItemNeed:
    name: str  # the items table key and QBO Item Name
    sku: str | None
    description: str | None
    item_type: str


@dataclass(frozen=True)
class ResolvedRefs:
    customer_id: str
    customer_name: str
    item_ids: Mapping[str, str]  # QBO Item Name → Id


@dataclass(frozen=True)
class TotalMismatch:
    document_total: Decimal
    magento_grand_total: Decimal

    @property
    def difference(self) -> Decimal:
        return self.document_total - self.magento_grand_total


@dataclass(frozen=True)
class MappedDocument:
    doc_type: FormType
    document: SalesDocument
    mismatch: TotalMismatch | None


# ---------------------------------------------------------------- which lines are booked


def _bundle_is_dynamic(children: list[MagentoOrderItem]) -> bool:
    # REST does not expose product_calculations: priced children mean a dynamic-price bundle.
    return any(c.row_total > ZERO for c in children)


def booked_items(items: list[MagentoOrderItem]) -> list[MagentoOrderItem]:
    """The items that carry money, each once.

    A configurable's child repeats the parent's SKU with zero row total: skip it.
    A dynamic bundle books its priced children, a fixed one its parent — never both.
    """
    by_id = {i.item_id: i for i in items if i.item_id is not None}
    children: dict[int, list[MagentoOrderItem]] = defaultdict(list)
    for it in items:
        if it.parent_item_id is not None:
            children[it.parent_item_id].append(it)

    booked = []
    for it in items:
        parent = by_id.get(it.parent_item_id) if it.parent_item_id is not None else None
        if parent is not None:
            if parent.product_type == "configurable":
                continue
            if parent.product_type == "bundle" and not _bundle_is_dynamic(children[parent.item_id or 0]):
                continue
        elif it.product_type == "bundle" and it.item_id is not None and _bundle_is_dynamic(children[it.item_id]):
            continue
        booked.append(it)
    return booked


# ---------------------------------------------------------------- what the order needs in QBO


def guest_key(name: str) -> str:
    return "guest:" + name.lower()


def customer_need(order: MagentoOrder, cfg: MappingConfig = MappingConfig()) -> CustomerNeed:
    return _customer_need(order, cfg).in_currency(order.order_currency_code.upper(), cfg.home_currency)


def _customer_need(order: MagentoOrder, cfg: MappingConfig) -> CustomerNeed:
    if order.customer_is_guest and order.customer_id is None and cfg.guest_policy == "single":
        name = clean_name(cfg.guest_customer_name, DISPLAY_NAME_MAX)
        return CustomerNeed(key=guest_key(name), email="", display_name=name, given_name=None, family_name=None,
                            company_name=None)
    bill = order.billing_address
    first = order.customer_firstname or (bill.firstname if bill else None)
    last = order.customer_lastname or (bill.lastname if bill else None)
    email = order.customer_email.strip().lower()
    return CustomerNeed(
        key=email,
        email=email,
        display_name=customer_display_name(first, last, order.customer_email),
        given_name=(first or "").strip()[:100] or None,
        family_name=(last or "").strip()[:100] or None,
        company_name=(bill.company or "").strip()[:100] or None if bill else None,
    )


def item_needs(order: MagentoOrder, cfg: MappingConfig) -> list[ItemNeed]:
    """Every QBO Item the order's document refers to (products, shipping, the adjustment item)."""
    descriptions = {item_name(it.sku): (it.sku, it.name) for it in booked_items(order.items)}
    needs: dict[str, ItemNeed] = {}
    for line in _draft_lines(order, cfg):
        name = line.SalesItemLineDetail.ItemRef.name if line.SalesItemLineDetail else None
        if name is None or name in needs:
            continue
        if name in descriptions:
            sku, description = descriptions[name]
            needs[name] = ItemNeed(name=name, sku=sku, description=description, item_type=cfg.item_type)
        else:  # shipping or the rounding adjustment: services, not products
            needs[name] = ItemNeed(name=name, sku=None, description=name, item_type="Service")
    return list(needs.values())


# ---------------------------------------------------------------- identity


DOC_NUMBER_PREFIX_MAX = 8  # leaves room for the 13-character hash of a shortened id
_HASH_CHARS = 13  # Crockford base32: 65 bits of the id's SHA-256
_BASE32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def doc_number(order: MagentoOrder, prefix: str) -> str:
    """prefix (the order's store's: MappingConfig.doc_prefix) + increment id. An id too long for QBO's
    21 characters keeps its head and 65 bits of its SHA-256 (base32): two long ids sharing a head
    collide once in ~10^19 pairs, where 16 bits did after a few hundred orders. The full id is in
    PrivateNote."""
    return number_for(order.order_ref, prefix)


def number_for(ref: str, prefix: str) -> str:
    """prefix + ref within QBO's 21 characters (see `doc_number`): DocNumbers and PaymentRefNums."""
    room = DOC_NUMBER_MAX - len(prefix)
    if len(ref) <= room:
        return prefix + ref
    value = int.from_bytes(hashlib.sha256(ref.encode()).digest()[:9], "big") >> (72 - 5 * _HASH_CHARS)
    tag = "".join(_BASE32[(value >> (5 * i)) & 31] for i in reversed(range(_HASH_CHARS)))
    keep = room - _HASH_CHARS - 1
    return f"{prefix}{ref[:keep]}-{tag}" if keep > 0 else f"{prefix}{tag}"


NOTE_PREFIX = "Magento Order ID: "
# An increment id is unique only within a store: the note names the order's store and entity id too,
# so a document of another store's order with the same increment id is never taken for this one's.
_IDENTITY = re.compile(r" \[(?:store (\d+), )?entity (\d+)\]$")  # always the note's end


def identity_tag(entity_id: int | str, store_id: int | None) -> str:
    return f"[store {store_id}, entity {entity_id}]" if store_id is not None else f"[entity {entity_id}]"


def private_note(order: MagentoOrder) -> str:
    note = f"{NOTE_PREFIX}{order.order_ref}"
    if order.relation_parent_real_id or order.relation_parent_id:
        note += f" (edit of order {order.relation_parent_real_id or order.relation_parent_id})"
    return f"{note} {identity_tag(order.entity_id, order.store_id)}"


def note_names_order(note: object, order_ref: str, order_id: str | None = None) -> bool:
    """Whether a document's PrivateNote says it was booked for this Magento order (and not for
    100000012 when we look for 10000001, nor for another store's 10000001): the proof a document
    found by DocNumber is ours. A note without the store and entity (an older magqb's) names the
    increment id only. A note whose entity is this order's is its own even under another number: an
    order first delivered without its increment id was booked, and keeps its DocNumber, under its entity id."""
    if not isinstance(note, str):
        return False
    if order_id is not None and note.startswith(NOTE_PREFIX):
        tag = _IDENTITY.search(note)
        if tag is not None and tag.group(2) == str(order_id):
            return True
    if not note.startswith(NOTE_PREFIX + order_ref):
        return False
    rest = note[len(NOTE_PREFIX) + len(order_ref):]
    if not (rest == "" or rest.startswith(" ")):
        return False
    tag = _IDENTITY.search(rest)
    return tag is None or order_id is None or tag.group(2) == str(order_id)


def note_identity(note: object) -> tuple[str | None, str] | None:
    """(store id, entity id) a PrivateNote names, if it names them."""
    tag = _IDENTITY.search(note) if isinstance(note, str) else None
    return (tag.group(1), tag.group(2)) if tag else None


def payment_rule(order: MagentoOrder, cfg: MappingConfig) -> PaymentRule:
    method = order.payment.method if order.payment else ""
    return cfg.payment_rules.get(method, cfg.default_payment)


def doc_type_for(order: MagentoOrder, cfg: MappingConfig) -> DocType:
    return payment_rule(order, cfg).document


def txn_date(order: MagentoOrder, cfg: MappingConfig) -> date | None:
    """Magento's created_at is UTC; the books want the store's calendar day."""
    return store_day(order.created_at, cfg)


def store_day(when: datetime | None, cfg: MappingConfig) -> date | None:
    """The store's calendar day of a Magento time (UTC, naive)."""
    if when is None:
        return None
    return when.replace(tzinfo=UTC).astimezone(ZoneInfo(cfg.store_timezone)).date()


def exchange_rate(order: MagentoOrder, cfg: MappingConfig) -> Decimal | None:
    """Home-currency units per order-currency unit, from Magento's base-to-order rate.

    Only known when Magento's base currency is the company's home currency; otherwise
    QBO applies its own rate for the day.
    """
    currency = order.order_currency_code.upper()
    if currency == cfg.home_currency or (order.base_currency_code or "").upper() != cfg.home_currency:
        return None
    if order.base_to_order_rate <= ZERO:
        raise MappingError(f"base_to_order_rate {order.base_to_order_rate} is not a rate")
    return (Decimal(1) / order.base_to_order_rate).quantize(EXCHANGE_RATE_PLACES)


# ---------------------------------------------------------------- the document


def _plain(d: Decimal) -> Decimal:
    """2.0000 → 2, 10.50 → 10.5, without switching to exponent notation."""
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


def _tax_code(cfg: MappingConfig, taxed: bool, rate: Decimal | None, what: str) -> Ref:
    """US: TAX/NON by whether Magento charged tax. Elsewhere: the QBO code of the line's rate."""
    if cfg.tax_mode == "us":
        return Ref(value=TAX if taxed else NON)
    key = normalise_rate(rate if rate is not None else ZERO)
    code = cfg.tax_codes.get(key) or (cfg.zero_rate_code if key == "0" else None)
    if code is None:
        raise MappingError(f"{what}: no QBO tax code for the {key} % rate (add it to [tax.codes] in the mapping file)")
    return Ref(value=code)


def shipping_tax_rate(order: MagentoOrder, cfg: MappingConfig) -> Decimal:
    """Magento keeps no rate on shipping: the configured rate that gives its tax to the cent."""
    if order.shipping_tax_amount <= ZERO or order.shipping_amount <= ZERO:
        return ZERO
    taxable = order.shipping_amount - order.shipping_discount_amount
    rates = sorted({Decimal(r) for r in cfg.tax_codes} | {i.tax_percent for i in order.items if i.tax_percent > 0})
    for rate in rates:
        if to_cents(taxable * rate / 100) == order.shipping_tax_amount or \
                to_cents(order.shipping_amount * rate / 100) == order.shipping_tax_amount:
            return rate
    derived = (order.shipping_tax_amount * 100 / order.shipping_amount).quantize(Decimal("0.01"))
    raise MappingError(f"shipping: tax {order.shipping_tax_amount} on {order.shipping_amount} matches no configured "
                       f"rate (about {normalise_rate(derived)} %; add it to [tax.codes] in the mapping file)")


def normalise_rate(rate: Decimal) -> str:
    """8.2500 → "8.25", 23.0 → "23": one spelling per rate for the tax-code map."""
    rate = rate.quantize(Decimal("0.0001"))
    plain = rate.quantize(Decimal(1)) if rate == rate.to_integral_value() else rate.normalize()
    return f"{plain:f}"


def gross_row_total(it: MagentoOrderItem) -> Decimal:
    """The line before discount. Some Magento versions store row_total net of the item's discount
    (reference/magento.md §1.3: 55.2 = 69 − 13.8): the order's discount line takes it off once."""
    gross = line_product(it.qty_ordered, it.price)
    if to_cents(it.row_total) != gross and it.discount_amount > ZERO \
            and to_cents(it.row_total + it.discount_amount) == gross:
        return gross
    return it.row_total


def _item_line(it: MagentoOrderItem, cfg: MappingConfig) -> DocLine:
    name = item_name(it.sku)
    inclusive = cfg.prices_include_tax
    row_total = gross_row_total(it)
    amount = to_cents(row_total + it.tax_amount) if inclusive else to_cents(row_total)
    if cfg.tax_mode == "global" and it.tax_amount > ZERO and it.tax_percent <= ZERO:
        raise MappingError(f"item {it.sku}: taxed ({it.tax_amount}) but Magento sent no tax_percent")
    tax_code = _tax_code(cfg, it.tax_amount > ZERO, it.tax_percent, f"item {it.sku}")
    unit_price = it.price if not inclusive else (row_total + it.tax_amount) / it.qty_ordered
    return quantity_line(name, amount, it.qty_ordered, unit_price, tax_code, it.name, it.sku)


def quantity_line(name: str, amount: Decimal, qty: Decimal, unit_price: Decimal, tax_code: Ref,
                  description: str | None, sku: str) -> DocLine:
    """A product line: with Qty and UnitPrice where QBO's 6070 check (Amount = round(Qty × UnitPrice))
    holds, else the amount alone with the quantity in the description."""
    if line_product(qty, unit_price) == amount and unit_price == unit_price.quantize(Decimal("0.0001")):
        detail = SalesItemDetail(ItemRef=Ref(value=name, name=name), Qty=_plain(qty), UnitPrice=_plain(unit_price),
                                 TaxCodeRef=tax_code)
    else:
        detail = SalesItemDetail(ItemRef=Ref(value=name, name=name), TaxCodeRef=tax_code)
        description = f"{description or sku} (qty {_plain(qty)})"
    return DocLine(Amount=amount, DetailType="SalesItemLineDetail", Description=description, SalesItemLineDetail=detail)


def unit_line(name: str, amount: Decimal, description: str | None, tax_code: Ref) -> DocLine:
    """A line of one unit at `amount` on a Service item (shipping, adjustments)."""
    return DocLine(Amount=amount, DetailType="SalesItemLineDetail", Description=description,
                   SalesItemLineDetail=SalesItemDetail(ItemRef=Ref(value=name, name=name), Qty=Decimal(1),
                                                       UnitPrice=amount, TaxCodeRef=tax_code))


def rounding_line(lines: list[DocLine], grand_total: Decimal, total_tax: Decimal, cfg: MappingConfig,
                  what: str) -> DocLine | None:
    """The adjustment line that brings the lines to Magento's total, when they differ by rounding only
    (at most the tolerance); None when they agree or differ by more (the caller parks that)."""
    difference = to_cents(grand_total) - lines_total(lines, to_cents(total_tax), cfg.prices_include_tax)
    if difference == ZERO or abs(difference) > cfg.adjustment_tolerance:
        return None
    return unit_line(cfg.adjustment_item_name, difference,
                     f"Rounding adjustment to Magento's {what} {to_cents(grand_total)}",
                     _tax_code(cfg, False, None, "rounding adjustment"))


def _shipping_line(order: MagentoOrder, cfg: MappingConfig) -> DocLine:
    base = order.shipping_amount + (order.shipping_tax_amount if cfg.prices_include_tax else ZERO)
    amount = to_cents(base)
    rate = shipping_tax_rate(order, cfg) if cfg.tax_mode == "global" else None
    return unit_line(cfg.shipping_item_name, amount, order.shipping_description,
                     _tax_code(cfg, order.shipping_tax_amount > ZERO, rate, "shipping"))


_last_draft: tuple[MagentoOrder, MappingConfig, tuple[DocLine, ...]] | None = None


def _draft_lines(order: MagentoOrder, cfg: MappingConfig) -> tuple[DocLine, ...]:
    """The document's lines with items referred to by name (ItemRef.value = name until resolved).
    Deciding an order drafts its lines twice (the items it needs, then the document): the last draft
    is kept for the same order and mapping objects (both frozen, lines immutable)."""
    global _last_draft
    last = _last_draft
    if last is not None and last[0] is order and last[1] is cfg:
        return last[2]
    lines = _draft(order, cfg)
    _last_draft = (order, cfg, lines)
    return lines


def _draft(order: MagentoOrder, cfg: MappingConfig) -> tuple[DocLine, ...]:
    lines = [_item_line(it, cfg) for it in booked_items(order.items)]
    if order.shipping_amount > ZERO:
        lines.append(_shipping_line(order, cfg))
    if order.discount_amount != ZERO:
        # Magento's order-level discount is negative (and includes any shipping discount);
        # QBO wants a positive discount line.
        lines.append(
            DocLine(
                Amount=to_cents(abs(order.discount_amount)),
                DetailType="DiscountLineDetail",
                Description=f"Discount {order.discount_description}".strip() if order.discount_description else "Discount",
                DiscountLineDetail=DiscountDetail(
                    PercentBased=False, DiscountAccountRef=Ref(value=cfg.discount_account_id)
                ),
            )
        )
    rounding = rounding_line(lines, order.grand_total, order.tax_amount, cfg, "grand total")
    return tuple([*lines, rounding] if rounding is not None else lines)


def map_order(order: MagentoOrder, refs: ResolvedRefs, cfg: MappingConfig, number: str | None = None) -> MappedDocument:
    """Build the QBO document for an order whose customer and items are all resolved. `number`: the
    DocNumber the order was first sent under (an order keeps it for life, whatever the prefix or its
    increment id say now); None: the number the configuration gives it.

    Raises MappingError when the configuration cannot express the order, and KeyError
    naming the item when a reference is missing (a programming error: callers check
    `item_needs` first).
    """
    lines = []
    for line in _draft_lines(order, cfg):
        detail = line.SalesItemLineDetail
        if detail is not None:
            name = detail.ItemRef.value
            line = line.model_copy(update={"SalesItemLineDetail": detail.model_copy(
                update={"ItemRef": Ref(value=refs.item_ids[name], name=name)})})
        lines.append(line)

    rule = payment_rule(order, cfg)
    day = txn_date(order, cfg)
    note = private_note(order)
    currency = order.order_currency_code.upper()
    receipt = rule.document == "SalesReceipt"
    document = SalesDocument(
        Line=lines,
        CustomerRef=Ref(value=refs.customer_id, name=refs.customer_name),
        TxnDate=day.isoformat() if day else None,
        DocNumber=number or doc_number(order, cfg.doc_prefix(order.store_id)),
        PrivateNote=note,
        TxnTaxDetail=TaxDetail(TotalTax=to_cents(order.tax_amount)) if order.tax_amount != ZERO else None,
        GlobalTaxCalculation=cfg.tax_prices if cfg.tax_mode == "global" else None,
        CurrencyRef=Ref(value=currency),
        ExchangeRate=exchange_rate(order, cfg),
        DepositToAccountRef=(
            Ref(value=rule.deposit_account_id or cfg.deposit_account_id,
                name=None if rule.deposit_account_id else cfg.deposit_account_name) if receipt else None
        ),
        PaymentMethodRef=Ref(value=rule.payment_method_id) if receipt and rule.payment_method_id else None,
        SalesTermRef=Ref(value=rule.terms_id) if not receipt and rule.terms_id else None,
        DueDate=(day + timedelta(days=rule.due_days)).isoformat() if not receipt and day and rule.due_days is not None
        else None,
    )
    return MappedDocument(doc_type=rule.document, document=document, mismatch=reconcile(document, order))


def reconcile(document: SalesDocument, order: MagentoOrder) -> TotalMismatch | None:
    """The document's total against Magento's grand_total: after the adjustment line they are equal,
    or the difference was beyond the tolerance and the order must not be booked."""
    total = document.computed_total()
    grand = to_cents(order.grand_total)
    if total != grand:
        return TotalMismatch(document_total=total, magento_grand_total=grand)
    return None
