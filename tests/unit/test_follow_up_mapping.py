"""Credit memo → refund document and paid invoice → Payment, on the real payloads of tests/fixtures."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app import jsonutil
from app.domain.follow_up_mapping import map_creditmemo, map_payment, refund_item_needs
from app.domain.mapping import MappingConfig, MappingError, PaymentRule
from schemas.magento import MagentoCreditMemo, MagentoInvoice
from schemas.state import SaleFacts

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "magento"
SALE = SaleFacts(customer_id="9", customer_name="Jane Doe", currency="USD", payment_method="checkmo")


def fixture(folder: str) -> dict[str, Any]:
    [path] = (FIXTURES / folder).glob("*.json")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_the_published_credit_memo_books_a_refund_receipt_of_its_line_and_shipping() -> None:
    memo = MagentoCreditMemo.model_validate(fixture("creditmemo"))
    cfg = MappingConfig(payment_rules={"checkmo": PaymentRule(refund_account_id="35", payment_method_id="2")})
    assert [n.name for n in refund_item_needs(memo, SALE, cfg)] == ["simple_1", "Shipping"]
    mapped = map_creditmemo(memo, "000000001", "SalesReceipt", SALE, {"simple_1": "11", "Shipping": "3"}, cfg)
    assert mapped.doc_type == "RefundReceipt" and mapped.mismatch is None
    assert jsonutil.loads(jsonutil.dumps(mapped.document.to_qbo())) == {
        "Line": [
            {"Amount": 100.0, "DetailType": "SalesItemLineDetail", "Description": "simple_1",
             "SalesItemLineDetail": {"ItemRef": {"value": "11", "name": "simple_1"}, "Qty": 1, "UnitPrice": 100,
                                     "TaxCodeRef": {"value": "NON"}}},
            {"Amount": 5.0, "DetailType": "SalesItemLineDetail", "Description": "Shipping refunded",
             "SalesItemLineDetail": {"ItemRef": {"value": "3", "name": "Shipping"}, "Qty": 1, "UnitPrice": 5.0,
                                     "TaxCodeRef": {"value": "NON"}}},
        ],
        "CustomerRef": {"value": "9", "name": "Jane Doe"}, "TxnDate": "2021-04-05", "DocNumber": "MAG-CM-000000001",
        "PrivateNote": "Magento Order ID: 000000001 Credit Memo: 000000001 [store 1, entity 1]", "CurrencyRef": {"value": "USD"},
        "DepositToAccountRef": {"value": "35"}, "PaymentMethodRef": {"value": "2"},
    }
    assert mapped.document.computed_total() == Decimal("105.00") == memo.grand_total


def test_an_invoice_orders_credit_memo_is_a_credit_memo_with_no_account() -> None:
    memo = MagentoCreditMemo.model_validate(fixture("creditmemo"))
    mapped = map_creditmemo(memo, "000000001", "Invoice", SALE, {"simple_1": "11", "Shipping": "3"}, MappingConfig())
    assert mapped.doc_type == "CreditMemo" and mapped.document.DepositToAccountRef is None
    with pytest.raises(MappingError, match="has no refund document"):
        map_creditmemo(memo, "000000001", "Estimate", SALE, {}, MappingConfig())


def test_a_memo_that_refunds_nothing_is_refused_and_a_configurable_child_is_skipped() -> None:
    empty = MagentoCreditMemo.model_validate({"entity_id": 1, "order_id": 1, "grand_total": 0, "items": [
        {"order_item_id": 11, "sku": "MH01-S-Gray", "qty": 1, "price": 0}]})
    with pytest.raises(MappingError, match="refunds nothing"):
        refund_item_needs(empty, SALE, MappingConfig())


def test_the_published_invoice_pays_the_order_invoice() -> None:
    invoice = MagentoInvoice.model_validate(fixture("invoice"))
    assert invoice.paid and invoice.key == "3"
    payment = map_payment(invoice, "000000003", SALE, "145", MappingConfig())
    assert jsonutil.loads(jsonutil.dumps(payment.to_qbo())) == {
        "CustomerRef": {"value": "9", "name": "Jane Doe"}, "TotalAmt": 165.0,
        "Line": [{"Amount": 165.0, "LinkedTxn": [{"TxnId": "145", "TxnType": "Invoice"}]}], "TxnDate": "2017-08-21",
        "PaymentRefNum": "MAG-PAY-000000003",
        "PrivateNote": "Magento Order ID: 000000003 Invoice: 000000003 (paid) [store 1, entity 3]",
        "DepositToAccountRef": {"value": "4"}, "CurrencyRef": {"value": "USD"},
    }
