"""An order's later documents in the sandbox, through the real dispatcher: refunds, payments, voids."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from app.dispatch import Dispatcher, GiveUp
from app.domain.mapping import MappingConfig, PaymentRule
from schemas.commands import CreateDocument, VoidDocument
from schemas.events import CommandFailed, DocumentVoided
from tests.conftest import blueprint_order
from tests.flow_driver import Books
from tests.integration.conftest import REALM, RunningSandbox
from tests.integration.test_dispatch_against_sandbox import make_dispatcher

CFG = MappingConfig(payment_rules={"purchaseorder": PaymentRule(document="Invoice")})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def memo(entity_id: int, order_id: int, qty: int = 1, **over: Any) -> dict[str, Any]:
    """`qty` of the blueprint's PROD001 (10.00 + 0.80 tax each)."""
    return {"entity_id": entity_id, "increment_id": f"2000000{entity_id:02d}", "order_id": order_id, "state": 2,
            "grand_total": Decimal("10.8") * qty, "subtotal": 10 * qty, "tax_amount": Decimal("0.8") * qty,
            "items": [{"order_item_id": 1, "sku": "PROD001", "name": "Product 1", "qty": qty, "price": 10,
                       "row_total": 10 * qty, "tax_amount": Decimal("0.8") * qty}], **over}


def books(sb: RunningSandbox, dispatcher: Dispatcher) -> Books:
    async def answer(cmd: Any) -> Any:
        return await dispatcher.handle(cmd)

    return Books(CFG, REALM, answer)


def docs(sb: RunningSandbox, entity: str) -> list[dict[str, Any]]:
    return list(sb.sandbox.company.entities[entity].values())


async def test_two_partial_refunds_of_a_sales_receipt_net_to_what_was_kept(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    b = books(qbo_sandbox, dispatcher)
    await b.order(blueprint_order())
    await b.creditmemo(memo(1, 100000001), "cm1")
    await b.creditmemo(memo(2, 100000001, shipping_amount=5, grand_total=Decimal("15.8")), "cm2")
    await b.creditmemo(memo(2, 100000001, shipping_amount=5, grand_total=Decimal("15.8")), "cm2-again")
    [sale] = docs(qbo_sandbox, "SalesReceipt")
    refunds = docs(qbo_sandbox, "RefundReceipt")
    assert sorted((r["DocNumber"], Decimal(str(r["TotalAmt"]))) for r in refunds) == [
        ("MAG-CM-200000001", Decimal("10.80")), ("MAG-CM-200000002", Decimal("15.80"))]
    assert all(r["CustomerRef"]["value"] == sale["CustomerRef"]["value"] for r in refunds)
    assert all(r["DepositToAccountRef"]["value"] == "4" for r in refunds)  # out of where the sale went
    net = Decimal(str(sale["TotalAmt"])) - sum(Decimal(str(r["TotalAmt"])) for r in refunds)
    assert net == Decimal("53.60") - Decimal("26.60")
    assert b.parked == []


async def test_an_invoice_order_paid_later_then_refunded(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    b = books(qbo_sandbox, dispatcher)
    await b.order({**blueprint_order(), "payment": {"method": "purchaseorder"}})
    paid = {"entity_id": 31, "increment_id": "000000031", "order_id": 100000001, "state": 2, "grand_total": 53.6}
    await b.invoice(paid)
    await b.invoice(paid, "inv-again")
    await b.creditmemo(memo(3, 100000001), "cm3")
    [invoice] = docs(qbo_sandbox, "Invoice")
    [payment] = docs(qbo_sandbox, "Payment")
    assert (Decimal(str(invoice["Balance"])), invoice["LinkedTxn"]) == (Decimal(0), [{"TxnId": payment["Id"],
                                                                                       "TxnType": "Payment"}])
    assert (payment["PaymentRefNum"], Decimal(str(payment["TotalAmt"]))) == ("MAG-PAY-000000031", Decimal("53.60"))
    # Paid, then refunded: the money goes back out of the account it came into (not a credit on account).
    [refund] = docs(qbo_sandbox, "RefundReceipt")
    assert (refund["DocNumber"], Decimal(str(refund["TotalAmt"]))) == ("MAG-CM-200000003", Decimal("10.80"))
    assert docs(qbo_sandbox, "CreditMemo") == []
    customer = qbo_sandbox.sandbox.company.get("Customer", invoice["CustomerRef"]["value"])
    assert customer is not None and Decimal(str(customer["Balance"])) == Decimal(0)


async def test_an_unpaid_invoice_order_credited_owes_less(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    b = books(qbo_sandbox, dispatcher)
    await b.order({**blueprint_order(), "payment": {"method": "purchaseorder"}})
    await b.creditmemo(memo(3, 100000001), "cm3")
    [invoice] = docs(qbo_sandbox, "Invoice")
    [credit] = docs(qbo_sandbox, "CreditMemo")
    assert (credit["DocNumber"], Decimal(str(credit["TotalAmt"]))) == ("MAG-CM-200000003", Decimal("10.80"))
    customer = qbo_sandbox.sandbox.company.get("Customer", invoice["CustomerRef"]["value"])
    assert customer is not None and Decimal(str(customer["Balance"])) == Decimal("42.80")  # 53.60 − 10.80


async def test_a_cancelled_order_is_voided_even_when_someone_edited_it_since(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    b = books(qbo_sandbox, dispatcher)
    await b.order(blueprint_order())
    [sale] = docs(qbo_sandbox, "SalesReceipt")
    sale["SyncToken"] = "3"  # edited in QuickBooks after magqb created it: the void's token is stale (5010)
    reads = dispatcher.client.reads
    await b.order({**blueprint_order(), "state": "canceled", "status": "canceled"}, "ev-cancel")
    await b.order({**blueprint_order(), "state": "canceled", "status": "canceled"}, "ev-cancel-again")
    assert (Decimal(str(sale["TotalAmt"])), sale["PrivateNote"], sale["SyncToken"]) == (Decimal(0), "Voided", "4")
    assert dispatcher.client.reads - reads == 1  # the stale token cost one read, the duplicate nothing
    assert len(docs(qbo_sandbox, "SalesReceipt")) == 1 and b.parked == []
    state = b.states["100000001"]
    assert [(f.kind, f.status) for f in state.follow_ups] == [("void", "done")]


async def test_a_void_quickbooks_refuses_is_given_up_and_a_voided_document_is_found(qbo_sandbox, session,
                                                                                     tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    b = books(qbo_sandbox, dispatcher)
    await b.order({**blueprint_order(), "payment": {"method": "purchaseorder"}})
    await b.invoice({"entity_id": 31, "order_id": 100000001, "state": 2, "grand_total": 20})
    [invoice] = docs(qbo_sandbox, "Invoice")
    void = VoidDocument(order_id="100000001", order_ref="100000001", realm_id=REALM, request_id="mq-void-1",
                        doc_type="Invoice", qbo_id=invoice["Id"], doc_number=invoice["DocNumber"], sync_token=None)
    refused = await dispatcher.handle(void)
    assert isinstance(refused, GiveUp) and "payments applied" in refused.message
    # The flow never sends that void: the cancellation is parked with both facts.
    await b.order({**blueprint_order(), "payment": {"method": "purchaseorder"}, "state": "canceled"}, "ev-c")
    assert b.parked == [("100000001", "cancel_with_linked")]
    # A document voided by an earlier attempt whose answer was lost: found by a read, not voided twice.
    await b.order({**blueprint_order(), "entity_id": 7, "increment_id": "000000007"}, "ev7")
    receipt = next(d for d in docs(qbo_sandbox, "SalesReceipt") if d["DocNumber"] == "MAG-000000007")
    qbo_sandbox.sandbox.company.void("SalesReceipt", {"Id": receipt["Id"], "SyncToken": receipt["SyncToken"]})
    again = VoidDocument(order_id="7", order_ref="000000007", realm_id=REALM, request_id="mq-void-7",
                         doc_type="SalesReceipt", qbo_id=receipt["Id"], doc_number="MAG-000000007", sync_token="0")
    assert isinstance(await dispatcher.handle(again, verify=True), DocumentVoided)
    assert receipt["SyncToken"] == "1"


async def test_a_payment_whose_answer_was_lost_is_found_not_made_twice(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    b = books(qbo_sandbox, dispatcher)
    await b.order({**blueprint_order(), "payment": {"method": "purchaseorder"}})
    await b.invoice({"entity_id": 31, "increment_id": "000000031", "order_id": 100000001, "state": 2,
                     "grand_total": 53.6})
    [cmd] = [c for c in b.sent if c.type == "receive_payment"]
    second, _ = make_dispatcher(qbo_sandbox, session, tmp_path)  # a restarted worker, the sandbox forgot the id
    reads = second.client.reads
    again = cmd.model_copy(update={"request_id": "mq-pay-other"})
    found = await second.handle(again)  # no verify asked: a Payment is always looked for first
    assert getattr(found, "created", None) is False and len(docs(qbo_sandbox, "Payment")) == 1
    assert second.client.reads - reads == 1


def lost_creates(dispatcher: Dispatcher, lose: list[bool]) -> Any:
    """The dispatcher, except that while `lose[0]` a create's answer is lost after QuickBooks made (or, with
    `lose[1]`, never got) the document: the order is parked `retries_exhausted`, its document there or not."""
    async def answer(cmd: Any) -> Any:
        if lose[0] and isinstance(cmd, CreateDocument):
            if not lose[1]:
                await dispatcher.handle(cmd)
            return CommandFailed(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=REALM,
                                 request_id=cmd.request_id, command_type=cmd.type, error_class="retriable",
                                 message="timed out 6 times", reason="retries_exhausted",
                                 unnumbered=cmd.request_id in dispatcher._unnumbered)  # as agents/dispatcher says
        return await dispatcher.handle(cmd)
    return answer


async def test_a_parked_order_keeps_its_first_number_when_the_prefix_changes(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    lose = [True, False]
    b = Books(CFG, REALM, lost_creates(dispatcher, lose))
    await b.order(blueprint_order())
    assert b.parked == [("100000001", "retries_exhausted")]
    [sale] = docs(qbo_sandbox, "SalesReceipt")
    assert sale["DocNumber"] == "MAG-100000001"
    # The installation changes its prefix; `dlq retry` looks under the number the order first went out with.
    lose[0] = False
    b.cfg = dataclasses.replace(CFG, doc_number_prefix="SHOP-")
    await b.order(blueprint_order(), "ev-retry", retry_of="dl-1")
    assert [d["Id"] for d in docs(qbo_sandbox, "SalesReceipt")] == [sale["Id"]]
    state = b.states["100000001"]
    assert (state.status, state.qbo_id, state.doc_number) == ("synced", sale["Id"], "MAG-100000001")


async def test_an_order_first_sent_by_its_entity_id_keeps_that_number(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    lose = [True, False]
    b = Books(CFG, REALM, lost_creates(dispatcher, lose))
    bare = {**blueprint_order(), "entity_id": 555, "increment_id": None}
    await b.order(bare)
    [sale] = docs(qbo_sandbox, "SalesReceipt")
    assert sale["DocNumber"] == "MAG-555"
    lose[0] = False
    await b.order({**bare, "increment_id": "000000555"}, "ev-with-its-number")  # the follower brings it whole
    assert [d["DocNumber"] for d in docs(qbo_sandbox, "SalesReceipt")] == ["MAG-555"]
    assert (b.states["555"].status, b.states["555"].qbo_id) == ("synced", sale["Id"])


async def test_a_cancellation_of_a_parked_order_voids_what_landed_and_is_done_if_nothing_did(
        qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    lose = [True, False]
    b = Books(CFG, REALM, lost_creates(dispatcher, lose))
    landed = {**blueprint_order(), "entity_id": 7, "increment_id": "000000007"}
    await b.order(landed)
    lose[1] = True  # the next one never reaches QuickBooks
    never = {**blueprint_order(), "entity_id": 8, "increment_id": "000000008"}
    await b.order(never)
    assert b.parked == [("7", "retries_exhausted"), ("8", "retries_exhausted")]
    [sale] = docs(qbo_sandbox, "SalesReceipt")
    reads = dispatcher.client.reads
    await b.order({**landed, "state": "canceled", "status": "canceled"}, "ev-c7")
    await b.order({**never, "state": "canceled", "status": "canceled"}, "ev-c8")
    assert (Decimal(str(sale["TotalAmt"])), sale["PrivateNote"]) == (Decimal(0), "Voided")
    assert len(docs(qbo_sandbox, "SalesReceipt")) == 1
    assert dispatcher.client.reads - reads == 2  # one DocNumber lookup each; the void sent the token it found
    s7, s8 = b.states["7"], b.states["8"]
    assert (s7.status, [(f.kind, f.status, f.qbo_id) for f in s7.follow_ups]) == \
        ("skipped", [("void", "done", sale["Id"])])
    assert (s8.status, [(f.kind, f.status, f.qbo_id) for f in s8.follow_ups]) == ("skipped", [("void", "done", "")])
    # A retry of the old letter of either books nothing: the cancellation is final.
    lose[0] = False
    await b.order(landed, "ev-retry7", retry_of="dl-7")
    await b.order(never, "ev-retry8", retry_of="dl-8")
    assert len(docs(qbo_sandbox, "SalesReceipt")) == 1 and b.states["8"].status == "skipped"


@pytest.mark.parametrize("custom_numbers", [True, False], ids=["numbers-kept", "qbo-numbers-them"])
async def test_an_order_whose_answer_was_lost_is_booked_once_whoever_numbers_the_documents(
        qbo_sandbox, session, tmp_path, custom_numbers: bool, caplog) -> None:
    import logging

    from app import metrics

    qbo_sandbox.sandbox.set_faults({"custom_txn_numbers": custom_numbers})
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    lose = [True, False]
    b = Books(CFG, REALM, lost_creates(dispatcher, lose))
    with caplog.at_level(logging.INFO, logger="magqb.dispatcher"):
        await b.order(blueprint_order())  # created, its answer lost: parked retries_exhausted
        lose[0] = False
        await b.order({**blueprint_order(), "updated_at": "2033-01-02 10:00:00"}, "ev-again")  # a new delivery
        await b.creditmemo(memo(1, 100000001), "cm1")
    [sale] = docs(qbo_sandbox, "SalesReceipt")
    [refund] = docs(qbo_sandbox, "RefundReceipt")
    state = b.states["100000001"]
    assert (state.status, state.qbo_id) == ("synced", sale["Id"])
    assert [(f.status, f.qbo_id) for f in state.follow_ups] == [("done", refund["Id"])]
    if custom_numbers:
        assert (sale["DocNumber"], refund["DocNumber"]) == ("MAG-100000001", "MAG-CM-200000001")
    else:  # QuickBooks' own numbers: found again by the note, said loudly once
        assert sale["DocNumber"].isdigit() and refund["DocNumber"].isdigit()
        assert state.doc_number == sale["DocNumber"]
        assert any("custom transaction numbers are off" in r.getMessage() for r in caplog.records)
    assert metrics.CUSTOM_TXN_NUMBERS.labels(realm=REALM)._value.get() == (1 if custom_numbers else 0)
    assert qbo_sandbox.sandbox.requests["GET /v3/preferences 200"] == 1  # read once, not per document


async def test_an_order_sent_while_quickbooks_numbered_documents_is_found_after_the_setting_is_turned_on(
        qbo_sandbox, session, tmp_path) -> None:
    """Custom transaction numbers off: the create goes out without a DocNumber (QuickBooks numbers it 1001) and its
    answer is lost. The operator turns the setting on, as the log advises; the retry looks by the note as well as
    by the number, and the cancellation of another such order finds its document among the customer's."""
    qbo_sandbox.sandbox.set_faults({"custom_txn_numbers": False})
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    lose = [True, False]
    b = Books(CFG, REALM, lost_creates(dispatcher, lose))
    other = {**blueprint_order(), "entity_id": 9, "increment_id": "000000009"}
    await b.order(blueprint_order())
    await b.order(other)
    assert b.parked == [("100000001", "retries_exhausted"), ("9", "retries_exhausted")]
    assert b.states["100000001"].unnumbered and b.states["9"].unnumbered
    qbo_sandbox.sandbox.set_faults({"custom_txn_numbers": True})
    dispatcher._numbers = None  # the hourly read comes round
    lose[0] = False
    await b.order(blueprint_order(), "ev-retry", retry_of="dl-1")
    await b.order({**other, "state": "canceled", "status": "canceled"}, "ev-cancel")
    receipts = docs(qbo_sandbox, "SalesReceipt")
    assert len(receipts) == 2 and all(r["DocNumber"].isdigit() for r in receipts)
    booked = b.states["100000001"]
    assert (booked.status, booked.qbo_id) in {("synced", r["Id"]) for r in receipts}
    voided = next(r for r in receipts if r["Id"] != booked.qbo_id)
    assert (Decimal(str(voided["TotalAmt"])), voided["PrivateNote"]) == (Decimal(0), "Voided")
    assert [(f.kind, f.status, f.qbo_id) for f in b.states["9"].follow_ups] == [("void", "done", voided["Id"])]
