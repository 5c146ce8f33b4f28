"""Property tests of an order's whole life: for generated orders and random sequences of partial refunds
(never more than was paid), posted in any order and twice, the documents booked net to Magento's
grand_total − total_refunded to the cent; a cancelled order nets to zero. One document per event."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.decision import Command
from app.domain.mapping import MappingConfig
from app.domain.money import ZERO, to_cents
from schemas.commands import CreateDocument, EnsureCustomer, EnsureItem, ReceivePayment, VoidDocument
from schemas.events import CustomerResolved, DocumentCreated, DocumentVoided, ItemResolved, PaymentReceived
from tests.flow_driver import Books
from tests.unit.test_mapping_properties import orders

CFG = MappingConfig()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class StandInQbo:
    """Answers commands as QuickBooks would, keeping the documents: a ledger to sum."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[str, Decimal]] = {}  # Id → (type, total)
        self.numbers: Counter[str] = Counter()
        self.payments: list[Decimal] = []

    async def answer(self, cmd: Command) -> Any:
        common = {"order_id": cmd.order_id, "order_ref": cmd.order_ref, "realm_id": cmd.realm_id,
                  "request_id": cmd.request_id}
        if isinstance(cmd, EnsureCustomer):
            return CustomerResolved(**common, email=cmd.email, key=cmd.key, customer_id="c1",
                                    display_name=cmd.display_name, created=True)
        if isinstance(cmd, EnsureItem):
            return ItemResolved(**common, name=cmd.name, item_id=f"i-{cmd.name}", created=True)
        if isinstance(cmd, CreateDocument):
            qbo_id = str(len(self.docs) + 1)
            total = cmd.document.computed_total()
            self.docs[qbo_id] = (cmd.doc_type, total)
            self.numbers[cmd.document.DocNumber] += 1
            return DocumentCreated(**common, doc_type=cmd.doc_type, doc_number=cmd.document.DocNumber,
                                   qbo_id=qbo_id, total_amt=total, created=True, sync_token="0")
        if isinstance(cmd, VoidDocument):
            self.docs[cmd.qbo_id] = (cmd.doc_type, ZERO)
            return DocumentVoided(**common, doc_type=cmd.doc_type, qbo_id=cmd.qbo_id, doc_number=cmd.doc_number)
        assert isinstance(cmd, ReceivePayment)
        self.payments.append(cmd.payment.TotalAmt)
        return PaymentReceived(**common, qbo_id=f"p{len(self.payments)}", ref_num=cmd.payment.PaymentRefNum,
                               amount=cmd.payment.TotalAmt, created=True)

    def net(self) -> Decimal:
        sign = {"SalesReceipt": 1, "Invoice": 1, "RefundReceipt": -1, "CreditMemo": -1}
        return sum((sign[t] * total for t, total in self.docs.values()), ZERO)


@st.composite
def refunds(draw: Any, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """1–3 credit memos as Magento makes them: each line's amounts prorated by the quantity refunded, the
    last refund of a line takes what is left of it; some shipping; adjustments that never refund more
    than was paid."""
    left = {it["item_id"]: Decimal(it["qty_ordered"]) for it in raw["items"]}
    taken: dict[int, dict[str, Decimal]] = {it["item_id"]: {"row": ZERO, "tax": ZERO, "disc": ZERO}
                                            for it in raw["items"]}
    shipping_left = Decimal(raw["shipping_amount"])
    paid, refunded = Decimal(raw["grand_total"]), ZERO
    memos = []
    for n in range(draw(st.integers(1, 3))):
        lines, subtotal, tax, disc = [], ZERO, ZERO, ZERO
        for it in raw["items"]:
            qty = left[it["item_id"]]
            if qty <= 0:
                continue
            q = draw(st.sampled_from([ZERO, qty] + ([Decimal(1)] if qty > 1 else [])))
            if q == 0:
                continue
            whole = {"row": Decimal(it["row_total"]), "tax": Decimal(it["tax_amount"]),
                     "disc": Decimal(it["discount_amount"])}
            part = {k: (v - taken[it["item_id"]][k] if q == qty else to_cents(v * q / Decimal(it["qty_ordered"])))
                    for k, v in whole.items()}
            for k in part:
                taken[it["item_id"]][k] += part[k]
            left[it["item_id"]] -= q
            lines.append({"order_item_id": it["item_id"], "sku": it["sku"], "name": it["name"], "qty": str(q),
                          "price": it["price"], "row_total": str(part["row"]), "tax_amount": str(part["tax"]),
                          "discount_amount": str(part["disc"])})
            subtotal, tax, disc = subtotal + part["row"], tax + part["tax"], disc + part["disc"]
        shipping = draw(st.sampled_from([ZERO, shipping_left]))
        shipping_left -= shipping
        base = subtotal + shipping + tax - disc
        plus = draw(st.sampled_from([ZERO, Decimal("1.00"), Decimal("0.37")]))
        minus = draw(st.sampled_from([ZERO, Decimal("2.50")]))
        grand = base + plus - minus
        if grand <= 0 or refunded + grand > paid:
            continue  # Magento refuses a memo of nothing or of more than is left
        refunded += grand
        memos.append({"entity_id": 500 + n, "increment_id": f"9{n:08d}", "order_id": raw["entity_id"], "state": 2,
                      "grand_total": str(grand), "subtotal": str(subtotal), "tax_amount": str(tax),
                      "shipping_amount": str(shipping), "discount_amount": str(-disc),
                      "adjustment_positive": str(plus), "adjustment_negative": str(minus), "items": lines})
    return memos


@st.composite
def lives(draw: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    raw = draw(orders())
    memos = draw(refunds(raw))
    events: list[tuple[str, dict[str, Any]]] = [("order", raw), *(("creditmemo", m) for m in memos)]
    if raw["payment"]["method"] == "purchaseorder" and Decimal(raw["grand_total"]) > 0 and draw(st.booleans()):
        events.append(("invoice", {"entity_id": 77, "order_id": raw["entity_id"], "state": 2,
                                   "grand_total": raw["grand_total"]}))
    events += draw(st.lists(st.sampled_from(events), max_size=3))  # some delivered twice
    return raw, memos, draw(st.permutations(events))


async def live(events: list[tuple[str, dict[str, Any]]]) -> tuple[Books, StandInQbo]:
    qbo = StandInQbo()
    books = Books(CFG, "1", qbo.answer)
    for n, (kind, body) in enumerate(events):
        await getattr(books, kind)(body, f"ev{n}")
    return books, qbo


@PROPERTY
@given(lives())
def test_the_books_net_to_grand_total_less_refunds_whatever_the_order_of_events(life: Any) -> None:
    raw, memos, events = life
    books, qbo = asyncio.run(live(events))
    grand = to_cents(Decimal(raw["grand_total"]))
    if grand == ZERO:  # a free order books a zero document; nothing can be refunded
        return
    assert books.parked == []
    total_refunded = sum((Decimal(m["grand_total"]) for m in memos), ZERO)
    assert qbo.net() == grand - to_cents(total_refunded)
    assert max(qbo.numbers.values()) == 1 and len(qbo.docs) == 1 + len(memos)  # one document per event
    state = books.states[str(raw["entity_id"])]
    assert state.status == "synced" and all(f.status == "done" for f in state.follow_ups)
    assert sum(qbo.payments, ZERO) in (ZERO, grand)


@PROPERTY
@given(orders(), st.booleans(), st.booleans())
def test_a_cancelled_order_nets_to_zero_whenever_the_cancellation_comes(raw: dict[str, Any], early: bool,
                                                                          twice: bool) -> None:
    cancelled = {**raw, "state": "canceled", "status": "canceled"}
    events = [("order", raw), ("order", cancelled)] if not early else [("order", cancelled)]
    events += [("order", cancelled)] if twice else []
    books, qbo = asyncio.run(live(events))
    assert qbo.net() == ZERO and books.parked == []
    state = books.states[str(raw["entity_id"])]
    assert state.status == ("skipped" if early else "synced")
    assert len(qbo.docs) == (0 if early else 1)
