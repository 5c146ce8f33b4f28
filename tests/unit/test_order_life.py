"""An order's later life, decided purely: credit memos, paid invoices, cancellation — early, late, twice."""

from decimal import Decimal
from typing import Any

from app.domain.decision import Command
from app.domain.mapping import MappingConfig
from app.domain.order_flow import on_order, on_result
from app.domain.order_life import on_creditmemo, on_invoice
from schemas.commands import CreateDocument, EnsureItem, ReceivePayment, VoidDocument
from schemas.events import CommandFailed, DocumentCreated, DocumentVoided, ItemResolved, PaymentReceived
from schemas.magento import MagentoCreditMemo, MagentoInvoice, MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState
from tests.conftest import blueprint_order

CFG = MappingConfig()
REALM = "123"
RAW = blueprint_order()
ORDER = MagentoOrder.model_validate(RAW)
ITEMS = {"prod001": ItemEntry(item_id="1"), "prod002": ItemEntry(item_id="2"), "shipping": ItemEntry(item_id="3")}
JANE = {"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")}


def customers(email: str) -> CustomerEntry | None:
    return JANE.get(email)


def items(name: str) -> ItemEntry | None:
    return ITEMS.get(name.lower())


def memo(entity_id: int = 7, ref: str = "200000007", **over: Any) -> dict[str, Any]:
    """One PROD001 of the blueprint's two, with its tax (0.80): 10 + 0.80."""
    body: dict[str, Any] = {"entity_id": entity_id, "increment_id": ref, "order_id": 100000001, "state": 2,
                            "grand_total": 10.8, "subtotal": 10, "tax_amount": 0.8, "shipping_amount": 0,
                            "adjustment_positive": 0, "adjustment_negative": 0, "created_at": "2023-10-28 09:00:00",
                            "items": [{"order_item_id": 1, "sku": "PROD001", "name": "Product 1", "qty": 1,
                                       "price": 10, "row_total": 10, "tax_amount": 0.8}]}
    return {**body, **over}


def booked(raw: dict[str, Any] = RAW) -> OrderState:
    """The order through to its document, as the agent would have it."""
    d = on_order(None, MagentoOrder.model_validate(raw), raw, "ev1", customers, items, CFG, REALM)
    assert d.outcome == "requested" and d.state is not None
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    done = on_result(d.state, created(cmd, "42"), customers, items, CFG, REALM)
    assert done.state is not None and done.state.status == "synced"
    return done.state


def created(cmd: CreateDocument, qbo_id: str) -> DocumentCreated:
    return DocumentCreated(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=REALM, request_id=cmd.request_id,
                           doc_type=cmd.doc_type, doc_number=cmd.document.DocNumber, qbo_id=qbo_id,
                           total_amt=cmd.document.computed_total(), created=True, sync_token="0")


def failure(cmd: Command, reason: str, message: str, error_class: str | None = None, **kw: Any) -> CommandFailed:
    """The dispatcher giving up on `cmd` (as agents/dispatcher.py says it on qbo.results)."""
    return CommandFailed(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=REALM, request_id=cmd.request_id,
                         command_type=cmd.type, error_class=error_class or reason, message=message, reason=reason, **kw)


def refund(state: OrderState | None, body: dict[str, Any], event_id: str = "cm1", **kw: Any):
    return on_creditmemo(state, MagentoCreditMemo.model_validate(body), body, event_id, items, CFG, REALM, **kw)


def test_a_credit_memo_of_a_sales_receipt_order_books_a_refund_receipt_of_its_lines() -> None:
    d = refund(booked(), memo())
    assert d.outcome == "refund_requested"
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and cmd.doc_type == "RefundReceipt"
    doc = cmd.document
    assert doc.DocNumber == "MAG-CM-200000007"
    assert doc.PrivateNote == "Magento Order ID: 100000001 Credit Memo: 200000007 [entity 100000001]"
    assert doc.CustomerRef.value == "9" and doc.DepositToAccountRef is not None and doc.DepositToAccountRef.value == "4"
    assert [(ln.Amount, ln.SalesItemLineDetail.ItemRef.value, ln.SalesItemLineDetail.Qty)
            for ln in doc.Line if ln.SalesItemLineDetail] == [(Decimal("10.00"), "1", Decimal(1))]
    assert doc.computed_total() == Decimal("10.80") and cmd.magento_grand_total == Decimal("10.8")
    assert d.state is not None and d.state.follow_ups[0].status == "requested"


def test_a_credit_memo_of_an_invoice_order_books_a_credit_memo() -> None:
    raw = {**RAW, "payment": {"method": "purchaseorder"}}
    d = refund(booked(raw), memo())
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and cmd.doc_type == "CreditMemo" and cmd.document.DepositToAccountRef is None


def test_adjustments_and_shipping_are_lines_of_their_own_and_new_items_are_resolved_first() -> None:
    body = memo(grand_total=13.8, shipping_amount=5, adjustment_positive=1, adjustment_negative=3)
    d = refund(booked(), body)
    assert d.outcome == "waiting"
    assert sorted(c.name for c in d.commands if isinstance(c, EnsureItem)) == ["Refund Adjustment", "Refund Fee"]
    state = d.state
    assert state is not None and state.follow_ups[0].status == "resolving"
    for i, cmd in enumerate(d.commands):
        assert isinstance(cmd, EnsureItem)
        ITEMS[cmd.name.lower()] = ItemEntry(item_id=f"8{i}")
        step = on_result(state, ItemResolved(order_id="100000001", order_ref="100000001", realm_id=REALM,
                                             request_id=cmd.request_id, name=cmd.name, item_id=f"8{i}",
                                             created=True), customers, items, CFG, REALM)
        assert step.state is not None
        state = step.state
    try:
        assert step.outcome == "refund_requested"
        [doc_cmd] = step.commands
        assert isinstance(doc_cmd, CreateDocument)
        amounts = {ln.SalesItemLineDetail.ItemRef.name: ln.Amount for ln in doc_cmd.document.Line
                   if ln.SalesItemLineDetail}
        assert amounts == {"PROD001": Decimal("10.00"), "Shipping": Decimal("5.00"),
                           "Refund Adjustment": Decimal("1.00"), "Refund Fee": Decimal("-3.00")}
        assert doc_cmd.document.computed_total() == Decimal("13.80")
    finally:
        ITEMS.pop("refund adjustment")
        ITEMS.pop("refund fee")


def test_a_credit_memo_that_does_not_add_up_is_parked_with_both_totals() -> None:
    d = refund(booked(), memo(grand_total=12))
    assert d.outcome == "parked" and d.commands == []
    assert d.parked is not None and d.parked.reason == "reconciliation"
    assert "document total 10.80 vs Magento grand_total 12.00" in d.parked.message
    assert d.parked.retry_event is not None and d.parked.retry_event["kind"] == "creditmemo"
    assert d.state is not None and d.state.follow_ups[0].status == "failed"


def test_never_more_refunded_than_was_booked() -> None:
    state = booked()
    for n in range(1, 5):  # 4 × 10.80 > 53.60 − …: the fifth would pass the total
        d = refund(state, memo(entity_id=n, ref=f"2000{n}"), event_id=f"cm{n}")
        assert d.outcome == "refund_requested", n
        assert d.state is not None
        state = d.state
    d = refund(state, memo(entity_id=5, ref="20005", grand_total=10.81, adjustment_positive=0.01), event_id="cm5")
    assert d.outcome == "parked" and d.parked is not None and d.parked.reason == "over_refund"


def test_a_duplicate_credit_memo_is_a_no_op_and_a_refund_once_booked_stays_booked() -> None:
    d = refund(booked(), memo())
    assert d.state is not None
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    again = refund(d.state, memo(), event_id="cm1-again")
    assert (again.outcome, again.commands) == ("duplicate", [])
    done = on_result(d.state, created(cmd, "77"), customers, items, CFG, REALM)
    assert done.outcome == "refunded" and done.state is not None
    fu = done.state.follow_ups[0]
    assert (fu.status, fu.qbo_id, fu.total_amt, fu.body) == ("done", "77", Decimal("10.80"), None)
    assert refund(done.state, memo(), event_id="cm1-third").commands == []


def test_a_credit_memo_before_its_order_waits_and_goes_once_the_order_is_booked() -> None:
    early = refund(None, memo())
    assert early.outcome == "waiting_for_order" and early.commands == []
    assert early.state is not None and early.state.status == "pending"
    d = on_order(early.state, ORDER, RAW, "ev1", customers, items, CFG, REALM)
    assert d.outcome == "requested" and d.state is not None and len(d.state.follow_ups) == 1
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    # While the order's document is on its way the memo still waits; then it goes.
    mid = refund(d.state, memo(), event_id="cm1-again")
    assert mid.outcome == "duplicate"
    after = on_result(d.state, created(cmd, "42"), customers, items, CFG, REALM)
    assert after.state is not None and after.state.status == "synced"
    assert [type(c).__name__ for c in after.commands] == ["CreateDocument"]
    assert after.state.follow_ups[0].status == "requested"


def test_cancelling_a_booked_order_voids_its_document() -> None:
    cancelled = {**RAW, "state": "canceled", "status": "canceled"}
    d = on_order(booked(), MagentoOrder.model_validate(cancelled), cancelled, "ev9", customers, items, CFG, REALM)
    assert d.outcome == "void_requested"
    [cmd] = d.commands
    assert isinstance(cmd, VoidDocument)
    assert (cmd.doc_type, cmd.qbo_id, cmd.doc_number, cmd.sync_token) == ("SalesReceipt", "42", "MAG-100000001", "0")
    assert d.state is not None
    twice = on_order(d.state, MagentoOrder.model_validate(cancelled), cancelled, "ev10", customers, items, CFG, REALM)
    assert (twice.outcome, twice.commands) == ("duplicate", [])
    done = on_result(d.state, DocumentVoided(order_id="100000001", order_ref="100000001", realm_id=REALM,
                                             request_id=cmd.request_id, doc_type="SalesReceipt", qbo_id="42",
                                             doc_number="MAG-100000001"), customers, items, CFG, REALM)
    assert done.outcome == "voided" and done.state is not None and done.state.follow_ups[0].status == "done"
    # A credit memo of a voided order cannot be booked: a person looks.
    late = refund(done.state, memo())
    assert late.parked is not None and late.parked.reason == "order_voided"


def test_a_cancellation_while_the_document_is_on_its_way_voids_it_once_it_exists() -> None:
    d = on_order(None, ORDER, RAW, "ev1", customers, items, CFG, REALM)
    assert d.state is not None
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    cancelled = {**RAW, "state": "canceled"}
    c = on_order(d.state, MagentoOrder.model_validate(cancelled), cancelled, "ev2", customers, items, CFG, REALM)
    assert (c.outcome, c.commands) == ("waiting_for_order", [])
    assert c.state is not None
    after = on_result(c.state, created(cmd, "42"), customers, items, CFG, REALM)
    assert [type(x).__name__ for x in after.commands] == ["VoidDocument"]


def test_a_cancellation_after_a_refund_is_parked_for_a_person_with_both_facts() -> None:
    d = refund(booked(), memo())
    assert d.state is not None
    cancelled = {**RAW, "state": "canceled"}
    c = on_order(d.state, MagentoOrder.model_validate(cancelled), cancelled, "ev9", customers, items, CFG, REALM)
    assert c.commands == [] and c.parked is not None and c.parked.reason == "cancel_with_linked"
    assert "SalesReceipt MAG-100000001 Id=42 (53.60)" in c.parked.message
    assert "RefundReceipt MAG-CM-200000007" in c.parked.message and "10.80" in c.parked.message


def test_a_paid_invoice_of_an_invoice_order_receives_a_payment_and_of_a_receipt_order_nothing() -> None:
    raw = {**RAW, "payment": {"method": "purchaseorder"}}
    state = booked(raw)
    body = {"entity_id": 3, "increment_id": "000000003", "order_id": 100000001, "state": 2, "grand_total": 53.6,
            "updated_at": "2023-11-02 12:00:00"}
    d = on_invoice(state, MagentoInvoice.model_validate(body), body, "inv1", CFG, REALM)
    assert d.outcome == "payment_requested"
    [cmd] = d.commands
    assert isinstance(cmd, ReceivePayment)
    p = cmd.payment
    assert (p.TotalAmt, p.PaymentRefNum, p.CustomerRef.value, p.TxnDate) == (Decimal("53.60"), "MAG-PAY-000000003", "9",
                                                                             "2023-11-02")
    assert p.Line[0].LinkedTxn == [{"TxnId": "42", "TxnType": "Invoice"}]
    assert d.state is not None
    assert on_invoice(d.state, MagentoInvoice.model_validate(body), body, "inv1b", CFG, REALM).outcome == "duplicate"
    paid = on_result(d.state, PaymentReceived(order_id="100000001", order_ref="100000001", realm_id=REALM,
                                              request_id=cmd.request_id, qbo_id="55", ref_num=p.PaymentRefNum,
                                              amount=p.TotalAmt, created=True), customers, items, CFG, REALM)
    assert paid.outcome == "paid"
    receipt = on_invoice(booked(), MagentoInvoice.model_validate(body), body, "inv2", CFG, REALM)
    assert (receipt.outcome, receipt.commands) == ("ignored", [])
    unpaid = {**body, "state": 1}
    assert on_invoice(state, MagentoInvoice.model_validate(unpaid), unpaid, "inv3", CFG, REALM).commands == []


def test_a_refund_refused_by_quickbooks_is_parked_with_its_own_event_and_retried_by_dlq_retry() -> None:
    d = refund(booked(), memo())
    assert d.state is not None
    [cmd] = d.commands
    failed = failure(cmd, "permanent", "6000 bad", command=cmd.model_dump(mode="json"))
    f = on_result(d.state, failed, customers, items, CFG, REALM)
    assert f.outcome == "failed" and f.parked is not None and f.parked.retry_event is not None
    assert f.parked.retry_event["creditmemo"]["increment_id"] == "200000007"
    assert f.state is not None and f.state.follow_ups[0].status == "failed"
    retry = refund(f.state, memo(), event_id="cm1-retry", retry_of="dl-1")
    assert retry.outcome == "refund_requested"
    [again] = retry.commands
    assert isinstance(again, CreateDocument) and again.verify and again.request_id != cmd.request_id


def test_an_older_delivery_never_undoes_a_newer_one() -> None:
    """The new-order webhook retried after the cancellation was accepted: the order stays unbooked."""
    placed = {**RAW, "updated_at": "2023-10-26 10:00:00"}
    cancelled = {**RAW, "state": "canceled", "updated_at": "2023-10-26 11:00:00"}
    c = on_order(None, MagentoOrder.model_validate(cancelled), cancelled, "ev2", customers, items, CFG, REALM)
    assert c.outcome == "skipped" and c.state is not None
    late = on_order(c.state, MagentoOrder.model_validate(placed), placed, "ev1", customers, items, CFG, REALM)
    assert (late.outcome, late.commands, late.state) == ("stale", [], None)
    # Without updated_at (older senders) too: Magento's cancellation is final, nothing books it again.
    assert on_order(c.state, ORDER, RAW, "ev3", customers, items, CFG, REALM).outcome == "stale"


def test_a_cancellation_in_the_same_second_wins_and_a_retry_of_an_old_letter_does_not_book() -> None:
    placed = {**RAW, "updated_at": "2023-10-26 10:00:00"}
    cancelled = {**RAW, "state": "canceled", "updated_at": "2023-10-26 10:00:00"}
    c = on_order(None, MagentoOrder.model_validate(cancelled), cancelled, "ev2", customers, items, CFG, REALM)
    assert c.state is not None
    tie = on_order(c.state, MagentoOrder.model_validate(placed), placed, "ev1", customers, items, CFG, REALM)
    assert (tie.outcome, tie.commands) == ("stale", [])
    # Parked, then cancelled: `dlq retry` of the parked letter (the old body) books nothing.
    retried = on_order(c.state, ORDER, RAW, "ev3", customers, items, CFG, REALM, retry_of="dl-9")
    assert (retried.outcome, retried.commands) == ("stale", [])


def test_a_cancellation_after_a_refund_whose_answer_was_lost_is_parked_not_voided() -> None:
    d = refund(booked(), memo())
    assert d.state is not None
    [cmd] = d.commands
    lost = failure(cmd, "retries_exhausted", "timeout", error_class="retriable")
    f = on_result(d.state, lost, customers, items, CFG, REALM)
    assert f.state is not None and f.state.follow_ups[0].status == "failed"
    cancelled = {**RAW, "state": "canceled"}
    c = on_order(f.state, MagentoOrder.model_validate(cancelled), cancelled, "ev9", customers, items, CFG, REALM)
    assert c.commands == [] and c.parked is not None and c.parked.reason == "cancel_with_linked"


def test_a_refund_of_a_paid_invoice_pays_the_money_back_and_a_second_answer_is_a_conflict() -> None:
    state = booked({**RAW, "payment": {"method": "purchaseorder"}})
    body = {"entity_id": 3, "order_id": 100000001, "state": 2, "grand_total": 53.6}
    d = on_invoice(state, MagentoInvoice.model_validate(body), body, "inv1", CFG, REALM)
    assert d.state is not None
    r = refund(d.state, memo())
    [cmd] = r.commands
    assert isinstance(cmd, CreateDocument) and cmd.doc_type == "RefundReceipt"
    assert r.state is not None
    done = on_result(r.state, created(cmd, "77"), customers, items, CFG, REALM)
    assert done.state is not None
    assert on_result(done.state, created(cmd, "77"), customers, items, CFG, REALM).outcome == "duplicate"
    assert on_result(done.state, created(cmd, "78"), customers, items, CFG, REALM).outcome == "conflict"


def test_a_new_delivery_of_a_parked_credit_memo_looks_before_it_creates() -> None:
    d = refund(booked(), memo(grand_total=12))  # parked: does not add up
    assert d.state is not None and d.parked is not None
    again = refund(d.state, memo(), event_id="cm-fixed")  # Magento sends it again (the memo fixed)
    [cmd] = again.commands
    assert isinstance(cmd, CreateDocument) and cmd.verify


def test_a_refund_refused_for_a_stale_item_id_resolves_its_items_again_once() -> None:
    d = refund(booked(), memo())
    assert d.state is not None
    [cmd] = d.commands
    stale = failure(cmd, "stale_reference", "610 item gone")
    again = on_result(d.state, stale, customers, items, CFG, REALM)
    assert again.forget_items == ("prod001",) and again.parked is None
    [ensure] = again.commands
    assert isinstance(ensure, EnsureItem) and ensure.fresh and ensure.name == "PROD001"
    assert again.state is not None and again.state.follow_ups[0].status == "resolving"
    resolved = on_result(again.state, ItemResolved(order_id="100000001", order_ref="100000001", realm_id=REALM,
                                                   request_id=ensure.request_id, name="PROD001", item_id="1",
                                                   created=False), customers, items, CFG, REALM)
    assert resolved.outcome == "refund_requested" and resolved.state is not None
    [retry] = resolved.commands
    twice = on_result(resolved.state, stale.model_copy(update={"request_id": retry.request_id}), customers, items,
                      CFG, REALM)
    assert twice.parked is not None and twice.parked.reason == "stale_reference"  # once only


def test_an_order_booked_before_sale_facts_existed_gets_them_from_a_replay_and_its_refund_goes_on() -> None:
    old = booked().model_copy(update={"sale": None})  # as an older magqb left it
    parked = refund(old, memo())
    assert parked.parked is not None and parked.parked.reason == "no_sale_facts"
    assert f"magqb replay --order {old.order_ref}" in parked.parked.message
    assert parked.state is not None
    d = on_order(parked.state, ORDER, RAW, "ev-replay", customers, items, CFG, REALM, replay_id="r1")
    assert d.outcome == "facts_filled" and d.state is not None and d.state.sale is not None
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and cmd.doc_type == "RefundReceipt" and cmd.document.CustomerRef.value == "9"


def test_a_full_payment_or_refund_parked_with_its_answer_lost_is_not_counted_against_itself() -> None:
    state = booked({**RAW, "payment": {"method": "purchaseorder"}})
    body = {"entity_id": 3, "order_id": 100000001, "state": 2, "grand_total": 53.6}
    d = on_invoice(state, MagentoInvoice.model_validate(body), body, "inv1", CFG, REALM)
    assert d.state is not None
    [cmd] = d.commands
    lost = failure(cmd, "retries_exhausted", "timeout", error_class="retriable")
    f = on_result(d.state, lost, customers, items, CFG, REALM)
    assert f.state is not None
    again = on_invoice(f.state, MagentoInvoice.model_validate(body), body, "inv1-retry", CFG, REALM, retry_of="dl-1")
    assert again.outcome == "payment_requested" and again.parked is None
    # A refusal (nothing was made) does not count as linked: a cancellation then voids.
    r = refund(booked(), memo())
    assert r.state is not None
    [rc] = r.commands
    refused = lost.model_copy(update={"request_id": rc.request_id, "command_type": "create_document",
                                      "reason": "permanent", "message": "6000 business validation"})
    p = on_result(r.state, refused, customers, items, CFG, REALM)
    assert p.state is not None
    cancelled = {**RAW, "state": "canceled"}
    c = on_order(p.state, MagentoOrder.model_validate(cancelled), cancelled, "ev9", customers, items, CFG, REALM)
    assert c.outcome == "void_requested"


def test_refunds_go_to_the_customer_quickbooks_has_the_sale_booked_to() -> None:
    d = on_order(None, ORDER, RAW, "ev1", customers, items, CFG, REALM)
    assert d.state is not None
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    found = created(cmd, "42").model_copy(update={"created": False, "customer_id": "31"})  # booked earlier to 31
    s = on_result(d.state, found, customers, items, CFG, REALM).state
    assert s is not None and s.sale is not None and s.sale.customer_id == "31"
    [refund_cmd] = refund(s, memo()).commands
    assert isinstance(refund_cmd, CreateDocument) and refund_cmd.document.CustomerRef.value == "31"


def parked_after_sending(raw: dict[str, Any] = RAW) -> tuple[OrderState, CreateDocument]:
    """The order's create went out and its answer was lost: parked `retries_exhausted`."""
    d = on_order(None, MagentoOrder.model_validate(raw), raw, "ev1", customers, items, CFG, REALM)
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and d.state is not None
    p = on_result(d.state, failure(cmd, "retries_exhausted", "timed out"), customers, items, CFG, REALM)
    assert p.state is not None and p.state.status == "failed"
    return p.state, cmd


def test_a_cancellation_of_an_order_parked_after_its_create_went_out_looks_it_up_and_voids_it() -> None:
    state, _ = parked_after_sending()
    cancelled = {**RAW, "state": "canceled", "status": "canceled"}
    d = on_order(state, MagentoOrder.model_validate(cancelled), cancelled, "ev9", customers, items, CFG, REALM)
    [void] = d.commands
    assert isinstance(void, VoidDocument)
    assert (d.outcome, void.qbo_id, void.doc_number, void.doc_type) == ("void_requested", None, "MAG-100000001",
                                                                         "SalesReceipt")
    assert d.state is not None and d.state.status == "skipped" and d.state.order is None
    again = on_order(d.state, MagentoOrder.model_validate(cancelled), cancelled, "ev10", customers, items, CFG, REALM)
    assert (again.outcome, again.commands) == ("duplicate", [])
    # The void's lookup fails for good: parked; `dlq retry` of that letter looks again, under ids of its own.
    failed = on_result(d.state, failure(void, "retries_exhausted", "timed out"), customers, items, CFG, REALM)
    assert failed.parked is not None and failed.state is not None
    retry = on_order(failed.state, MagentoOrder.model_validate(cancelled), cancelled, "ev11", customers, items, CFG,
                     REALM, retry_of="dl-void")
    [void2] = retry.commands
    assert isinstance(void2, VoidDocument) and void2.request_id != void.request_id and void2.qbo_id is None
    absent = DocumentVoided(order_id="100000001", order_ref="100000001", realm_id=REALM, request_id=void2.request_id,
                            doc_type="SalesReceipt", qbo_id="", doc_number="MAG-100000001", absent=True)
    assert retry.state is not None
    done = on_result(retry.state, absent, customers, items, CFG, REALM)
    assert done.outcome == "nothing_to_void" and done.state is not None
    assert [(f.status, f.qbo_id) for f in done.state.follow_ups] == [("done", "")]


def test_a_cancellation_of_an_order_parked_before_anything_was_sent_costs_no_lookup() -> None:
    unmapped = {**RAW, "grand_total": Decimal(str(RAW["grand_total"])) + 5}  # parked: totals differ, nothing sent
    p = on_order(None, MagentoOrder.model_validate(unmapped), unmapped, "ev1", customers, items, CFG, REALM)
    assert p.state is not None and p.state.status == "failed" and p.state.doc_number is None
    cancelled = {**unmapped, "state": "canceled"}
    d = on_order(p.state, MagentoOrder.model_validate(cancelled), cancelled, "ev2", customers, items, CFG, REALM)
    assert (d.outcome, d.commands) == ("skipped", [])


def test_a_parked_refund_keeps_its_first_number_when_the_prefix_changes() -> None:
    d = refund(booked(), memo())
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and cmd.document.DocNumber == "MAG-CM-200000007" and d.state is not None
    p = on_result(d.state, failure(cmd, "retries_exhausted", "timed out"), customers, items, CFG, REALM)
    assert p.state is not None
    body = memo()
    again = on_creditmemo(p.state, MagentoCreditMemo.model_validate(body), body, "cm-retry", items,
                          MappingConfig(refund_number_prefix="CM-"), REALM, retry_of="dl-cm")
    [cmd2] = again.commands
    assert isinstance(cmd2, CreateDocument)
    assert (cmd2.document.DocNumber, cmd2.verify) == ("MAG-CM-200000007", True)


def test_a_create_refused_for_its_number_is_numbered_afresh_after_the_prefix_is_fixed() -> None:
    d = on_order(None, ORDER, RAW, "ev1", customers, items, CFG, REALM)
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    p = on_result(d.state, failure(cmd, "docnumber_taken", "held by another store's order"), customers, items,
                  CFG, REALM)
    assert p.state is not None and p.state.doc_number is None  # nothing of it is under that number
    fixed = MappingConfig(doc_number_prefix="S2-")
    retry = on_order(p.state, ORDER, RAW, "ev2", customers, items, fixed, REALM, retry_of="dl-1")
    [cmd2] = retry.commands
    assert isinstance(cmd2, CreateDocument) and cmd2.document.DocNumber == "S2-100000001"


def test_an_order_parked_again_before_its_create_keeps_the_document_its_first_attempt_may_have_made() -> None:
    state, _ = parked_after_sending()  # its create went out, the answer was lost
    changed = {**RAW, "updated_at": "2033-01-05 10:00:00"}
    # A new delivery needs its customer again (QuickBooks merged it away): that fails for good, before any create.
    again = on_order(state, MagentoOrder.model_validate(changed), changed, "ev2", lambda k: None, items, CFG, REALM)
    [ensure] = again.commands
    assert again.state is not None and (again.state.doc_type, again.state.doc_number) == ("SalesReceipt",
                                                                                          "MAG-100000001")
    p = on_result(again.state, failure(ensure, "permanent", "6240 …"), customers, items, CFG, REALM)
    assert p.state is not None and p.state.status == "failed"
    cancelled = {**changed, "state": "canceled", "updated_at": "2033-01-06 10:00:00"}
    c = on_order(p.state, MagentoOrder.model_validate(cancelled), cancelled, "ev3", customers, items, CFG, REALM)
    [void] = c.commands
    assert isinstance(void, VoidDocument) and (void.doc_number, void.qbo_id) == ("MAG-100000001", None)


def test_a_stuck_order_whose_newest_event_is_its_cancellation_is_still_sent_on() -> None:
    d = on_order(None, ORDER, RAW, "ev1", customers, items, CFG, REALM)
    cancelled = {**RAW, "state": "canceled"}
    c = on_order(d.state, MagentoOrder.model_validate(cancelled), cancelled, "ev2", customers, items, CFG, REALM)
    assert c.state is not None and c.state.status == "requested"  # the void waits for the document
    s = on_order(c.state, MagentoOrder.model_validate(cancelled), cancelled, "ev3", customers, items, CFG, REALM,
                 replay_id="r", stuck=True)
    [cmd] = s.commands
    assert isinstance(cmd, CreateDocument) and cmd.verify and s.outcome == "unstuck_requested"
