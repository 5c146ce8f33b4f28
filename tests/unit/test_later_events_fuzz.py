"""Fuzz the credit memo and invoice boundary: whatever a sender puts in a field, the payload is refused
with field paths (what the ingress answers 422 with) or decided without an exception — booked, waiting
or parked, never a crash of the orders agent."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain.mapping import MappingConfig
from app.domain.order_life import on_creditmemo, on_invoice
from schemas.magento import MagentoCreditMemo, MagentoInvoice
from tests.unit.test_follow_up_mapping import fixture
from tests.unit.test_order_life import booked, items

CFG = MappingConfig()
STATE = booked()
values = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                   st.sampled_from(["", "NaN", "1e999", "-5", "10.005", "0.00", "abc", "\u0000", "🦆", "100000001"]),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
MEMO_FIELDS = [("entity_id",), ("order_id",), ("increment_id",), ("grand_total",), ("subtotal",), ("tax_amount",),
               ("shipping_amount",), ("discount_amount",), ("adjustment",), ("adjustment_positive",),
               ("adjustment_negative",), ("created_at",), ("items",), ("items", 0, "sku"), ("items", 0, "qty"),
               ("items", 0, "row_total"), ("items", 0, "price"), ("items", 0, "tax_amount"),
               ("items", 0, "order_item_id"), ("items", 0, "discount_amount")]
INVOICE_FIELDS = [("entity_id",), ("order_id",), ("increment_id",), ("state",), ("grand_total",), ("updated_at",)]


def mutate(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target: Any = out
    try:
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    except (TypeError, KeyError, IndexError):
        return body  # an earlier change took the path away (items is no longer a list)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(MEMO_FIELDS), values), min_size=1, max_size=3))
def test_a_mangled_credit_memo_is_refused_with_field_paths_or_decided(changes: list[Any]) -> None:
    body = {**fixture("creditmemo"), "order_id": 100000001}
    for path, value in changes:
        body = mutate(body, path, value)
    try:
        memo = MagentoCreditMemo.model_validate(body)
    except ValidationError as exc:
        assert all(err["loc"] for err in exc.errors())
        return
    d = on_creditmemo(STATE, memo, body, "fuzz", items, CFG, "123")
    assert d.outcome in ("refund_requested", "waiting", "parked", "waiting_for_order", "duplicate")
    if d.outcome == "refund_requested":
        assert d.commands[0].document.computed_total() == round(memo.grand_total, 2)  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(INVOICE_FIELDS), values), min_size=1, max_size=3))
def test_a_mangled_invoice_is_refused_with_field_paths_or_decided(changes: list[Any]) -> None:
    body = {**fixture("invoice"), "order_id": 100000001}
    for path, value in changes:
        body = mutate(body, path, value)
    try:
        invoice = MagentoInvoice.model_validate(body)
    except ValidationError as exc:
        assert all(err["loc"] for err in exc.errors())
        return
    d = on_invoice(STATE, invoice, body, "fuzz", CFG, "123")
    assert d.outcome in ("ignored", "payment_requested", "parked", "waiting_for_order")
