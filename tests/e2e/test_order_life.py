"""An order's whole life on the real broker, under QBO's faults, with webhooks out of order and twice:
two partial credit memos of one order, the cancellation of another, an edit, an Invoice paid later."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import blueprint_order
from tests.e2e.chaos import ChaosPlan, ChaosRun
from tests.e2e.harness import magqb, poll

pytestmark = pytest.mark.kafka


@pytest.fixture
def run(tmp_path: Path, kafka_bootstrap: str) -> Iterator[ChaosRun]:
    # 10 % 5xx, 5 % 429, 2 % commit-then-fail, and QBO forgetting every requestid: reads and voids, too.
    chaos = ChaosRun(ChaosPlan(orders=0, seed=13, requestid_forget_rate=1.0), tmp_path / "life")
    chaos.start()
    try:
        yield chaos
    finally:
        chaos.stop()
        chaos.cleanup()


def order(entity_id: int, **over: Any) -> dict[str, Any]:
    """The blueprint (2 × PROD001 at 10 + 1 × PROD002 at 25, tax 3.60, shipping 5: 53.60) as order `entity_id`."""
    return {**blueprint_order(), "entity_id": entity_id, "increment_id": f"{entity_id:09d}",
            "updated_at": "2026-11-30 10:00:00", **over}


def cancelled(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "state": "canceled", "status": "canceled", "updated_at": "2026-11-30 11:00:00"}


def memo(entity_id: int, order_id: int, lines: list[tuple[int, str, int, str, str]], **over: Any) -> dict[str, Any]:
    """Shaped as tests/fixtures/magento/creditmemo/*.json: lines (order_item_id, sku, qty, price, tax)."""
    items = [{"order_item_id": oid, "sku": sku, "name": sku, "qty": qty, "price": price,
              "row_total": str(Decimal(price) * qty), "tax_amount": tax} for oid, sku, qty, price, tax in lines]
    subtotal = sum(Decimal(i["row_total"]) for i in items)
    tax = sum(Decimal(i["tax_amount"]) for i in items)
    body = {"entity_id": entity_id, "increment_id": f"{entity_id:09d}", "order_id": order_id, "state": 2,
            "subtotal": str(subtotal), "tax_amount": str(tax), "shipping_amount": "0", "adjustment_positive": 0,
            "adjustment_negative": 0, "discount_amount": 0, "items": items, **over}
    body["grand_total"] = str(subtotal + tax + Decimal(str(body["shipping_amount"]))
                              + Decimal(str(body["adjustment_positive"])) - Decimal(str(body["adjustment_negative"])))
    return body


def docs(run: ChaosRun, entity: str, numbers: list[str]) -> dict[str, list[dict[str, Any]]]:
    assert run.stack is not None
    listed = ", ".join(f"'{n}'" for n in numbers)
    field = "PaymentRefNum" if entity == "Payment" else "DocNumber"
    rows = run.stack.query(f"SELECT * FROM {entity} WHERE {field} IN ({listed}) MAXRESULTS 1000").get(entity, [])
    found: dict[str, list[dict[str, Any]]] = {n: [] for n in numbers}
    for row in rows:
        found[str(row[field])].append(row)
    return found


def test_refunds_cancellation_edit_and_later_payment_each_booked_once(run: ChaosRun) -> None:
    base = random.Random(13).randint(10**7, 10**8)
    a, b, e, p = order(base), order(base + 1), order(base + 2), order(base + 3, payment={"method": "purchaseorder"})
    c = order(base + 5)  # cancelled before it was placed, as far as the webhooks tell
    edit = order(base + 4, increment_id=f"{base + 2:09d}-1", relation_parent_real_id=f"{base + 2:09d}",
                 relation_parent_id=str(base + 2))
    a1 = memo(base + 50, base, [(1, "PROD001", 1, "10", "0.80")])  # 10.80
    a2 = memo(base + 51, base, [(2, "PROD002", 1, "25", "2.00")], shipping_amount="5",
              adjustment_negative="3")  # 25 + 2 + 5 − 3 = 29.00, the fee kept
    paid = {"entity_id": base + 70, "increment_id": f"{base + 70:09d}", "order_id": base + 3, "state": 2,
            "grand_total": 53.6, "updated_at": "2026-12-02 09:00:00"}

    assert run.stack is not None
    # B, and E (the order that will be edited), are booked first.
    run.post(b)
    run.post(e)
    poll(lambda: run.created("SalesReceipt") == 2, 120, "orders B and E booked")
    # Then everything out of order, and twice: a memo and the payment before their orders, B cancelled
    # twice, E cancelled and its edit placed, C's placement retried after its cancellation.
    for body, hook in [(a2, "creditmemo-created"), (paid, "invoice-paid"), (cancelled(c), "order-cancelled"),
                       (a, "new-order"), (cancelled(b), "order-cancelled"), (p, "new-order"),
                       (a1, "creditmemo-created"), (c, "new-order"), (a2, "creditmemo-created"),
                       (edit, "new-order"), (cancelled(e), "order-cancelled"), (a, "new-order"),
                       (paid, "invoice-paid"), (cancelled(b), "order-cancelled"), (a1, "creditmemo-created"),
                       (edit, "new-order"), (cancelled(e), "order-cancelled")]:
        run.post(body, webhook=hook)

    receipts = [f"MAG-{n:09d}" for n in (base, base + 1, base + 2)] + [f"MAG-{base + 2:09d}-1", f"MAG-{base + 5:09d}"]
    refunds = [f"MAG-CM-{base + 50:09d}", f"MAG-CM-{base + 51:09d}"]

    def settled() -> bool:  # read without QBO's faults in the way: the sandbox's counts and the worker's log
        made = {k: run.created(k) for k in ("SalesReceipt", "Invoice", "RefundReceipt", "Payment")}
        log = (run.stack.logs / "worker0.log").read_text(errors="replace")  # type: ignore[union-attr]
        return made == {"SalesReceipt": 4, "Invoice": 1, "RefundReceipt": 2, "Payment": 1} and \
            f"DocNumber=MAG-{base + 1:09d} voided" in log and f"DocNumber=MAG-{base + 2:09d} voided" in log

    poll(settled, 240, lambda: "every document; worker log:\n" + run.stack.log_tail("worker0", 30))  # type: ignore[union-attr]
    run.calm()

    sales = docs(run, "SalesReceipt", receipts)
    assert {n: [(Decimal(str(d["TotalAmt"])), d["PrivateNote"][:6]) for d in rows] for n, rows in sales.items()} == {
        receipts[0]: [(Decimal("53.60"), "Magent")],
        receipts[1]: [(Decimal("0"), "Voided")],  # cancelled after booking: voided
        receipts[2]: [(Decimal("0"), "Voided")],  # the edit's original: voided by its cancellation
        receipts[3]: [(Decimal("53.60"), "Magent")],  # the edit: one live document for the sale
        receipts[4]: [],  # its placement came after its cancellation: never booked
    }
    back = docs(run, "RefundReceipt", refunds)
    assert {n: [Decimal(str(d["TotalAmt"])) for d in rows] for n, rows in back.items()} == {
        refunds[0]: [Decimal("10.80")], refunds[1]: [Decimal("29.00")]}
    # Order A nets to Magento's grand_total − total_refunded, to the cent.
    assert Decimal("53.60") - Decimal("10.80") - Decimal("29.00") == Decimal("13.80")
    [invoice] = docs(run, "Invoice", [f"MAG-{base + 3:09d}"])[f"MAG-{base + 3:09d}"]
    [payment] = docs(run, "Payment", [f"MAG-PAY-{base + 70:09d}"])[f"MAG-PAY-{base + 70:09d}"]
    assert Decimal(str(payment["TotalAmt"])) == Decimal("53.60") and Decimal(str(invoice["Balance"])) == 0
    assert payment["Line"][0]["LinkedTxn"] == [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]
    # Nothing else was made: no second document of any kind, nothing parked.
    stats = run.stack.sandbox_stats()["documents_created"]
    assert {k: stats.get(k, 0) for k in ("SalesReceipt", "Invoice", "RefundReceipt", "CreditMemo", "Payment")} == {
        "SalesReceipt": 4, "Invoice": 1, "RefundReceipt": 2, "CreditMemo": 0, "Payment": 1}
    assert "dead-lettered" not in (run.stack.logs / "worker0.log").read_text()
    assert sum(run.stack.sandbox_stats()["injected"].values()) > 0  # the faults really happened

    # `magqb status` tells each order's later life and what it nets to.
    out = magqb(run.stack, "status", str(base), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert [(f["kind"], f["status"], f["type"], f["amount"]) for f in info["later"]] == [
        ("refund", "done", "RefundReceipt", "29.00"), ("refund", "done", "RefundReceipt", "10.80")]
    assert Decimal(info["net"]) == Decimal("13.80")
    text = magqb(run.stack, "status", str(base + 1)).stdout
    assert re.search(rf"cancellation: done → SalesReceipt MAG-{base + 1:09d} Id=\d+ 53.60 voided", text), text
    assert "net in QuickBooks: 0 " in text
    # `magqb reconcile` finds the books equal to Magento, net of refunds and voids.
    out = magqb(run.stack, "reconcile", "--since", "2023-10-26", "--until", "2023-10-27", "--format", "json")
    report = json.loads(out.stdout)
    assert (out.returncode, report["findings"], report["summary"]["orders"]) == (0, [], 6), out.stdout + out.stderr


def test_a_deploy_in_the_middle_of_refunds_voids_and_payments_loses_and_doubles_nothing(tmp_path: Path,
                                                                                      kafka_bootstrap: str) -> None:
    """SIGTERM (every deploy) while later events are in flight, QBO answering slowly: each is booked once."""
    run = ChaosRun(ChaosPlan(orders=0, seed=17, latency_ms=150, requestid_forget_rate=1.0), tmp_path / "deploy")
    run.start()
    try:
        assert run.stack is not None
        base = random.Random(17).randint(10**7, 10**8)
        events: list[tuple[dict[str, Any], str]] = []
        for n in range(12):
            kind = n % 3  # 0: refunded, 1: cancelled, 2: an Invoice paid later
            raw = order(base + n, **({"payment": {"method": "purchaseorder"}} if kind == 2 else {}))
            later: tuple[dict[str, Any], str]
            if kind == 0:
                later = (memo(base + 100 + n, base + n, [(1, "PROD001", 1, "10", "0.80")]), "creditmemo-created")
            elif kind == 1:
                later = (cancelled(raw), "order-cancelled")
            else:
                later = ({"entity_id": base + 200 + n, "increment_id": f"{base + 200 + n:09d}", "order_id": base + n,
                          "state": 2, "grand_total": 53.6}, "invoice-paid")
            # Half of the later events come before their orders.
            events += [later, (raw, "new-order")] if n % 2 else [(raw, "new-order"), later]
        for body, hook in events:
            run.post(body, webhook=hook)
        # The deploy: once bookings are under way (QBO answering in 150 ms, so commands are in flight).
        poll(lambda: run.created("SalesReceipt") >= 3, 120, "bookings under way")
        seconds = run.term_worker("worker0")
        assert seconds < 30
        stopped_at = {k: run.created(k) for k in ("SalesReceipt", "Invoice", "RefundReceipt", "Payment")}
        assert sum(stopped_at.values()) < 18  # work was left for the next worker
        run.start_worker("worker0")

        def settled() -> bool:
            made = {k: run.created(k) for k in ("SalesReceipt", "Invoice", "RefundReceipt", "Payment")}
            log = "".join(p.read_text(errors="replace") for p in run.stack.logs.glob("worker0.log"))  # type: ignore[union-attr]
            # A cancellation before its order (odd n) means the order is never booked; after it, a void.
            return made == {"SalesReceipt": 6, "Invoice": 4, "RefundReceipt": 4, "Payment": 4} and all(
                f"DocNumber=MAG-{base + n:09d} voided" in log for n in (4, 10))

        poll(settled, 240, lambda: "every document; worker log:\n" + run.stack.log_tail("worker0", 30))  # type: ignore[union-attr]
        run.calm()
        numbers = [f"MAG-{base + n:09d}" for n in range(12)]
        sales = docs(run, "SalesReceipt", numbers)
        for n in range(12):
            rows = sales[numbers[n]]
            if n % 3 == 2 or n in (1, 7):
                assert rows == []  # an Invoice; or cancelled before it was placed, as the webhooks tell
                continue
            assert [Decimal(str(r["TotalAmt"])) for r in rows] == [Decimal("53.60") if n % 3 == 0 else Decimal(0)]
        refunds = docs(run, "RefundReceipt", [f"MAG-CM-{base + 100 + n:09d}" for n in range(0, 12, 3)])
        assert all([Decimal(str(r["TotalAmt"])) for r in rows] == [Decimal("10.80")] for rows in refunds.values())
        invoices = docs(run, "Invoice", [numbers[n] for n in range(2, 12, 3)])
        assert all(len(rows) == 1 and Decimal(str(rows[0]["Balance"])) == 0 for rows in invoices.values())
        assert run.stack.count("Payment", "TotalAmt > '0'") == 4
        assert "dead-lettered" not in (run.stack.logs / "worker0.log").read_text()
    finally:
        run.stop()
        run.cleanup()
