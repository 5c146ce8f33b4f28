"""Orders stuck on their way (their command gone): when one is, and how `replay --stuck` moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.mapping import MappingConfig
from app.domain.order_flow import on_order, on_result
from app.domain.retry_ladder import parse_ladder
from app.domain.state_tally import StateTally
from app.domain.stuck import is_stuck, stuck_after
from schemas.commands import CreateDocument, EnsureCustomer
from schemas.events import DocumentCreated
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry
from tests.conftest import blueprint_order

CFG = MappingConfig()
REALM = "123"
RAW = blueprint_order()
ORDER = MagentoOrder.model_validate(RAW)
ITEMS = {"prod001": ItemEntry(item_id="1"), "prod002": ItemEntry(item_id="2"), "shipping": ItemEntry(item_id="3")}
NOW = datetime(2033, 1, 1, 12, tzinfo=UTC)


def customers(key: str) -> CustomerEntry | None:
    return CustomerEntry(customer_id="9", display_name="Jane Doe") if key == "jane.doe@example.com" else None


def items(name: str) -> ItemEntry | None:
    return ITEMS.get(name.lower())


def test_stuck_means_in_progress_longer_than_the_whole_ladder_and_an_hour() -> None:
    ladder = parse_ladder("30s,5m,30m,2h")
    after = stuck_after(ladder)
    assert after == timedelta(hours=3, minutes=35, seconds=30)
    assert stuck_after(ladder, 10) == timedelta(minutes=10)
    old, fresh = (NOW - after - timedelta(seconds=1)).isoformat(), (NOW - after + timedelta(seconds=1)).isoformat()
    assert [is_stuck(s, old, NOW, after) for s in ("resolving", "requested", "failed", "synced", "pending")] == \
        [True, True, False, False, False]
    assert is_stuck("requested", fresh, NOW, after) is False
    assert is_stuck("requested", "not a time", NOW, after) is False
    assert is_stuck("requested", (NOW - after * 2).replace(tzinfo=None), NOW, after) is True  # naive: UTC
    rows = [{"status": "requested", "updated_at": old}, {"status": "resolving", "updated_at": fresh},
            {"status": "failed", "updated_at": old}, "garbage"]
    tally = StateTally()
    tally.load(0, enumerate(rows))
    report = tally.report([0], NOW, after)
    assert (report.stuck, report.counts["requested"], report.counts["waiting"], report.counts["parked"]) == (1, 1, 1, 1)


def test_a_stuck_order_is_sent_on_under_new_ids_looking_first_and_only_while_it_is_stuck() -> None:
    d = on_order(None, ORDER, RAW, "ev1", customers, items, CFG, REALM)
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument) and not cmd.verify and d.state is not None
    # Its command is gone: `replay --stuck` re-sends the order marked stuck.
    again = on_order(d.state, ORDER, RAW, "ev-stuck", customers, items, CFG, REALM, replay_id="r1", stuck=True)
    [cmd2] = again.commands
    assert isinstance(cmd2, CreateDocument) and again.state is not None
    assert (again.outcome, cmd2.verify, cmd2.document.DocNumber) == ("unstuck_requested", True, "MAG-100000001")
    assert cmd2.request_id != cmd.request_id and again.state.outstanding == [cmd2.request_id]
    # The old command's answer, should it still come, books the same document; the new one's is a duplicate.
    booked = on_result(again.state, DocumentCreated(
        order_id="100000001", order_ref="100000001", realm_id=REALM, request_id=cmd.request_id,
        doc_type="SalesReceipt", doc_number="MAG-100000001", qbo_id="42", total_amt=cmd.document.computed_total(),
        created=True), customers, items, CFG, REALM)
    assert booked.state is not None and (booked.state.status, booked.state.qbo_id) == ("synced", "42")
    # Once it has moved on, a stuck marking changes nothing.
    late = on_order(booked.state, ORDER, RAW, "ev-stuck2", customers, items, CFG, REALM, replay_id="r2", stuck=True)
    assert (late.outcome, late.commands, late.state) == ("duplicate", [], None)


def test_a_stuck_order_waiting_for_its_customer_asks_for_it_again() -> None:
    d = on_order(None, ORDER, RAW, "ev1", lambda k: None, items, CFG, REALM)
    assert d.state is not None and d.state.status == "resolving"
    again = on_order(d.state, ORDER, RAW, "ev-stuck", lambda k: None, items, CFG, REALM, replay_id="r1", stuck=True)
    [ensure] = again.commands
    assert isinstance(ensure, EnsureCustomer) and ensure.request_id != d.commands[0].request_id
    assert again.outcome == "unstuck_waiting"


def test_a_duplicate_delivery_does_not_make_a_stuck_order_look_fresh() -> None:
    from schemas.state import HistoryEntry, OrderState, with_history

    old = OrderState(status="requested", order_ref="1", event_id="e", updated_at=datetime.now(UTC) - timedelta(hours=5))
    entry = HistoryEntry(at=NOW, what="order event", detail="again")
    assert with_history(old, entry, touch=False).updated_at == old.updated_at
    assert with_history(old, entry).updated_at > old.updated_at


async def test_preferences_the_company_will_not_show_are_taken_as_numbers_kept_not_as_a_failure_of_every_order(
        ) -> None:
    from app.adapters.qbo_client import QboError
    from app.dispatch import Dispatcher
    from app.domain.faults import ErrorClass, QboFault

    class Refusing:
        realm_id = "123"
        reads = 0

        async def preferences(self) -> dict[str, object]:
            self.reads += 1
            raise QboError(QboFault(403, "ApplicationAuthorizationFailed", "403", "no access", None, ""),
                           ErrorClass.PERMANENT)

    client = Refusing()
    d = Dispatcher(client)  # type: ignore[arg-type]
    assert await d.numbers_kept() is True and await d.numbers_kept() is True
    assert client.reads == 1  # not asked again at every document
