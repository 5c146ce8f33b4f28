from decimal import Decimal

from app import jsonutil
from app.domain.mapping import MappingConfig
from app.domain.order_flow import on_order, on_result
from app.domain.request_ids import MAX_LEN, customer_request_id, document_request_id
from schemas.commands import CreateDocument, EnsureCustomer, EnsureItem
from schemas.events import CommandFailed, CustomerResolved, DocumentCreated, ItemResolved
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState
from tests.conftest import blueprint_order

CFG = MappingConfig()
REALM = "123"
RAW = blueprint_order()
ORDER = MagentoOrder.model_validate(RAW)
ALL_ITEMS = {"prod001": ItemEntry(item_id="1"), "prod002": ItemEntry(item_id="2"), "shipping": ItemEntry(item_id="3")}


def customers(known: dict[str, CustomerEntry]):
    return lambda email: known.get(email)


def items(known: dict[str, ItemEntry]):
    return lambda name: known.get(name.lower())


def test_new_order_with_nothing_known_asks_for_customer_and_each_item() -> None:
    d = on_order(None, ORDER, RAW, "ev1", customers({}), items({}), CFG, REALM)
    assert d.outcome == "waiting"
    assert d.state is not None and d.state.status == "resolving" and d.state.order == RAW
    assert [type(c).__name__ for c in d.commands] == ["EnsureCustomer", "EnsureItem", "EnsureItem", "EnsureItem"]
    cust = d.commands[0]
    assert isinstance(cust, EnsureCustomer)
    assert (cust.email, cust.display_name, cust.request_id) == (
        "jane.doe@example.com", "Jane Doe", customer_request_id(REALM, "jane.doe@example.com"))
    assert [c.name for c in d.commands[1:] if isinstance(c, EnsureItem)] == ["PROD001", "PROD002", "Shipping"]


def test_everything_known_requests_the_document_at_once() -> None:
    known = customers({"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")})
    d = on_order(None, ORDER, RAW, "ev1", known, items(ALL_ITEMS), CFG, REALM)
    assert d.outcome == "requested"
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    assert cmd.document.DocNumber == "MAG-100000001"
    body = jsonutil.dumps(cmd.document.to_qbo())
    assert cmd.request_id == document_request_id(REALM, "SalesReceipt", "MAG-100000001", body)
    assert d.state is not None and d.state.status == "requested"
    assert d.state.order == RAW  # kept until the document exists: a failure maps it again
    assert d.state.outstanding == [cmd.request_id]
    assert d.state.mismatch is None


def test_a_total_mismatch_parks_the_order_instead_of_booking_it() -> None:
    raw = {**RAW, "grand_total": 48.60}  # the blueprint document's own figure
    known = customers({"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")})
    d = on_order(None, MagentoOrder.model_validate(raw), raw, "ev1", known, items(ALL_ITEMS), CFG, REALM)
    assert (d.outcome, d.commands) == ("parked", [])
    assert d.parked is not None and d.parked.reason == "reconciliation"
    assert d.parked.message.startswith("document total 53.60 vs Magento grand_total 48.60 (difference 5.00")
    assert d.parked.command is not None and d.parked.command["document"]["DocNumber"] == "MAG-100000001"
    assert d.state is not None and d.state.status == "failed" and d.state.order == raw
    assert d.state.mismatch is not None and d.state.mismatch.difference == Decimal("5.00")
    # Delivered again after the fix (dlq retry): mapped again.
    again = on_order(d.state, MagentoOrder.model_validate(RAW), RAW, "ev2", known, items(ALL_ITEMS), CFG, REALM)
    assert again.outcome == "requested"


def test_an_order_cancelled_before_it_was_booked_is_not_booked() -> None:
    raw = {**RAW, "state": "canceled", "status": "canceled"}
    d = on_order(None, MagentoOrder.model_validate(raw), raw, "ev1", customers({}), items({}), CFG, REALM)
    assert (d.outcome, d.commands) == ("skipped", [])
    assert d.state is not None and d.state.status == "skipped"
    booked = OrderState(status="synced", order_ref="100000001", event_id="ev0", doc_type="SalesReceipt",
                        doc_number="MAG-100000001", qbo_id="42", total_amt=Decimal("53.60"))
    d = on_order(booked, MagentoOrder.model_validate(raw), raw, "ev2", customers({}), items({}), CFG, REALM)
    # Booked earlier, cancelled later: nothing new is booked, the document is voided (tests/unit/test_order_life.py).
    assert d.outcome == "void_requested" and [c.type for c in d.commands] == ["void_document"]


def test_unmapped_tax_rate_parks_the_order_with_the_reason() -> None:
    cfg = MappingConfig(tax_mode="global", tax_codes={"0": "7"})
    raw = {**RAW, "items": [{**i, "tax_percent": 8} for i in RAW["items"]]}
    d = on_order(None, MagentoOrder.model_validate(raw), raw, "ev1", customers({}), items({}), cfg, REALM)
    assert d.outcome == "parked" and d.parked is not None and d.parked.reason == "mapping"
    assert d.parked.message == "item PROD001: no QBO tax code for the 8 % rate (add it to [tax.codes] in the mapping file)"


def test_duplicate_delivery_emits_nothing() -> None:
    for status in ("resolving", "requested", "synced"):
        state = OrderState(status=status, order_ref="100000001", event_id="ev1")
        d = on_order(state, ORDER, RAW, "ev2", customers({}), items({}), CFG, REALM)
        assert (d.outcome, d.commands) == ("duplicate", [])
        assert d.state is not None and d.state.duplicates_seen == 1 and d.state.status == status


def test_resolution_results_complete_the_order_once_everything_is_known() -> None:
    first = on_order(None, ORDER, RAW, "ev1", customers({}), items({}), CFG, REALM)
    assert first.state is not None
    resolved = CustomerResolved(order_id="100000001", order_ref="100000001", realm_id=REALM,
                                request_id=first.commands[0].request_id, email="jane.doe@example.com",
                                customer_id="9", display_name="Jane Doe", created=True)
    # Items still unknown: keep waiting, ask for nothing new.
    partial = on_result(first.state, resolved,
                        customers({"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")}),
                        items({}), CFG, REALM)
    assert (partial.outcome, partial.commands) == ("waiting", [])
    done = on_result(first.state, resolved,
                     customers({"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")}),
                     items(ALL_ITEMS), CFG, REALM)
    assert done.outcome == "requested" and isinstance(done.commands[0], CreateDocument)


def test_document_created_marks_the_order_synced() -> None:
    state = OrderState(status="requested", order_ref="100000001", event_id="ev1", doc_number="MAG-100000001")
    event = DocumentCreated(order_id="100000001", order_ref="100000001", realm_id=REALM, request_id="r",
                            doc_type="SalesReceipt", doc_number="MAG-100000001", qbo_id="77",
                            total_amt=Decimal("53.60"), created=True)
    d = on_result(state, event, customers({}), items({}), CFG, REALM)
    assert d.state is not None and (d.state.status, d.state.qbo_id) == ("synced", "77")


def test_failed_order_is_retried_by_a_new_delivery() -> None:
    state = OrderState(status="requested", order_ref="100000001", event_id="ev1")
    failed = CommandFailed(order_id="100000001", order_ref="100000001", realm_id=REALM, request_id="r",
                           command_type="create_document", error_class="permanent", message="6070 ...")
    d = on_result(state, failed, customers({}), items({}), CFG, REALM)
    assert d.state is not None and d.state.status == "failed"
    assert d.parked is not None and (d.parked.reason, d.parked.message) == ("permanent", "6070 ...")
    again = on_order(d.state, ORDER, RAW, "ev2", customers({}), items({}), CFG, REALM)
    assert again.outcome == "waiting" and len(again.commands) == 4


def test_a_new_delivery_of_a_parked_order_looks_in_quickbooks_before_it_creates() -> None:
    """Its create may have landed before it was parked (an answer lost, retries exhausted): a source that
    repeats itself (the follower, an update event) must not book it a second time."""
    state = OrderState(status="failed", order_ref="100000001", event_id="ev1", error="retries_exhausted: 503")
    known = customers({"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")})
    d = on_order(state, ORDER, RAW, "ev2", known, items(ALL_ITEMS), CFG, REALM)
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and cmd.verify  # a DocNumber lookup first
    assert d.state is not None and d.state.salt == "again:ev2"
    first = on_order(None, ORDER, RAW, "ev1", known, items(ALL_ITEMS), CFG, REALM).commands[0]
    assert cmd.request_id != first.request_id  # ids of its own: QBO does not answer with the old fault


def test_a_change_feed_does_not_start_booking_an_order_of_before_magqb() -> None:
    from datetime import UTC, datetime, timedelta

    from app.domain.order_flow import unseen_and_old

    window = timedelta(hours=72)
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def order(placed_days_ago: float, changed_days_ago: float) -> MagentoOrder:
        at = lambda days: (now - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
        return MagentoOrder.model_validate({**RAW, "created_at": at(placed_days_ago), "updated_at": at(changed_days_ago)})

    shipped_late, lost_webhook = order(90, 0), order(0.01, 0.01)
    # Placed three months ago, changed now, reported by the follower or an update event: not booked.
    for feed in ("rest-follow", "adobe-io-events", "mageos/sales.order.updated", "mageos/sales.order.paid"):
        assert unseen_and_old(None, shipped_late, feed, now, window), feed
    # Its credit memo came first (a pending row): still an order magqb never had.
    pending = OrderState(status="pending", order_ref="100000001", event_id="cm1")
    assert unseen_and_old(pending, shipped_late, "rest-follow", now, window)
    # A lost webhook's order is booked, however late the feed brings it (an outage does not age it).
    assert not unseen_and_old(None, lost_webhook, "rest-follow", now + timedelta(days=5), window)
    # Creation events, the blueprint's webhooks, imports and `dlq retry` are not judged; an order magqb has is not.
    assert not unseen_and_old(None, shipped_late, "mageos/sales.order.created", now, window)
    assert not unseen_and_old(None, shipped_late, "magento-webhook", now, window)
    assert not unseen_and_old(None, shipped_late, "import", now, window, replay_id="import-x")
    assert not unseen_and_old(None, shipped_late, "rest-follow", now, window, retry_of="dl1")
    parked = OrderState(status="failed", order_ref="100000001", event_id="ev1")
    assert not unseen_and_old(parked, shipped_late, "rest-follow", now, window)
    # A replay of a feed's event is judged as that feed's; a replay of a webhook's is not.
    assert unseen_and_old(None, shipped_late, "replay", now, window, replay_id="r1", origin="rest-follow")
    assert not unseen_and_old(None, shipped_late, "replay", now, window, replay_id="r1", origin="magento-webhook")
    # Without updated_at, the time it arrived (naive or aware) is the change's.
    no_update = MagentoOrder.model_validate({**RAW, "created_at": "2026-09-01 10:00:00"})
    assert unseen_and_old(None, no_update, "rest-follow", now, window)
    assert unseen_and_old(None, no_update, "rest-follow", now.replace(tzinfo=None), window)


def test_request_ids_are_stable_short_and_distinct() -> None:
    a = customer_request_id(REALM, "Jane.Doe@example.com")
    assert a == customer_request_id(REALM, "jane.doe@example.com")
    assert len(a) <= MAX_LEN
    assert a != customer_request_id("other-realm", "jane.doe@example.com")
    assert document_request_id(REALM, "SalesReceipt", "MAG-1", b"{}") != document_request_id(REALM, "Invoice",
                                                                                            "MAG-1", b"{}")


KNOWN_CUSTOMER = {"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")}


def _result_for(cmd, ok: bool = True, reason: str = "permanent"):
    common = {"order_id": cmd.order_id, "order_ref": cmd.order_ref, "realm_id": REALM, "request_id": cmd.request_id}
    if not ok:
        return CommandFailed(**common, command_type=cmd.type, error_class=reason, message=f"{reason} fault",
                             reason=reason, command=cmd.model_dump(mode="json"))
    if isinstance(cmd, EnsureCustomer):
        return CustomerResolved(**common, email=cmd.email, key=cmd.key, customer_id="9", display_name="Jane Doe",
                                created=True)
    if isinstance(cmd, EnsureItem):
        return ItemResolved(**common, name=cmd.name, item_id=f"id-{cmd.name}", created=True)
    return DocumentCreated(**common, doc_type=cmd.doc_type, doc_number=cmd.document.DocNumber, qbo_id="77",
                           total_amt=Decimal("53.60"), created=True)


def test_request_id_follows_the_body_and_the_retry_not_the_delivery() -> None:
    known = customers(KNOWN_CUSTOMER)
    a = on_order(None, ORDER, RAW, "ev1", known, items(ALL_ITEMS), CFG, REALM).commands[0]
    b = on_order(None, ORDER, RAW, "ev2", known, items(ALL_ITEMS), CFG, REALM).commands[0]
    assert a.request_id == b.request_id  # the same body, delivered again: the same id (QBO dedupes it)
    remapped = on_order(None, ORDER, RAW, "ev1", known, items(ALL_ITEMS), MappingConfig(deposit_account_id="35"),
                        REALM).commands[0]
    assert remapped.request_id != a.request_id  # a corrected document is never answered with the old fault
    retried = on_order(None, ORDER, RAW, "ev1", known, items(ALL_ITEMS), CFG, REALM, retry_of="abc123").commands[0]
    assert retried.request_id != a.request_id and len(retried.request_id) <= MAX_LEN


def test_a_failed_ensure_then_a_siblings_success_leaves_the_order_parked_not_resolving() -> None:
    first = on_order(None, ORDER, RAW, "ev1", customers({}), items({}), CFG, REALM)
    cust, item1, item2, ship = first.commands
    failed = on_result(first.state, _result_for(item1, ok=False), customers({}), items({}), CFG, REALM)
    assert failed.state is not None and failed.state.status == "failed" and failed.parked is not None
    assert sorted(failed.state.outstanding) == sorted([cust.request_id, item2.request_id, ship.request_id])
    after = on_result(failed.state, _result_for(cust), customers(KNOWN_CUSTOMER), items({}), CFG, REALM)
    assert after.state is not None and after.state.status == "failed" and after.commands == []
    assert after.parked is None  # one dead letter for the parking, not one per sibling
    assert sorted(after.state.outstanding) == sorted([item2.request_id, ship.request_id])
    sibling_fails = on_result(after.state, _result_for(item2, ok=False), customers(KNOWN_CUSTOMER), items({}), CFG,
                              REALM)
    assert sibling_fails.parked is None and sibling_fails.state is not None
    assert sibling_fails.state.outstanding == [ship.request_id]


def test_an_answer_to_a_command_from_before_a_retry_changes_nothing() -> None:
    first = on_order(None, ORDER, RAW, "ev1", customers({}), items({}), CFG, REALM)
    parked = on_result(first.state, _result_for(first.commands[1], ok=False), customers({}), items({}), CFG, REALM)
    retried = on_order(parked.state, ORDER, RAW, "ev1", customers({}), items({}), CFG, REALM, retry_of="L1")
    assert retried.state is not None and retried.state.status == "resolving" and retried.state.salt == "L1"
    late = on_result(retried.state, _result_for(first.commands[2], ok=False), customers({}), items({}), CFG, REALM)
    assert (late.state, late.parked, late.outcome) == (None, None, "ignored")


def test_a_refused_cached_reference_is_resolved_again_once_then_parked() -> None:
    known = customers(KNOWN_CUSTOMER)
    d = on_order(None, ORDER, RAW, "ev1", known, items(ALL_ITEMS), CFG, REALM)
    [create] = d.commands
    stale = on_result(d.state, _result_for(create, ok=False, reason="stale_reference"), known, items(ALL_ITEMS),
                      CFG, REALM)
    assert stale.parked is None and stale.state is not None and stale.state.status == "resolving"
    assert stale.forget_customers == ("jane.doe@example.com",)
    assert stale.forget_items == ("prod001", "prod002", "shipping")
    assert [type(c).__name__ for c in stale.commands] == ["EnsureCustomer", "EnsureItem", "EnsureItem", "EnsureItem"]
    assert all(c.fresh for c in stale.commands if isinstance(c, EnsureCustomer | EnsureItem))
    first_ids = {c.request_id for c in on_order(None, ORDER, RAW, "ev1", customers({}), items({}), CFG, REALM).commands}
    assert first_ids.isdisjoint(c.request_id for c in stale.commands)  # QBO must not replay the old answers
    # The ids come back (new ones); the document is requested again; QBO refuses again: parked.
    state, tables = stale.state, items({})
    creates = []
    for cmd in stale.commands:
        d = on_result(state, _result_for(cmd), known, items(ALL_ITEMS), CFG, REALM)
        state = d.state or state
        creates += [c for c in d.commands if isinstance(c, CreateDocument)]
    assert state.status == "requested" and len(creates) == 1
    final = on_result(state, _result_for(creates[0], ok=False, reason="stale_reference"), known, items(ALL_ITEMS),
                      CFG, REALM)
    assert final.state is not None and final.state.status == "failed" and final.forget_customers == ()
    assert final.parked is not None and final.parked.reason == "stale_reference"
    del tables


def test_an_order_that_cannot_reconcile_is_parked_before_it_costs_qbo_calls() -> None:
    raw = {**RAW, "grand_total": 48.60}
    d = on_order(None, MagentoOrder.model_validate(raw), raw, "ev1", customers({}), items({}), CFG, REALM)
    assert (d.outcome, d.commands) == ("parked", [])  # no EnsureCustomer/EnsureItem for an order we will not book
    assert d.parked is not None and d.parked.reason == "reconciliation"
    line_refs = [ln["SalesItemLineDetail"]["ItemRef"] for ln in d.parked.command["document"]["Line"]
                 if ln.get("SalesItemLineDetail")]
    assert [r["value"] for r in line_refs] == ["PROD001", "PROD002", "Shipping"]  # names where ids would be


def test_a_second_document_for_a_booked_order_is_a_conflict_not_a_duplicate() -> None:
    booked = OrderState(status="synced", order_ref="100000001", event_id="ev1", qbo_id="77")
    same = DocumentCreated(order_id="100000001", order_ref="100000001", realm_id=REALM, request_id="r",
                           doc_type="SalesReceipt", doc_number="MAG-100000001", qbo_id="77",
                           total_amt=Decimal("53.60"), created=False)
    assert on_result(booked, same, customers({}), items({}), CFG, REALM).outcome == "duplicate"
    other = same.model_copy(update={"qbo_id": "78", "created": True})
    d = on_result(booked, other, customers({}), items({}), CFG, REALM)
    assert (d.outcome, d.state) == ("conflict", None)
