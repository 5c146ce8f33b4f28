"""A signed Magento order in, exactly one QuickBooks SalesReceipt out — through the real broker."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import uuid
from decimal import Decimal

import pytest

from app.tools.dead_letters import read_log
from tests.conftest import MAGENTO_FIXTURES, blueprint_order, make_order, read_topics
from tests.e2e.harness import MAGQB, Stack, poll
from tests.unit.test_golden import fixture_order

pytestmark = pytest.mark.kafka


def receipts(stack: Stack, doc_number: str) -> list[dict]:
    return stack.query(f"SELECT * FROM SalesReceipt WHERE DocNumber = '{doc_number}'").get("SalesReceipt", [])


def test_blueprint_order_becomes_exactly_one_sales_receipt(stack: Stack) -> None:
    status, answer = stack.post_order(blueprint_order())
    assert status == 202 and answer["order_id"] == "100000001"

    [receipt] = poll(lambda: receipts(stack, "MAG-100000001"), 60,
                     lambda: "the SalesReceipt MAG-100000001 (worker log:\n" + stack.log_tail("worker") + ")")
    lines = receipt["Line"]
    assert [(ln["Amount"], ln["DetailType"]) for ln in lines] == [
        (Decimal("20.00"), "SalesItemLineDetail"),
        (Decimal("25.00"), "SalesItemLineDetail"),
        (Decimal("5.00"), "SalesItemLineDetail"),
        (Decimal("50.00"), "SubTotalLineDetail"),
    ]
    details = [ln["SalesItemLineDetail"] for ln in lines[:3]]
    assert [d["ItemRef"]["name"] for d in details] == ["PROD001", "PROD002", "Shipping"]
    assert [(d.get("Qty"), d.get("UnitPrice")) for d in details] == [(2, 10), (1, 25), (1, Decimal("5.00"))]
    assert [d["TaxCodeRef"]["value"] for d in details] == ["TAX", "TAX", "NON"]
    assert receipt["TxnTaxDetail"]["TotalTax"] == Decimal("3.60")
    assert receipt["TotalAmt"] == Decimal("53.60")
    assert receipt["CustomerRef"]["name"] == "Jane Doe"
    assert receipt["DepositToAccountRef"] == {"value": "4", "name": "Undeposited Funds"}
    assert receipt["PrivateNote"] == "Magento Order ID: 100000001 [entity 100000001]"
    assert receipt["TxnDate"] == "2023-10-26"
    customer = stack.query(f"SELECT * FROM Customer WHERE Id = '{receipt['CustomerRef']['value']}'")["Customer"][0]
    assert customer["PrimaryEmailAddr"]["Address"] == "jane.doe@example.com"

    # The same webhook twice more: still one document, and no customer more. (The fuzz test may have booked
    # other currencies' customers of this e-mail already: counted before, not assumed.)
    customers_before = stack.count("Customer", "PrimaryEmailAddr = 'jane.doe@example.com'")
    repeats_before = stack.metric("magqb_webhooks_total", "ingress", result="repeat")
    assert stack.post_order(blueprint_order())[0] == 202
    assert stack.post_order(blueprint_order())[0] == 202
    # The ingress recorded that very body: it answers the repeats and writes nothing more.
    assert stack.metric("magqb_webhooks_total", "ingress", result="repeat") == repeats_before + 2
    assert len(receipts(stack, "MAG-100000001")) == 1
    assert stack.count("Customer", "PrimaryEmailAddr = 'jane.doe@example.com'") == customers_before
    assert stack.sandbox_stats()["documents_created"]["SalesReceipt"] >= 1
    assert stack.count("SalesReceipt", "DocNumber = 'MAG-100000001'") == 1


def test_two_orders_of_one_customer_share_the_customer_and_the_overlapping_item(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    email = f"o'brien.{tag.lower()}@example.com"
    x, y, z = f"X-{tag}", f"Y-{tag}", f"Z-{tag}"
    base = random.randint(10**6, 10**8)
    first = make_order(base, email, [(x, 1, "12.50"), (y, 2, "3.00")],
                       customer_firstname="Seán", customer_lastname="O'Brien")
    second = make_order(base + 1, email, [(y, 1, "3.00"), (z, 3, "1.10")],
                        customer_firstname="Seán", customer_lastname="O'Brien")
    assert stack.post_order(first)[0] == 202
    assert stack.post_order(second)[0] == 202

    numbers = [f"MAG-{base:09d}", f"MAG-{base + 1:09d}"]
    docs = [poll(lambda n=n: receipts(stack, n), 60, lambda n=n: f"SalesReceipt {n} (worker log:\n"
                 + stack.log_tail("worker") + ")")[0] for n in numbers]
    assert [d["TotalAmt"] for d in docs] == [Decimal("23.50"), Decimal("11.30")]
    assert docs[0]["CustomerRef"]["value"] == docs[1]["CustomerRef"]["value"]
    assert stack.count("Customer", f"PrimaryEmailAddr = 'o\\'brien.{tag.lower()}@example.com'") == 1
    assert [stack.count("Item", f"Name = '{sku}'") for sku in (x, y, z)] == [1, 1, 1]


def test_a_total_mismatch_is_parked_with_both_totals_not_booked_wrong(stack: Stack) -> None:
    # reference/seed-blueprint.txt's own sample: grand_total 48.60, while its lines, tax and shipping make 53.60.
    base = random.randint(10**6, 10**8)
    order = {**blueprint_order(), "entity_id": base, "increment_id": f"{base:09d}", "grand_total": 48.60}
    mismatches = stack.metric("magqb_reconciliation_mismatches_total")
    assert stack.post_order(order)[0] == 202

    def letters() -> list:
        found = asyncio.run(read_log(stack.env["KAFKA_BOOTSTRAP_SERVERS"])).open()
        return [d for d in found if d.order_id == str(base)]

    [letter] = poll(letters, 60, lambda: "the parked order (worker log:\n" + stack.log_tail("worker") + ")")
    assert (letter.reason, letter.command_type) == ("reconciliation", "create_document")
    assert letter.attempts[0].message.startswith("document total 53.60 vs Magento grand_total 48.60 (difference 5.00")
    assert letter.command["document"]["DocNumber"] == f"MAG-{base:09d}"  # what would have been booked, to inspect
    assert stack.metric("magqb_reconciliation_mismatches_total") == mismatches + 1
    assert receipts(stack, f"MAG-{base:09d}") == []

    # dlq retry sends the order itself back through mapping: still wrong, so parked again — not booked.
    retried = subprocess.run([MAGQB, "dlq", "retry", letter.id], env=stack.env, capture_output=True, text=True,
                             timeout=60)
    assert retried.returncode == 0, retried.stderr
    poll(lambda: [d for d in letters() if d.id != letter.id], 60, "the order parked again after the retry")
    # Magento sends the corrected order: booked once, at its grand total.
    assert stack.post_order({**order, "grand_total": 53.60})[0] == 202
    [receipt] = poll(lambda: receipts(stack, f"MAG-{base:09d}"), 60, "the corrected order's SalesReceipt")
    assert receipt["TotalAmt"] == Decimal("53.60")


def test_the_real_fixtures_are_each_booked_once_at_their_grand_total(stack: Stack) -> None:
    """A mixed batch of real Magento payloads (configurable, bundle, discounts, VAT, guests, an edited order,
    an Adobe I/O event) through ingress → Kafka → worker → sandbox; then all of them again, and the edited
    order's cancelled original: nothing more is booked."""
    orders = {path.name: fixture_order(path) for path in MAGENTO_FIXTURES}
    # The Adobe I/O CloudEvent goes in as Magento sends it; the REST search result as its order.
    bodies = {path.name: json.loads(path.read_text()) if "io_event" in path.name else orders[path.name]
              for path in MAGENTO_FIXTURES}
    for name, body in bodies.items():
        status, answer = stack.post_order(body)
        assert status == 202, (name, answer)

    expected = {f"MAG-{o['increment_id']}": Decimal(str(o["grand_total"])).quantize(Decimal("0.01"))
                for o in orders.values()}

    def booked() -> dict[str, Decimal] | None:
        got = {}
        for number in expected:
            docs = receipts(stack, number)
            if len(docs) != 1:
                return None
            got[number] = docs[0]["TotalAmt"]
        return got

    totals = poll(booked, 120, lambda: "every fixture booked (worker log:\n" + stack.log_tail("worker") + ")")
    assert totals == expected
    assert expected["MAG-000000020"] == Decimal("0.00")  # the 100 % coupon books a zero-total receipt

    repeats = stack.metric("magqb_webhooks_total", "ingress", result="repeat")
    for body in bodies.values():
        assert stack.post_order(body)[0] == 202
    assert stack.metric("magqb_webhooks_total", "ingress", result="repeat") == repeats + len(bodies)
    assert booked() == expected
    # The edited order's original (000000013, edited into 000000013-1) cancelled: its receipt is voided,
    # the edit stays — one live document for the sale.
    original = orders["OCA__connector-magento__order_000000013_configurable_tax_customer.json"]
    assert stack.post_order({**original, "state": "canceled", "status": "canceled"}, "order-cancelled")[0] == 202
    poll(lambda: receipts(stack, "MAG-000000013")[0]["TotalAmt"] == 0, 60, "the original voided")
    assert receipts(stack, "MAG-000000013-1")[0]["TotalAmt"] == expected["MAG-000000013-1"] > 0


def test_a_customer_made_inactive_in_quickbooks_is_resolved_again_and_the_order_booked_once(stack: Stack) -> None:
    """Someone makes a customer inactive in QuickBooks; the worker's table still has its id. QBO refuses
    the next order's document (2500): the worker forgets the id, resolves the customer again (a new
    one: the old name now ends in "(deleted)") and books the order once — no dead letter."""
    base = random.randint(10**8, 2 * 10**8)
    email = f"inactive.{base}@example.com"
    first = make_order(base, email, [(f"INACT-{base}", 1, "10.00")])
    assert stack.post_order(first)[0] == 202
    [receipt] = poll(lambda: receipts(stack, f"MAG-{base:09d}"), 60, "the first order")
    old_id = receipt["CustomerRef"]["value"]
    customer = stack.query(f"SELECT * FROM Customer WHERE Id = '{old_id}'")["Customer"][0]
    status, _ = stack.api("POST", "customer", {"Id": old_id, "SyncToken": customer["SyncToken"], "sparse": True,
                                               "Active": False})
    assert status == 200
    second = make_order(base + 1, email, [(f"INACT-{base}", 2, "10.00")])
    assert stack.post_order(second)[0] == 202
    [booked] = poll(lambda: receipts(stack, f"MAG-{base + 1:09d}"), 90,
                    lambda: "the second order (worker log:\n" + stack.log_tail("worker") + ")")
    assert booked["CustomerRef"]["value"] != old_id
    assert booked["TotalAmt"] == Decimal("25.00")
    assert stack.count("Customer", f"PrimaryEmailAddr = '{email}'") == 1  # the active one
    letters = asyncio.run(read_log(stack.env["KAFKA_BOOTSTRAP_SERVERS"])).letters
    assert not [d for d in letters if d.order_id in (str(base), str(base + 1))]
    # Issue 22: the customer's row lives in the one partition its key hashes to, and the refused id was
    # tombstoned in every partition — no copy of it comes back at the next start.
    from app.adapters.kafka_io import partition_of

    changelog = f"{stack.env['MAGQB_APP_ID']}-customers-changelog"
    rows = [r for r in read_topics(stack.env["KAFKA_BOOTSTRAP_SERVERS"], [changelog]) if r.key == json.dumps(email).encode()]
    partitions = int(stack.env.get("MAGQB_PARTITIONS", "8"))
    written = [r for r in rows if r.value]
    tombstones = sorted(r.partition for r in rows if r.value is None)
    assert {r.partition for r in written} == {partition_of(json.dumps(email).encode(), partitions)}, rows
    assert tombstones == list(range(partitions))
    assert json.loads(written[-1].value)["customer_id"] == booked["CustomerRef"]["value"]


def test_finished_work_is_committed(stack: Stack) -> None:
    """The other half of acknowledging only finished work: what is finished is committed — the worker's
    group catches up with the end of magento.orders, qbo.results and qbo.commands once it is idle."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    from app.adapters import kafka_io

    bootstrap, group = stack.env["KAFKA_BOOTSTRAP_SERVERS"], stack.env["MAGQB_APP_ID"]
    base = random.randint(3 * 10**8, 4 * 10**8)
    for n in range(5):
        assert stack.post_order(make_order(base + n, f"commit{n}@example.com", [("COMMIT-1", 1, "9.99")]))[0] == 202
    poll(lambda: all(receipts(stack, f"MAG-{base + n:09d}") for n in range(5)), 90, "the five orders")

    async def lag() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tps = [tp for tp in committed if tp.topic in ("magento.orders", "qbo.results", "qbo.commands")]
            ends = await consumer.end_offsets(tps)
        finally:
            await kafka_io.close(consumer)
        return sum(ends[tp] - committed[tp].offset for tp in tps) if tps else -1

    poll(lambda: asyncio.run(lag()) == 0, 60, lambda: f"the group's commits to catch up (lag {asyncio.run(lag())})")


def test_unreadable_and_unhandleable_events_become_dead_letters_not_log_lines(stack: Stack) -> None:
    """Garbage on magento.orders and qbo.commands, and a result the worker cannot handle (an attempt record
    it cannot read): each becomes a dead letter with its reason and exact bytes, visible in `magqb dlq list`;
    the orders behind them flow on; `dlq retry` puts the bytes back where they were."""
    from aiokafka import AIOKafkaProducer

    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    base = random.randint(5 * 10**8, 6 * 10**8)
    garbage_order, garbage_command = b"\xff\xfenot an event", b'{"type": "create_document", "oops": 1}'
    bad_result = json.dumps({
        "type": "command_failed", "order_id": str(base), "order_ref": f"{base:09d}", "realm_id": "x",
        "request_id": "r1", "command_type": "ensure_item", "error_class": "permanent", "message": "m",
        "attempts": [{"at": "not a time"}]}).encode()

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("magento.orders", garbage_order, key=str(base + 1).encode())
            await producer.send_and_wait("qbo.commands", garbage_command, key=b"realm")
            await producer.send_and_wait("qbo.results", bad_result, key=str(base).encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    behind = make_order(base + 2, f"behind.{base}@example.com", [("BEHIND-1", 1, "4.00")])
    assert stack.post_order(behind)[0] == 202

    def letters() -> dict[str, object]:
        found = {}
        for d in asyncio.run(read_log(bootstrap)).letters:
            raw = d.raw_bytes()
            if raw in (garbage_order, garbage_command, bad_result):
                found[raw] = d
        return found if len(found) == 3 else {}

    found = poll(letters, 60, lambda: "three dead letters (worker log:\n" + stack.log_tail("worker") + ")")
    assert (found[garbage_order].reason, found[garbage_order].source.topic) == ("unreadable", "magento.orders")
    assert (found[garbage_command].reason, found[garbage_command].source.topic) == ("unreadable", "qbo.commands")
    internal = found[bad_result]
    assert (internal.reason, internal.source.topic, internal.order_id) == ("internal", "qbo.results", str(base))
    assert "ValidationError" in internal.attempts[0].message
    poll(lambda: receipts(stack, f"MAG-{base + 2:09d}"), 60, "the order behind them")

    listed = subprocess.run([MAGQB, "dlq", "list"], env=stack.env, capture_output=True, text=True, timeout=60)
    assert all(found[raw].id in listed.stdout for raw in found), listed.stdout
    retried = subprocess.run([MAGQB, "dlq", "retry", found[garbage_order].id], env=stack.env, capture_output=True,
                             text=True, timeout=60)
    assert retried.returncode == 0, retried.stderr

    def again() -> bool:  # back on the topic byte for byte: unreadable again, a letter of its own
        return sum(1 for d in asyncio.run(read_log(bootstrap)).letters if d.raw_bytes() == garbage_order) == 2

    poll(again, 60, "the retried bytes read again")


def test_an_order_of_a_known_customer_and_items_costs_one_write_and_no_read(stack: Stack) -> None:
    base = random.randint(7 * 10**8, 8 * 10**8)
    email, sku = f"warm.{base}@example.com", f"WARM-{base}"
    assert stack.post_order(make_order(base, email, [(sku, 1, "3.00")]))[0] == 202
    poll(lambda: receipts(stack, f"MAG-{base:09d}"), 60, "the first order (customer and item resolved)")

    def spent() -> tuple[int, int]:
        """The worker's reads (it queries by POST; this test reads back by GET) and writes."""
        requests = stack.sandbox_stats()["requests"]
        reads = sum(n for k, n in requests.items() if k.startswith("POST /v3/query"))
        writes = sum(n for k, n in requests.items() if k.startswith("POST /v3/") and not k.startswith("POST /v3/query"))
        return reads, writes

    before = spent()
    assert stack.post_order(make_order(base + 1, email, [(sku, 2, "3.00")]))[0] == 202
    poll(lambda: receipts(stack, f"MAG-{base + 1:09d}"), 60, "the second order")
    after = spent()
    assert (after[0] - before[0], after[1] - before[1]) == (0, 1)
    assert stack.metric("magqb_qbo_requests_total", entity="salesreceipt", kind="write", method="POST",
                        status="200") >= 2


def test_credit_memos_too_large_to_keep_together_wait_for_their_order_and_are_each_booked(stack: Stack) -> None:
    """Three credit memos of ~600 KB each (the largest bodies the ingress takes are ~1 MB) come before their
    order: together they are more than a Kafka record holds. Their order's state keeps where they are in the
    log, not the bodies; the partition goes on, and once the order is booked each is refunded once."""
    base = random.randint(10**6, 10**8)
    order = {**blueprint_order(), "entity_id": base, "increment_id": f"{base:09d}",
             "customer_email": f"large.{base}@example.com"}
    lines = [("PROD001", "10", "0.80"), ("PROD001", "10", "0.80"), ("PROD002", "25", "2.00")]
    memos = []
    for n, (sku, price, tax) in enumerate(lines):
        total = Decimal(price) + Decimal(tax)
        memos.append({"entity_id": base * 10 + n, "increment_id": f"{base + n:09d}", "order_id": base, "state": 2,
                      "subtotal": price, "tax_amount": tax, "shipping_amount": "0", "grand_total": str(total),
                      "items": [{"order_item_id": 1 if sku == "PROD001" else 2, "sku": sku, "name": sku, "qty": 1,
                                 "price": price, "row_total": price, "tax_amount": tax}],
                      "comments": [{"comment": f"{n}" * 600_000}]})
    for m in memos:
        assert stack.post_order(m, "creditmemo-created")[0] == 202
    later = make_order(base + 1, f"after.{base}@example.com", [("AFTER-1", 1, "10.00")])
    later["entity_id"] = base + 10**9  # another order on whatever partition: it must be booked too
    assert stack.post_order(order)[0] == 202
    assert stack.post_order(later)[0] == 202
    numbers = [f"MAG-CM-{m['increment_id']}" for m in memos]

    def refunds() -> list[dict] | None:
        found = [stack.query(f"SELECT * FROM RefundReceipt WHERE DocNumber = '{n}'").get("RefundReceipt", [])
                 for n in numbers]
        return found if all(len(f) == 1 for f in found) else None

    found = poll(refunds, 120, lambda: "the three refunds (worker log:\n" + stack.log_tail("worker") + ")")
    assert [f[0]["TotalAmt"] for f in found] == [Decimal("10.80"), Decimal("10.80"), Decimal("27.00")]
    assert len(receipts(stack, f"MAG-{base:09d}")) == 1
    poll(lambda: receipts(stack, f"MAG-{later['increment_id']}"), 60, "the order behind them")
    story = json.loads(subprocess.run([MAGQB, "status", str(base), "--json"], env=stack.env, capture_output=True,
                                      text=True, timeout=120).stdout)
    assert [(f["kind"], f["status"]) for f in story["later"]] == [("refund", "done")] * 3
