"""Magento order → QuickBooks SalesReceipt/Invoice. Pure: no IO, no clock, no globals.

Where an order's tax, shipping, discount, lines and identity get decided.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from app.domain.money import ZERO, line_product, to_cents
from app.domain.naming import customer_display_name, item_name
from schemas.magento import MagentoOrder, MagentoOrderItem
from schemas.qbo import (
    DiscountDetail,
    DocLine,
    DocType,
    Ref,
    SalesDocument,
    SalesItemDetail,
    TaxDetail,
)

DOC_NUMBER_MAX = 21
TAX = "TAX"
NON = "NON"


@dataclass(frozen=True)
class MappingConfig:
    doc_number_prefix: str = "MAG-"
    deposit_account_id: str = "4"
    deposit_account_name: str = "Undeposited Funds"
    discount_account_id: str = "86"
    income_account_id: str = "79"
    shipping_item_name: str = "Shipping"
    # Payment comes later for these methods: book an Invoice instead of a SalesReceipt.
    invoice_payment_methods: frozenset[str] = field(default_factory=lambda: frozenset({"purchaseorder"}))
    reconcile_tolerance: Decimal = Decimal("0.01")


@dataclass(frozen=True)
class CustomerNeed:
    email: str  # lower-cased: the customers table key
    display_name: str
    given_name: str | None
    family_name: str | None
    company_name: str | None


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
    doc_type: DocType
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


def customer_need(order: MagentoOrder) -> CustomerNeed:
    bill = order.billing_address
    first = order.customer_firstname or (bill.firstname if bill else None)
    last = order.customer_lastname or (bill.lastname if bill else None)
    return CustomerNeed(
        email=order.customer_email.strip().lower(),
        display_name=customer_display_name(first, last, order.customer_email),
        given_name=(first or "").strip()[:100] or None,
        family_name=(last or "").strip()[:100] or None,
        company_name=(bill.company or "").strip()[:100] or None if bill else None,
    )


def item_needs(order: MagentoOrder, cfg: MappingConfig) -> list[ItemNeed]:
    needs: dict[str, ItemNeed] = {}
    for it in booked_items(order.items):
        name = item_name(it.sku)
        needs.setdefault(name, ItemNeed(name=name, sku=it.sku, description=it.name, item_type="NonInventory"))
    if order.shipping_amount > ZERO:
        name = cfg.shipping_item_name
        needs.setdefault(name, ItemNeed(name=name, sku=None, description="Shipping", item_type="Service"))
    return list(needs.values())


# ---------------------------------------------------------------- identity


def doc_number(order: MagentoOrder, prefix: str) -> str:
    """prefix + increment id; a longer id is shortened deterministically (the full id is in PrivateNote)."""
    ref = order.order_ref
    room = DOC_NUMBER_MAX - len(prefix)
    if len(ref) <= room:
        return prefix + ref
    tag = hashlib.sha1(ref.encode()).hexdigest()[:4]
    return f"{prefix}{ref[: room - 5]}-{tag}"


def doc_type_for(order: MagentoOrder, cfg: MappingConfig) -> DocType:
    method = order.payment.method if order.payment else ""
    return "Invoice" if method in cfg.invoice_payment_methods else "SalesReceipt"


# ---------------------------------------------------------------- the document


def _plain(d: Decimal) -> Decimal:
    """2.0000 → 2, 10.50 → 10.5, without switching to exponent notation."""
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


def _item_line(it: MagentoOrderItem, item_id: str, name: str) -> DocLine:
    amount = to_cents(it.row_total)
    tax_code = Ref(value=TAX if it.tax_amount > ZERO else NON)
    description = it.name
    if line_product(it.qty_ordered, it.price) == amount:
        detail = SalesItemDetail(
            ItemRef=Ref(value=item_id, name=name),
            Qty=_plain(it.qty_ordered),
            UnitPrice=_plain(it.price),
            TaxCodeRef=tax_code,
        )
    else:
        # QBO rejects Amount ≠ round(Qty × UnitPrice) with 6070: send the amount alone.
        detail = SalesItemDetail(ItemRef=Ref(value=item_id, name=name), TaxCodeRef=tax_code)
        description = f"{it.name or it.sku} (qty {_plain(it.qty_ordered)})"
    return DocLine(Amount=amount, DetailType="SalesItemLineDetail", Description=description, SalesItemLineDetail=detail)


def map_order(order: MagentoOrder, refs: ResolvedRefs, cfg: MappingConfig) -> MappedDocument:
    """Build the QBO document for an order whose customer and items are all resolved.

    Raises KeyError naming the item when a reference is missing (a programming error:
    callers check `item_needs` first).
    """
    lines: list[DocLine] = []
    for it in booked_items(order.items):
        name = item_name(it.sku)
        lines.append(_item_line(it, refs.item_ids[name], name))

    if order.shipping_amount > ZERO:
        amount = to_cents(order.shipping_amount)
        ship_name = cfg.shipping_item_name
        lines.append(
            DocLine(
                Amount=amount,
                DetailType="SalesItemLineDetail",
                Description=order.shipping_description,
                SalesItemLineDetail=SalesItemDetail(
                    ItemRef=Ref(value=refs.item_ids[ship_name], name=ship_name),
                    Qty=Decimal(1),
                    UnitPrice=amount,
                    TaxCodeRef=Ref(value=TAX if order.shipping_tax_amount > ZERO else NON),
                ),
            )
        )

    if order.discount_amount != ZERO:
        # Magento's order-level discount is negative; QBO wants a positive discount line.
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

    kind = doc_type_for(order, cfg)
    document = SalesDocument(
        Line=lines,
        CustomerRef=Ref(value=refs.customer_id, name=refs.customer_name),
        TxnDate=order.created_at.date().isoformat() if order.created_at else None,
        DocNumber=doc_number(order, cfg.doc_number_prefix),
        PrivateNote=f"Magento Order ID: {order.order_ref}",
        TxnTaxDetail=TaxDetail(TotalTax=to_cents(order.tax_amount)) if order.tax_amount != ZERO else None,
        DepositToAccountRef=(
            Ref(value=cfg.deposit_account_id, name=cfg.deposit_account_name) if kind == "SalesReceipt" else None
        ),
    )
    return MappedDocument(doc_type=kind, document=document, mismatch=reconcile(document, order, cfg))


def reconcile(document: SalesDocument, order: MagentoOrder, cfg: MappingConfig) -> TotalMismatch | None:
    """The document's total against Magento's grand_total; a difference over the tolerance is reported."""
    total = document.computed_total()
    grand = to_cents(order.grand_total)
    if abs(total - grand) > cfg.reconcile_tolerance:
        return TotalMismatch(document_total=total, magento_grand_total=grand)
    return None
