"""The console's pure parts: a dead letter explained in a bookkeeper's words, the overview's counts, the login
throttle, the users' passwords."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.console.explain import explain, qbo_link
from app.console.orders import search, summarize
from app.console.security import LoginThrottle, csrf_ok
from app.console.users import UserError, UserStore
from schemas.dead_letter import Attempt, DeadLetter
from schemas.state import FollowUp, HistoryEntry, OrderState

NOW = datetime(2026, 12, 9, 15, 0, tzinfo=UTC)  # a Wednesday


def letter(reason: str, message: str, command: dict | None = None, fault: dict | None = None) -> DeadLetter:
    return DeadLetter(order_id="1", order_ref="0001", realm_id="r", command_type="create_document",
                      command=command or {"type": "create_document"}, reason=reason,
                      attempts=[Attempt(at=NOW, error_class=reason, message=message, fault=fault)])


def test_an_unmapped_tax_rate_names_the_mapping_line_to_add() -> None:
    why = explain(letter("mapping", "item SKU-9: no QBO tax code for the 8.1 % rate (add it to [tax.codes] in "
                                    "the mapping file)"))
    assert why.snippet == '[tax.codes]\n"8.1" = "<QuickBooks TaxCode Id>"'
    assert "8.1 %" in why.title and why.retriable


def test_a_total_mismatch_shows_both_totals_and_the_lines() -> None:
    why = explain(letter("reconciliation", "document total 107.70 vs Magento grand_total 100.00 (difference 7.70, "
                                           "beyond the adjustment tolerance 0.05)",
                         {"type": "create_document", "document": {"Line": [
                             {"Amount": "100.00", "Description": "Blue mug"}, {"Amount": "7.70", "DetailType": "Tax"}]}}))
    assert ("QuickBooks document total", "107.70") in why.facts and ("Magento grand total", "100.00") in why.facts
    assert ("Blue mug", "100.00") in why.facts and ("Tax", "7.70") in why.facts


def test_a_number_taken_says_who_holds_it() -> None:
    why = explain(letter("docnumber_taken", "DocNumber MAG-0001 is held by SalesReceipt Id=88 (PrivateNote 'x'), "
                                            "not by order 0001: ...",
                         {"type": "create_document", "document": {"DocNumber": "MAG-0001"}}))
    assert "MAG-0001" in why.title and ("number", "MAG-0001") in why.facts and ("held by", "SalesReceipt 88") in why.facts
    assert why.link == "https://app.qbo.intuit.com/app/salesreceipt?txnId=88"


def test_a_quickbooks_refusal_shows_its_fault() -> None:
    why = explain(letter("permanent", "validation", fault={"code": "6000", "detail": "Amount is invalid"}))
    assert ("code", "6000") in why.facts and ("detail", "Amount is invalid") in why.facts


def test_documents_link_into_quickbooks_and_nothing_else() -> None:
    assert qbo_link("Invoice", "42", sandbox=False) == "https://app.qbo.intuit.com/app/invoice?txnId=42"
    assert qbo_link("SalesReceipt", "7", sandbox=True) == "https://app.sandbox.qbo.intuit.com/app/salesreceipt?txnId=7"
    assert qbo_link(None, "7", sandbox=True) is None


def state(status: str, ref: str, received: datetime, **kw: object) -> OrderState:
    return OrderState(status=status, order_ref=ref, event_id="e", received_at=received, updated_at=received, **kw)


def test_the_overview_counts_bookings_by_when_the_document_came_and_names_the_oldest_waiting() -> None:
    booked = lambda at: [HistoryEntry(at=at, what="result", detail="SalesReceipt Id=9 created")]  # noqa: E731
    states = {
        "1": state("synced", "0001", NOW - timedelta(days=3), qbo_id="9", history=booked(NOW - timedelta(hours=1))),
        "2": state("synced", "0002", NOW - timedelta(days=1), qbo_id="9", history=booked(NOW - timedelta(days=1))),
        "3": state("synced", "0003", NOW - timedelta(days=9), qbo_id="9", history=booked(NOW - timedelta(days=8))),
        "4": state("requested", "0004", NOW - timedelta(minutes=5)),
        "5": state("resolving", "0005", NOW - timedelta(minutes=50)),
        "6": state("failed", "0006", NOW),
        "7": state("synced", "0007", NOW - timedelta(days=2), qbo_id="9", total_amt=Decimal("5"),
                   follow_ups=[FollowUp(kind="void", key="void", ref="void", status="done", event_id="v")],
                   history=booked(NOW - timedelta(days=2))),
    }
    s = summarize(states, NOW)
    assert (s.booked_today, s.booked_this_week, s.waiting, s.parked, s.cancelled) == (1, 3, 2, 1, 1)
    assert s.oldest_unbooked is not None and s.oldest_unbooked.order_ref == "0005"
    assert [r.order_ref for r in search(states, status="cancelled")] == ["0007"]
    assert [r.order_ref for r in search(states, since=(NOW - timedelta(days=2)).date())] == ["0006", "0004", "0005",
                                                                                            "0002", "0007"]


def test_the_throttle_counts_per_name_and_per_address_and_forgets_after_its_window() -> None:
    t = LoginThrottle(allowed=3, window=60)
    for i in range(3):
        t.failed("ann", f"10.0.0.{i}", now=100)  # three addresses, one name
    assert t.blocked_for("ann", "10.0.0.9", now=110) == pytest.approx(50)
    assert t.blocked_for("bob", "10.0.0.9", now=110) == 0
    assert t.blocked_for("ann", "10.0.0.9", now=161) == 0
    for name in ("a", "b", "c"):
        t.failed(name, "10.9.9.9", now=200)  # three names, one address
    assert t.blocked_for("zed", "10.9.9.9", now=201) > 0


def test_csrf_tokens_compare_exactly() -> None:
    assert csrf_ok("abc", "abc") and not csrf_ok("abc", "abd") and not csrf_ok("", "") and not csrf_ok(None, "x")


async def test_passwords_are_argon2_hashes_checked_the_same_way_for_unknown_names(tmp_path) -> None:
    store = UserStore(tmp_path / "u.sqlite3")
    assert await store.add("ann", "a long secret", "operator")
    assert (await store.verify("ann", "a long secret")).role == "operator"
    assert await store.verify("ann", "a long secreT") is None and await store.verify("nobody", "x") is None
    assert b"a long secret" not in (tmp_path / "u.sqlite3").read_bytes()
    assert (tmp_path / "u.sqlite3").stat().st_mode & 0o077 == 0
    with pytest.raises(UserError, match="at least 10"):
        await store.add("bob", "short", "viewer")
    with pytest.raises(UserError, match="role"):
        await store.add("bob", "long enough pw", "admin")


def test_a_booked_order_is_found_by_the_e_mail_its_customer_was_resolved_for() -> None:
    from schemas.state import SaleFacts

    booked = state("synced", "0009", NOW, qbo_id="5", sale=SaleFacts(customer_id="77", customer_name="Ann", currency="USD"))
    assert search({"9": booked}, text="ann@example.com") == []  # the row keeps no body ...
    found = search({"9": booked}, text="ann@", emails={"77": "ann@example.com"})  # ... the customers table knows
    assert [r.order_ref for r in found] == ["0009"] and found[0].email == "ann@example.com"
