"""A booked order's later documents. Pure: no IO, no clock, no globals.

- A credit memo of an order booked as a SalesReceipt → a RefundReceipt (money paid back out of the
  account the sale went to, or the payment method's refund account); of one booked as an Invoice →
  a CreditMemo (the customer owes less). Only what the memo refunds: its lines and quantities, its
  shipping, the tax Magento computed, its discount, and the adjustments as lines of their own.
  Its total must equal the memo's grand_total to the cent (a rounding difference within the
  tolerance becomes an adjustment line, as for orders) or it is not booked.
- A paid Magento invoice of an order booked as a QBO Invoice → a Payment applied to that Invoice.
"""

from __future__ import annotations

from decimal import Decimal

from app.domain.mapping import (
    NOTE_PREFIX,
    ItemNeed,
    MappedDocument,
    MappingConfig,
    MappingError,
    PaymentRule,
    TotalMismatch,
    _tax_code,
    exchange_rate,
    identity_tag,
    number_for,
    quantity_line,
    rounding_line,
    store_day,
    unit_line,
)
from app.domain.money import ZERO, to_cents
from app.domain.naming import item_name
from schemas.magento import MagentoCreditMemo, MagentoCreditMemoItem, MagentoInvoice, MagentoOrder
from schemas.qbo import (
    DiscountDetail,
    DocLine,
    PaymentDocument,
    PaymentLine,
    Ref,
    RefundType,
    SalesDocument,
    TaxDetail,
)
from schemas.state import SaleFacts

REFUND_FOR: dict[str, RefundType] = {"SalesReceipt": "RefundReceipt", "Invoice": "CreditMemo"}


def refund_type(sale_doc_type: str, paid: bool = False) -> RefundType:
    """A SalesReceipt's refund is money paid back: a RefundReceipt. An Invoice's is a CreditMemo (the
    customer owes less) — unless the Invoice was paid: then the money goes back too, a RefundReceipt."""
    try:
        kind = REFUND_FOR[sale_doc_type]
    except KeyError:
        raise MappingError(f"an order booked as {sale_doc_type!r} has no refund document") from None
    return "RefundReceipt" if paid else kind


def refund_note(order_ref: str, memo: MagentoCreditMemo, store_id: int | None) -> str:
    # Starts like the sale's note: `note_names_order` proves a document found by DocNumber is this order's.
    return f"{NOTE_PREFIX}{order_ref} Credit Memo: {memo.refund_ref} {identity_tag(memo.order_id, store_id)}"


def payment_note(order_ref: str, invoice: MagentoInvoice, store_id: int | None) -> str:
    return f"{NOTE_PREFIX}{order_ref} Invoice: {invoice.invoice_ref} (paid) {identity_tag(invoice.order_id, store_id)}"


def _rule(sale: SaleFacts, cfg: MappingConfig) -> PaymentRule:
    return cfg.payment_rules.get(sale.payment_method, cfg.default_payment)


def _store(sale: SaleFacts, own: int | None) -> int | None:
    """The order's store (kept with its sale facts), else the one the credit memo or invoice names."""
    return sale.store_id if sale.store_id is not None else own


def sale_facts(order: MagentoOrder, customer_id: str, customer_name: str, cfg: MappingConfig) -> SaleFacts:
    """What a refund or payment of this order needs once its body is gone."""
    return SaleFacts(
        customer_id=customer_id, customer_name=customer_name, currency=order.order_currency_code.upper(),
        exchange_rate=exchange_rate(order, cfg), payment_method=order.payment.method if order.payment else "",
        tax_rates={str(it.item_id): it.tax_percent for it in order.items
                   if it.item_id is not None and it.tax_percent > ZERO},
        store_id=order.store_id,
    )


# ---------------------------------------------------------------- credit memo → refund document


def _item_line(it: MagentoCreditMemoItem, sale: SaleFacts, cfg: MappingConfig) -> DocLine:
    name = item_name(it.sku)
    inclusive = cfg.prices_include_tax
    amount = to_cents(it.row_total + it.tax_amount) if inclusive else to_cents(it.row_total)
    rate = sale.tax_rates.get(str(it.order_item_id)) if it.order_item_id is not None else None
    if cfg.tax_mode == "global" and it.tax_amount > ZERO and not rate:
        raise MappingError(f"credit memo item {it.sku}: taxed ({it.tax_amount}) but its order line has no tax rate")
    tax = _tax_code(cfg, it.tax_amount > ZERO, rate, f"credit memo item {it.sku}")
    unit = it.price if not inclusive else (it.row_total + it.tax_amount) / it.qty
    return quantity_line(name, amount, it.qty, unit, tax, it.name, it.sku)


def _shipping_tax(memo: MagentoCreditMemo, cfg: MappingConfig) -> Ref:
    taxed = memo.shipping_tax_amount > ZERO
    if cfg.tax_mode == "us" or not taxed:
        return _tax_code(cfg, taxed, None, "refunded shipping")
    for rate in sorted(Decimal(r) for r in cfg.tax_codes):
        if to_cents(memo.shipping_amount * rate / 100) == memo.shipping_tax_amount:
            return _tax_code(cfg, True, rate, "refunded shipping")
    raise MappingError(f"refunded shipping: tax {memo.shipping_tax_amount} on {memo.shipping_amount} matches no "
                       f"configured rate (add it to [tax.codes] in the mapping file)")


def _refund_lines(memo: MagentoCreditMemo, sale: SaleFacts, cfg: MappingConfig) -> list[DocLine]:
    """The refund's lines, items named (ItemRef.value = the name until resolved)."""
    lines = [_item_line(it, sale, cfg) for it in memo.items if it.carries_money]
    untaxed = _tax_code(cfg, False, None, "refund adjustment")
    if memo.shipping_amount > ZERO:
        ship = memo.shipping_amount + (memo.shipping_tax_amount if cfg.prices_include_tax else ZERO)
        lines.append(unit_line(cfg.shipping_item_name, to_cents(ship), "Shipping refunded", _shipping_tax(memo, cfg)))
    if memo.discount_amount != ZERO:
        # The discount the refunded lines had: given back less.
        lines.append(DocLine(Amount=to_cents(abs(memo.discount_amount)), DetailType="DiscountLineDetail",
                             Description=f"Discount {memo.discount_description}".strip()
                             if memo.discount_description else "Discount",
                             DiscountLineDetail=DiscountDetail(PercentBased=False,
                                                               DiscountAccountRef=Ref(value=cfg.discount_account_id))))
    if memo.refunded_extra > ZERO:
        lines.append(unit_line(cfg.refund_adjustment_item_name, to_cents(memo.refunded_extra), "Adjustment refund",
                              untaxed))
    if memo.fee_kept > ZERO:
        lines.append(unit_line(cfg.refund_fee_item_name, -to_cents(memo.fee_kept), "Adjustment fee (kept)", untaxed))
    rounding = rounding_line(lines, memo.grand_total, memo.tax_amount, cfg, "credit memo total")
    if rounding is not None:
        lines.append(rounding)
    if not lines:
        raise MappingError(f"credit memo {memo.refund_ref} refunds nothing (no line, shipping or adjustment)")
    return lines


def refund_item_needs(memo: MagentoCreditMemo, sale: SaleFacts, cfg: MappingConfig) -> list[ItemNeed]:
    """Every QBO Item the refund document refers to (its products were the sale's; the adjustments may
    be new)."""
    products = {item_name(it.sku): it for it in memo.items if it.carries_money}
    needs: dict[str, ItemNeed] = {}
    for line in _refund_lines(memo, sale, cfg):
        name = line.SalesItemLineDetail.ItemRef.name if line.SalesItemLineDetail else None
        if name is None or name in needs:
            continue
        it = products.get(name)
        needs[name] = (ItemNeed(name=name, sku=it.sku, description=it.name, item_type=cfg.item_type) if it
                       else ItemNeed(name=name, sku=None, description=name, item_type="Service"))
    return list(needs.values())


def map_creditmemo(memo: MagentoCreditMemo, order_ref: str, sale_doc_type: str, sale: SaleFacts,
                   item_ids: dict[str, str], cfg: MappingConfig, paid: bool = False,
                   number: str | None = None) -> MappedDocument:
    """The RefundReceipt or CreditMemo of a credit memo whose items are resolved (`refund_item_needs`);
    `paid`: the order's Invoice has a Payment (`refund_type`); `number`: the DocNumber it was first sent
    under (kept for life), None for the configuration's."""
    doc_type = refund_type(sale_doc_type, paid)
    lines = []
    for line in _refund_lines(memo, sale, cfg):
        detail = line.SalesItemLineDetail
        if detail is not None:
            name = detail.ItemRef.value
            line = line.model_copy(update={"SalesItemLineDetail": detail.model_copy(
                update={"ItemRef": Ref(value=item_ids[name], name=name)})})
        lines.append(line)
    rule = _rule(sale, cfg)
    day = store_day(memo.created_at, cfg)
    receipt = doc_type == "RefundReceipt"
    document = SalesDocument(
        Line=lines,
        CustomerRef=Ref(value=sale.customer_id, name=sale.customer_name),
        TxnDate=day.isoformat() if day else None,
        DocNumber=number or number_for(memo.refund_ref, cfg.refund_prefix(_store(sale, memo.store_id))),
        PrivateNote=refund_note(order_ref, memo, _store(sale, memo.store_id)),
        TxnTaxDetail=TaxDetail(TotalTax=to_cents(memo.tax_amount)) if memo.tax_amount != ZERO else None,
        GlobalTaxCalculation=cfg.tax_prices if cfg.tax_mode == "global" else None,
        CurrencyRef=Ref(value=sale.currency),
        ExchangeRate=sale.exchange_rate,
        DepositToAccountRef=Ref(value=rule.refund_account_id or rule.deposit_account_id or cfg.deposit_account_id)
        if receipt else None,
        PaymentMethodRef=Ref(value=rule.payment_method_id) if receipt and rule.payment_method_id else None,
    )
    total, grand = document.computed_total(), to_cents(memo.grand_total)
    return MappedDocument(doc_type=doc_type, document=document,
                          mismatch=TotalMismatch(total, grand) if total != grand else None)


# ---------------------------------------------------------------- paid invoice → Payment


def map_payment(invoice: MagentoInvoice, order_ref: str, sale: SaleFacts, invoice_qbo_id: str,
                cfg: MappingConfig, number: str | None = None) -> PaymentDocument:
    """The Payment of a paid Magento invoice, applied to the order's QBO Invoice; `number`: the PaymentRefNum
    it was first sent under (kept for life), None for the configuration's."""
    amount = to_cents(invoice.grand_total)
    if amount <= ZERO:
        raise MappingError(f"invoice {invoice.invoice_ref} pays {amount}: nothing to receive")
    rule = _rule(sale, cfg)
    day = store_day(invoice.updated_at or invoice.created_at, cfg)
    return PaymentDocument(
        CustomerRef=Ref(value=sale.customer_id, name=sale.customer_name),
        TotalAmt=amount,
        Line=[PaymentLine(Amount=amount, LinkedTxn=[{"TxnId": invoice_qbo_id, "TxnType": "Invoice"}])],
        TxnDate=day.isoformat() if day else None,
        PaymentRefNum=number or number_for(invoice.invoice_ref, cfg.payment_prefix(_store(sale, invoice.store_id))),
        PrivateNote=payment_note(order_ref, invoice, _store(sale, invoice.store_id)),
        DepositToAccountRef=Ref(value=rule.deposit_account_id or cfg.deposit_account_id),
        PaymentMethodRef=Ref(value=rule.payment_method_id) if rule.payment_method_id else None,
        CurrencyRef=Ref(value=sale.currency),
        ExchangeRate=sale.exchange_rate,
    )

