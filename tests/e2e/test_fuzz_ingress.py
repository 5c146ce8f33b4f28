"""Fuzz the webhook with validly signed bodies around the Magento order schema (hypothesis).

Wrong types, missing fields, huge and tiny numbers, unicode, nesting, wrappers: the ingress
answers only 202, 400, 413 or 422 — never a 5xx — and every order it accepted ends booked
(a DocumentCreated on qbo.results) or dead-lettered, with the worker alive throughout.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import itertools
import json
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import topics
from app.domain.signature import sign
from app.tools.dead_letters import read_log
from tests.conftest import blueprint_order, read_topics
from tests.e2e.harness import Stack, poll

pytestmark = pytest.mark.kafka

EXAMPLES = int(os.environ.get("MAGQB_FUZZ_EXAMPLES", "10000"))
BLUEPRINT = blueprint_order()
ALLOWED = {202, 400, 413, 422}

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 10**10, 10**12, 10**20, 9_999_999_999.99, 0.005, 1e-9]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1E+400", "1e-999", "1E+30", "0.0000001",
                     "53.6000000000000001", "", " ", "1_000", "0x10", "١٢٣", "12,50", "€5"]),
)
texts = st.one_of(st.text(max_size=60), st.sampled_from([":", "\t", "\n", "\u0000", "\u202e", "a:b", " ", "🦆" * 30,
                                                          "<script>", "' OR 1=1 --", "\\'", "%s%n"]))
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

FIELDS = [
    ("entity_id",), ("increment_id",), ("state",), ("status",), ("store_id",), ("created_at",), ("customer_email",),
    ("customer_id",), ("customer_is_guest",), ("customer_firstname",), ("customer_lastname",),
    ("order_currency_code",), ("base_currency_code",), ("base_to_order_rate",), ("grand_total",), ("subtotal",),
    ("tax_amount",), ("shipping_amount",), ("shipping_tax_amount",), ("discount_amount",), ("shipping_description",),
    ("items",), ("billing_address",), ("payment",), ("payment", "method"), ("billing_address", "street"),
    ("billing_address", "firstname"), ("relation_parent_real_id",),
    *((("items", 0, f)) for f in ("sku", "name", "qty_ordered", "price", "row_total", "tax_amount", "tax_percent",
                                  "discount_amount", "product_type", "item_id", "parent_item_id")),
    *((("items", 1, f)) for f in ("sku", "qty_ordered", "row_total")),
]


def _set(order: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    target: Any = order
    for part in path[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return
    if not isinstance(target, dict | list):
        return
    try:
        if delete:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # not an order at all
    order = copy.deepcopy(BLUEPRINT)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(FIELDS))
        kind = draw(st.sampled_from(["value", "number", "text", "delete"]))
        value = draw({"value": json_values, "number": numbers, "text": texts, "delete": st.none()}[kind])
        _set(order, path, value, kind == "delete")
    if draw(st.integers(0, 24)) == 0 and isinstance(order.get("items"), list) and order["items"]:
        order["items"] = order["items"] * draw(st.sampled_from([10, 400, 1200]))  # many lines
    if draw(st.integers(0, 49)) == 0:
        order["padding"] = "x" * draw(st.sampled_from([900_000, 1_100_000]))  # near and past the limits
    return draw(st.sampled_from([lambda o: o, lambda o: {"data": o}, lambda o: {"data": {"value": o}}]))(order)


def _finalize(body: Any, ids: itertools.count[int]) -> Any:
    """Unique order ids (a numeric one is replaced), and no order that is cancelled (those book nothing)."""
    order = body.get("data", body) if isinstance(body, dict) else body
    if isinstance(order, dict) and isinstance(order.get("value"), dict):
        order = order["value"]
    if isinstance(order, dict):
        if isinstance(order.get("entity_id"), int | float) and not isinstance(order.get("entity_id"), bool) or \
                isinstance(order.get("entity_id"), str) and order["entity_id"].strip().isdigit():
            order["entity_id"] = next(ids)
        if str(order.get("state", "")).strip().lower() == "canceled":
            order["state"] = "new"
    return body


def _results(bootstrap: str, wanted: set[str]) -> tuple[set[str], set[str]]:
    """Order ids with a DocumentCreated on qbo.results, and order ids with a dead letter."""
    booked = {r.key.decode() for r in read_topics(bootstrap, [topics.RESULTS])
              if r.key and r.key.decode() in wanted and b'"document_created"' in (r.value or b"")}
    dead = {d.order_id for d in asyncio.run(read_log(bootstrap)).letters if d.order_id in wanted}
    return booked, dead


def test_ten_thousand_signed_bodies_get_clear_answers_and_every_accepted_order_is_settled(stack: Stack) -> None:
    host, port = stack.ingress_url.removeprefix("http://").split(":")
    secret = stack.env["MAGENTO_WEBHOOK_SECRET"]
    ids = itertools.count(7_000_000_000)
    answers: Counter[int] = Counter()
    accepted: set[str] = set()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(body: bytes) -> tuple[int, bytes]:
        nonlocal conn
        for _ in range(2):
            try:
                conn.request("POST", "/webhooks/magento/new-order", body=body, headers={
                    "Content-Type": "application/json", "X-Magento-Signature": sign(body, secret)})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException):
                conn.close()  # the server closed a kept-alive connection (a 413, a 408): open another
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
        raise AssertionError("the ingress stopped answering")

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(bodies())
    def post_one(body: Any) -> None:
        raw = json.dumps(_finalize(body, ids), allow_nan=True).encode()
        status, answer = post(raw)
        answers[status] += 1
        assert status in ALLOWED, (status, answer[:300], raw[:300])
        if status == 202:
            accepted.add(json.loads(answer)["order_id"])

    post_one()
    conn.close()
    print(f"\nfuzz: {sum(answers.values())} bodies, answers {dict(sorted(answers.items()))}, "
          f"{len(accepted)} orders accepted")
    assert sum(answers.values()) >= EXAMPLES
    assert answers[202] > EXAMPLES // 20 and answers[422] > EXAMPLES // 5  # both sides of the schema are reached
    assert stack.procs["worker"].poll() is None and stack.procs["ingress"].poll() is None

    def settled() -> bool:
        booked, dead = _results(stack.env["KAFKA_BOOTSTRAP_SERVERS"], accepted)
        settled.missing = accepted - booked - dead  # type: ignore[attr-defined]
        return not settled.missing  # type: ignore[attr-defined]

    poll(settled, 300, lambda: f"{len(settled.missing)} accepted orders neither booked nor dead-lettered, "  # type: ignore[attr-defined]
         f"e.g. {sorted(settled.missing)[:5]}; worker log:\n{stack.log_tail('worker', 30)}", interval=3)
    assert stack.procs["worker"].poll() is None, "the worker died"
