"""Replays in the orders agent's decision, and the dry run that predicts them."""

from __future__ import annotations

from decimal import Decimal

from app import jsonutil
from app.domain.mapping import MappingConfig
from app.domain.order_flow import on_order
from app.tools.replay import Selection, classify, replayed_value, wanted
from schemas.commands import CreateDocument
from schemas.envelope import decode_envelope, envelope_bytes
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState
from tests.conftest import blueprint_order

CFG = MappingConfig()
REALM = "123"
RAW = blueprint_order()
ORDER = MagentoOrder.model_validate(RAW)
KNOWN_C = {"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")}
KNOWN_I = {"prod001": ItemEntry(item_id="1"), "prod002": ItemEntry(item_id="2"), "shipping": ItemEntry(item_id="3")}
SYNCED = OrderState(status="synced", order_ref=ORDER.order_ref, event_id="e0", qbo_id="77", doc_type="SalesReceipt",
                    doc_number="MAG-" + ORDER.order_ref, total_amt=Decimal("53.60"))


def decide(state: OrderState | None, **kw: object):  # type: ignore[no-untyped-def]
    return on_order(state, ORDER, RAW, "e1", KNOWN_C.get, lambda n: KNOWN_I.get(n.lower()), CFG, REALM, **kw)


def test_a_replayed_event_of_a_booked_order_changes_nothing_not_even_a_counter() -> None:
    d = decide(SYNCED, replay_id="r1")
    assert (d.outcome, d.state, d.commands) == ("duplicate", None, [])
    # a webhook duplicate still counts
    assert decide(SYNCED).state.duplicates_seen == 1  # type: ignore[union-attr]


def test_a_missing_order_replayed_is_booked_under_the_replays_request_ids_with_a_lookup_first() -> None:
    fresh, replayed = decide(None), decide(None, replay_id="r1")
    [a], [b] = fresh.commands, replayed.commands
    assert isinstance(a, CreateDocument) and isinstance(b, CreateDocument)
    assert a.document.DocNumber == b.document.DocNumber
    assert (a.verify, b.verify) == (False, True)
    assert a.request_id != b.request_id


def test_a_parked_order_replayed_is_mapped_again() -> None:
    parked = SYNCED.model_copy(update={"status": "failed", "qbo_id": None, "error": "docnumber_taken: …"})
    d = decide(parked, replay_id="r1")
    assert d.outcome == "requested" and d.state is not None and d.state.salt == "replay:r1"


def test_a_recheck_asks_again_for_a_booked_order_lookup_first_and_keeps_its_story() -> None:
    d = decide(SYNCED, replay_id="r2", recheck=True)
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and cmd.verify and d.state is not None and d.state.status == "requested"
    # the Id it was booked as is asked for first, and kept until an answer replaces it
    assert cmd.known_id == "77" and d.state.qbo_id == "77"
    # a cancelled order is never booked again, however it is asked
    cancelled = MagentoOrder.model_validate({**RAW, "state": "canceled"})
    again = on_order(SYNCED, cancelled, {**RAW, "state": "canceled"}, "e2", KNOWN_C.get,
                     lambda n: KNOWN_I.get(n.lower()), CFG, REALM, replay_id="r4", recheck=True)
    # (it is voided instead: a cancellation of a booked order, tests/unit/test_order_life.py)
    assert again.outcome == "void_requested" and [c.type for c in again.commands] == ["void_document"]
    # in progress: a recheck is a duplicate like any other delivery
    assert decide(d.state, replay_id="r3", recheck=True).outcome == "duplicate"


def test_the_dry_run_says_what_the_worker_would_do() -> None:
    _, value = envelope_bytes(RAW, "magento-webhook")
    booked = classify("1", value, SYNCED, CFG, REALM)
    assert (booked.outcome, booked.qbo_id, booked.doc_number) == ("booked", "77", "MAG-" + ORDER.order_ref)
    new = classify("1", value, None, CFG, REALM)
    assert (new.outcome, new.doc_type, new.doc_number, new.total) == ("would_book", "SalesReceipt",
                                                                       "MAG-" + ORDER.order_ref, Decimal("53.60"))
    _, off = envelope_bytes({**RAW, "grand_total": 40}, "magento-webhook")
    parked = classify("1", off, None, CFG, REALM)
    assert parked.outcome == "would_park" and parked.detail.startswith("reconciliation: document total 53.60")
    _, cancelled = envelope_bytes({**RAW, "state": "canceled"}, "magento-webhook")
    assert classify("1", cancelled, None, CFG, REALM).outcome == "would_skip"
    assert classify("1", b"{not json", None, CFG, REALM).outcome == "unreadable"


def test_a_replayed_event_is_a_new_event_of_the_same_order() -> None:
    event_id, value = envelope_bytes(RAW, "magento-webhook")
    again = decode_envelope(replayed_value(value, "r9", recheck=True))
    assert (again.source, again.replay_id, again.replay_of, again.recheck) == ("replay", "r9", event_id, True)
    assert again.event_id != event_id and again.order == jsonutil.loads(value)["order"]
    assert replayed_value(b"[1]", "r9") is None


def test_orders_are_picked_by_entity_or_increment_id() -> None:
    _, value = envelope_bytes(RAW, "magento-webhook")
    assert wanted("5", value, frozenset())
    assert wanted("5", value, frozenset({"5"}))
    assert wanted("5", value, frozenset({ORDER.order_ref}))
    assert not wanted("5", value, frozenset({"6"}))
    assert Selection(from_offset=0).fingerprint() != Selection(from_offset=1).fingerprint()


def test_a_credit_memo_is_replayed_as_itself_and_is_not_taken_for_its_orders_newest_event() -> None:
    from app.tools.replay import is_order_event

    memo = {"entity_id": 5, "order_id": 100000001, "grand_total": 1, "items": []}
    _, value = envelope_bytes(memo, "magento-webhook", kind="creditmemo")
    assert not is_order_event(value) and is_order_event(envelope_bytes(RAW, "magento-webhook")[1])
    again = decode_envelope(replayed_value(value, "r7"))
    assert (again.kind, again.creditmemo, again.order, again.replay_id) == ("creditmemo", memo, None, "r7")
