"""The sandbox's refunds, credits, payments and voids, with QBO's shapes and faults (reference/qbo.md):
RefundReceipt (paid from a deposit account), CreditMemo (RemainingCredit), Payment settling Invoices
through LinkedTxn, the customer balance they imply, and `?operation=void` (amounts 0, "Voided",
SyncToken + 1, a stale SyncToken is 5010)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.integration.test_sandbox_api import call, token

D = Decimal


def sale(customer: str, item: str, doc_number: str, amount: str = "30.00") -> dict[str, Any]:
    return {"Line": [{"Amount": D(amount), "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"value": item}, "TaxCodeRef": {"value": "NON"}}}],
            "CustomerRef": {"value": customer}, "DocNumber": doc_number}


async def setup(http, sb) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    access = (await token(http, sb))["access_token"]
    _, c, _ = await call(http, sb, access, "POST", "customer", {"DisplayName": "Refund Customer"})
    _, i, _ = await call(http, sb, access, "POST", "item", {"Name": "RFD-1", "Type": "Service",
                                                            "IncomeAccountRef": {"value": "79"}})
    return access, c["Customer"]["Id"], i["Item"]["Id"]


async def balance(http, sb, access: str, customer: str) -> Decimal:  # type: ignore[no-untyped-def]
    _, body, _ = await call(http, sb, access, "GET", f"customer/{customer}")
    return D(str(body["Customer"]["Balance"]))


async def test_a_refund_receipt_is_paid_from_an_account_and_shares_the_docnumber_space(http, qbo_sandbox) -> None:
    access, customer, item = await setup(http, qbo_sandbox)
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "refundreceipt", sale(customer, item, "MAG-CM-1"))
    assert status == 400 and body["Fault"]["Error"][0]["code"] == "2020"  # DepositToAccountRef is required
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "refundreceipt",
                                 {**sale(customer, item, "MAG-CM-1", "12.50"), "DepositToAccountRef": {"value": "4"}})
    assert status == 200
    refund = body["RefundReceipt"]
    assert (refund["TotalAmt"], refund["DocNumber"], refund["DepositToAccountRef"]["value"]) == (D("12.50"), "MAG-CM-1",
                                                                                                "4")
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt", sale(customer, item, "MAG-CM-1"))
    assert status == 400 and body["Fault"]["Error"][0]["code"] == "6140"
    assert "TxnType=Refund Receipt" in body["Fault"]["Error"][0]["Detail"]
    _, found, _ = await call(http, qbo_sandbox, access, "GET", "query",
                             query="SELECT * FROM RefundReceipt WHERE DocNumber = 'MAG-CM-1'")
    assert [r["Id"] for r in found["QueryResponse"]["RefundReceipt"]] == [refund["Id"]]


async def test_invoice_credit_memo_and_payment_move_the_balances(http, qbo_sandbox) -> None:
    access, customer, item = await setup(http, qbo_sandbox)
    _, inv, _ = await call(http, qbo_sandbox, access, "POST", "invoice", sale(customer, item, "MAG-INV-1", "100.00"))
    invoice = inv["Invoice"]
    assert await balance(http, qbo_sandbox, access, customer) == D("100.00")
    _, cm, _ = await call(http, qbo_sandbox, access, "POST", "creditmemo", sale(customer, item, "MAG-CM-2", "25.00"))
    assert cm["CreditMemo"]["RemainingCredit"] == D("25.00")
    assert await balance(http, qbo_sandbox, access, customer) == D("75.00")

    pay = {"CustomerRef": {"value": customer}, "TotalAmt": D("60.00"),
           "Line": [{"Amount": D("60.00"), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]}
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "payment",
                                 {**pay, "TotalAmt": D("200.00"), "Line": [{**pay["Line"][0], "Amount": D("200.00")}]})
    assert status == 400 and body["Fault"]["Error"][0]["code"] == "6000"  # more than the invoice's open balance
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "payment", pay)
    assert status == 200
    payment = body["Payment"]
    assert (payment["TotalAmt"], payment["UnappliedAmt"]) == (D("60.00"), D("0.00"))
    _, body, _ = await call(http, qbo_sandbox, access, "GET", f"invoice/{invoice['Id']}")
    assert body["Invoice"]["Balance"] == D("40.00")
    assert body["Invoice"]["LinkedTxn"] == [{"TxnId": payment["Id"], "TxnType": "Payment"}]
    assert await balance(http, qbo_sandbox, access, customer) == D("15.00")

    # An invoice with a payment applied cannot be voided; voiding the payment reopens it.
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "invoice",
                                 {"Id": invoice["Id"], "SyncToken": "1"}, operation="void")
    assert status == 400 and body["Fault"]["Error"][0]["code"] == "6000"
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "payment",
                                 {"Id": payment["Id"], "SyncToken": "0"}, operation="void")
    assert status == 200 and body["Payment"]["TotalAmt"] == 0 and body["Payment"]["PrivateNote"] == "Voided"
    _, body, _ = await call(http, qbo_sandbox, access, "GET", f"invoice/{invoice['Id']}")
    assert (body["Invoice"]["Balance"], body["Invoice"]["LinkedTxn"]) == (D("100.00"), [])
    assert await balance(http, qbo_sandbox, access, customer) == D("75.00")


async def test_void_keeps_the_document_with_zero_amounts_and_needs_the_current_synctoken(http, qbo_sandbox) -> None:
    access, customer, item = await setup(http, qbo_sandbox)
    _, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt", sale(customer, item, "MAG-V-1"))
    receipt = body["SalesReceipt"]
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt",
                                 {"Id": receipt["Id"], "SyncToken": "7"}, operation="void")
    assert status == 400 and body["Fault"]["Error"][0]["code"] == "5010"
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt",
                                 {"Id": receipt["Id"], "SyncToken": "0"}, operation="void")
    assert status == 200
    voided = body["SalesReceipt"]
    assert (voided["TotalAmt"], voided["PrivateNote"], voided["SyncToken"], voided["DocNumber"]) == (0, "Voided", "1",
                                                                                                      "MAG-V-1")
    assert all(line["Amount"] == 0 for line in voided["Line"])
    _, body, _ = await call(http, qbo_sandbox, access, "POST", "invoice", sale(customer, item, "MAG-V-2", "40.00"))
    assert await balance(http, qbo_sandbox, access, customer) == D("40.00")
    await call(http, qbo_sandbox, access, "POST", "invoice", {"Id": body["Invoice"]["Id"], "SyncToken": "0"},
               operation="void")
    assert await balance(http, qbo_sandbox, access, customer) == D("0.00")
    _, cm, _ = await call(http, qbo_sandbox, access, "POST", "creditmemo", sale(customer, item, "MAG-V-3", "5.00"))
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "creditmemo",
                                 {"Id": cm["CreditMemo"]["Id"], "SyncToken": "0"}, operation="void")
    assert status == 400 and body["Fault"]["Error"][0]["code"] == "500"  # QBO does not void credit memos
