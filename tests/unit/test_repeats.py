"""Repeats of recorded bodies: answered without writing, within a per-source budget (app.ingress.repeats)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.domain.mapping import MappingConfig
from app.domain.order_flow import on_order, on_result
from app.domain.order_life import on_creditmemo
from app.ingress.repeats import RepeatGuard, digest
from schemas.commands import CreateDocument
from schemas.events import CommandFailed
from schemas.magento import MagentoCreditMemo, MagentoOrder
from schemas.state import CustomerEntry, ItemEntry
from tests.conftest import blueprint_order

CFG, REALM, RAW = MappingConfig(), "123", blueprint_order()
ITEMS = {"prod001": ItemEntry(item_id="1"), "prod002": ItemEntry(item_id="2"), "shipping": ItemEntry(item_id="3")}


def customers(key: str) -> CustomerEntry | None:
    return CustomerEntry(customer_id="9", display_name="Jane Doe") if key == "jane.doe@example.com" else None


def items(name: str) -> ItemEntry | None:
    return ITEMS.get(name.lower())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeat_is_known_by_its_content_and_a_budget_refills_with_time() -> None:
    assert digest("order", "1", {"a": 1, "b": [1, 2]}) == digest("order", "1", {"b": [1, 2], "a": 1})
    assert digest("order", "1", {"a": 1}) != digest("order", "2", {"a": 1})
    assert digest("order", "1", {"a": 1}) != digest("creditmemo", "1", {"a": 1})
    clock = Clock()
    guard = RepeatGuard(per_minute=2, remembered=3, clock=clock)
    assert guard.recorded("d1") is None
    guard.record("d1", "ev1")
    assert guard.recorded("d1") == "ev1"
    assert [guard.admit("webhook"), guard.admit("webhook"), guard.admit("webhook")] == [0.0, 0.0, 30.0]
    assert guard.admit("another-source") == 0.0  # budgets are per source
    clock.now = 30.0  # half a minute: one repeat's worth back
    assert (guard.admit("webhook"), guard.admit("webhook")) == (0.0, 30.0)
    for n in range(2, 5):
        guard.record(f"d{n}", f"ev{n}")
    assert guard.recorded("d1") is None and guard.recorded("d4") == "ev4"  # bounded: the oldest forgotten
    assert RepeatGuard(per_minute=0).admit("x") == 0.0  # 0: no limit


def parked() -> tuple[Any, CreateDocument]:
    d = on_order(None, MagentoOrder.model_validate(RAW), RAW, "ev1", customers, items, CFG, REALM)
    [cmd] = d.commands
    assert isinstance(cmd, CreateDocument)
    failed = CommandFailed(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=REALM, request_id=cmd.request_id,
                           command_type=cmd.type, error_class="validation", message="6000 …", reason="permanent")
    p = on_result(d.state, failed, customers, items, CFG, REALM)
    assert p.state is not None and p.state.status == "failed"
    return p.state, cmd


def test_the_very_body_a_parked_order_was_parked_with_again_costs_no_quickbooks_call() -> None:
    state, _ = parked()
    again = on_order(state, MagentoOrder.model_validate(RAW), dict(RAW), "ev2", customers, items, CFG, REALM)
    assert (again.outcome, again.commands) == ("duplicate", [])
    assert again.state is not None and again.state.duplicates_seen == 1 and again.state.status == "failed"
    changed = {**RAW, "updated_at": "2033-01-02 10:00:00"}  # a real change: mapped again, looking first
    moved = on_order(state, MagentoOrder.model_validate(changed), changed, "ev3", customers, items, CFG, REALM)
    [cmd] = moved.commands
    assert isinstance(cmd, CreateDocument) and cmd.verify
    retried = on_order(state, MagentoOrder.model_validate(RAW), dict(RAW), "ev4", customers, items, CFG, REALM,
                       retry_of="dl-1")  # `magqb dlq retry`: the operator's call
    assert len(retried.commands) == 1


def test_the_very_body_a_parked_refund_was_parked_with_again_costs_no_quickbooks_call() -> None:
    state, cmd = parked()
    booked = on_order(None, MagentoOrder.model_validate(RAW), RAW, "ev1", customers, items, CFG, REALM)
    from schemas.events import DocumentCreated

    [c] = booked.commands
    assert isinstance(c, CreateDocument)
    synced = on_result(booked.state, DocumentCreated(
        order_id=c.order_id, order_ref=c.order_ref, realm_id=REALM, request_id=c.request_id, doc_type=c.doc_type,
        doc_number=c.document.DocNumber, qbo_id="42", total_amt=c.document.computed_total(), created=True),
        customers, items, CFG, REALM).state
    memo = {"entity_id": 7, "increment_id": "200000007", "order_id": 100000001, "state": 2,
            "grand_total": Decimal("10.8"), "subtotal": 10, "tax_amount": Decimal("0.8"),
            "items": [{"order_item_id": 1, "sku": "PROD001", "name": "Product 1", "qty": 1, "price": 10,
                       "row_total": 10, "tax_amount": Decimal("0.8")}]}
    d = on_creditmemo(synced, MagentoCreditMemo.model_validate(memo), memo, "cm1", items, CFG, REALM)
    [rc] = d.commands
    failed = CommandFailed(order_id=rc.order_id, order_ref=rc.order_ref, realm_id=REALM, request_id=rc.request_id,
                           command_type=rc.type, error_class="validation", message="6000 …", reason="permanent")
    p = on_result(d.state, failed, customers, items, CFG, REALM)
    assert p.state is not None and p.state.follow_ups[0].status == "failed"
    again = on_creditmemo(p.state, MagentoCreditMemo.model_validate(memo), dict(memo), "cm2", items, CFG, REALM)
    assert (again.outcome, again.commands) == ("duplicate", [])
