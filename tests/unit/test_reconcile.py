"""The books against the log: every kind of difference `magqb reconcile` reports, and none when they match."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from app.tools.reconcile import LogOrder, QboDoc, compare
from schemas.state import OrderState

D = Decimal


def order(n: int, total: str = "10.00", state: str | None = "synced", cancelled: bool = False) -> LogOrder:
    st = OrderState(status=state, order_ref=f"{n:09d}", event_id="e", qbo_id="1", doc_type="SalesReceipt",
                    error="mapping: no tax code") if state else None  # type: ignore[arg-type]
    return LogOrder(str(n), f"{n:09d}", datetime(2033, 2, 3, tzinfo=UTC), D(total), f"MAG-{n:09d}", cancelled, st)


def doc(n: int | str, total: str = "10.00", qbo_id: str = "1", doc_type: str = "SalesReceipt") -> QboDoc:
    number = n if isinstance(n, str) else f"MAG-{n:09d}"
    return QboDoc(doc_type, qbo_id, number, D(total), "2033-02-03")


def test_matching_books_have_no_findings() -> None:
    orders = [order(1), order(2, "99.95")]
    assert compare(orders, {o.doc_number for o in orders}, [doc(1), doc(2, "99.95")], "MAG-") == []


def test_each_kind_of_difference_is_reported_with_its_figures() -> None:
    orders = [order(1), order(2), order(3, "20.00"), order(4, state="failed"), order(5, state=None)]
    known = {o.doc_number for o in orders} | {"MAG-000000777"}  # an order outside the range
    docs = [doc(2, qbo_id="7"), doc(2, qbo_id="8", doc_type="Invoice"), doc(3, "19.99"), doc("MAG-X1", "5.00", "9"),
            doc("MAG-000000777"), doc("OTHER-1")]
    found = {(f.kind, f.order_id or f.doc_number): f for f in compare(orders, known, docs, "MAG-")}
    assert set(found) == {("missing", "1"), ("booked_twice", "2"), ("total_differs", "3"), ("missing", "4"),
                          ("missing", "5"), ("unknown", "MAG-X1")}
    assert found[("booked_twice", "2")].qbo_ids == ["SalesReceipt:7", "Invoice:8"]
    assert (found[("total_differs", "3")].magento_total, found[("total_differs", "3")].qbo_total) == (D("20.00"),
                                                                                                    D("19.99"))
    assert "QuickBooks has no document" in found[("missing", "1")].detail
    assert found[("missing", "4")].detail.startswith("parked: mapping: no tax code")
    assert "never handled" in found[("missing", "5")].detail


def test_an_order_cancelled_before_booking_needs_no_document() -> None:
    assert compare([order(1, state="skipped"), order(2, state=None, cancelled=True)], set(), [], "MAG-") == []


def test_refunds_and_cancellations_are_judged_by_what_the_order_nets_to() -> None:
    refunded = order(1, "53.60")
    refunded.refunds = {"MAG-CM-000000051": D("10.80"), "MAG-CM-000000052": D("29.00")}
    voided, not_voided, short = order(2, "53.60", cancelled=True), order(3, "53.60", cancelled=True), order(4, "20.00")
    short.refunds = {"MAG-CM-000000053": D("5.00")}
    lost = order(5, "30.00")
    lost.refunds = {"MAG-CM-000000054": D("5.00")}
    orders = [refunded, voided, not_voided, short, lost]
    known = {o.doc_number for o in orders} | {n for o in orders for n in o.refunds}
    docs = [doc(1, "53.60"), doc("MAG-CM-000000051", "10.80", "21", "RefundReceipt"),
            doc("MAG-CM-000000052", "29.00", "22", "RefundReceipt"), doc(2, "0", "2"), doc(3, "53.60", "3"),
            doc(4, "20.00", "4", "Invoice"), doc("MAG-CM-000000053", "4.00", "23", "CreditMemo"),
            doc(5, "30.00", "5"), doc("MAG-CM-000000099", "1.00", "24", "RefundReceipt")]
    found = {(f.kind, f.doc_number): f for f in compare(orders, known, docs, "MAG-")}
    assert set(found) == {("not_voided", "MAG-000000003"), ("total_differs", "MAG-CM-000000053"),
                          ("refund_missing", "MAG-CM-000000054"), ("unknown", "MAG-CM-000000099")}
    assert found[("not_voided", "MAG-000000003")].qbo_total == D("53.60")
    assert found[("refund_missing", "MAG-CM-000000054")].detail.endswith(
        "the order nets 30.00 in QuickBooks, 25.00 in Magento (grand_total less credit memos)")
    assert refunded.magento_net == D("13.80") and voided.magento_net == D(0)


def test_documents_under_a_prefix_the_installation_used_before_are_still_told() -> None:
    from app.tools.reconcile import used_prefixes
    from schemas.state import FollowUp

    old = OrderState(status="synced", order_ref="000000001", event_id="e", doc_number="OLD-000000001",
                     follow_ups=[FollowUp(kind="refund", key="5", ref="200000005", status="done", event_id="c",
                                          doc_number="OLDCM-200000005")])
    bare = OrderState(status="synced", order_ref="000000002", event_id="e", doc_number="OLD-2")  # by its entity id
    hashed = OrderState(status="synced", order_ref="X" * 30, event_id="e", doc_number="MAG-XXXX-ABCDEFGHJKMNP")
    numbered = OrderState(status="synced", order_ref="1000000001", event_id="e", doc_number="1000000001")
    by_qbo = OrderState(status="synced", order_ref="000000004", event_id="e", doc_number="1004")  # QBO's own
    prefixes = used_prefixes({"1": old, "2": bare, "3": hashed, "1000000001": numbered, "4": by_qbo})
    assert prefixes == ("OLD-", "OLDCM-")  # digits alone are no prefix
    docs = [doc("OLD-000000099", "5.00", "9"), doc("OLD-000000001")]
    found = compare([], {"OLD-000000001"}, docs, ("MAG-", *prefixes))
    assert [(f.kind, f.doc_number) for f in found] == [("unknown", "OLD-000000099")]
