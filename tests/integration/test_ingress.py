"""The ingress on a real socket with the real broker: accepted orders are on the topic, bad input is not."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app import topics
from app.adapters.kafka_admin import ensure_topics
from app.domain.signature import sign
from app.ingress.server import (
    CANCELLED_PATH,
    CREDITMEMO_PATH,
    INVOICE_PATH,
    WEBHOOK_PATH,
    make_producer,
    serve,
    stop_producer,
)
from app.settings import Settings, load_settings
from schemas.envelope import decode_envelope
from tests.conftest import blueprint_order, free_port, magento_fixture, read_topics

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


async def start_ingress(settings: Settings) -> tuple[str, web.AppRunner, Any]:
    producer = make_producer(settings)
    await producer.start()
    port = free_port()
    runner = await serve(settings, producer, "127.0.0.1", port)
    return f"http://127.0.0.1:{port}", runner, producer


@pytest.fixture
async def ingress_runner(settings_env: dict[str, str], kafka_bootstrap: str,
                         monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Settings, web.AppRunner]]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MAGQB_MAX_BODY_BYTES", "200000")
    monkeypatch.setenv("MAGQB_MAX_EVENT_BYTES", "131072")  # an event may hold 128 KiB − 32 KiB: 96 KiB
    monkeypatch.setenv("MAGQB_INGRESS_READ_TIMEOUT", "2")
    monkeypatch.setenv("MAGQB_INGRESS_MAX_CONNECTIONS", "8")
    settings = load_settings()
    await ensure_topics(kafka_bootstrap, topics.app_topics(settings.kafka_partitions, 1))
    url, runner, producer = await start_ingress(settings)
    try:
        yield url, settings, runner
    finally:
        await runner.cleanup()
        await stop_producer(producer)


@pytest.fixture
def ingress(ingress_runner: tuple[str, Settings, web.AppRunner]) -> tuple[str, Settings]:
    url, settings, _ = ingress_runner
    return url, settings


async def until(check: Callable[[], bool], seconds: float, what: str) -> None:
    """A bounded wait for a condition of the server under test."""
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


async def topic_records(bootstrap: str) -> list[Any]:
    """Every record on magento.orders right now (read from the beginning, bounded)."""
    return await asyncio.to_thread(read_topics, bootstrap, [topics.ORDERS])


async def post(url: str, body: bytes, signature: str | None, path: str = WEBHOOK_PATH,
               **headers: str) -> tuple[int, Any]:
    hdrs = {"Content-Type": "application/json", **headers}
    if signature is not None:
        hdrs["X-Magento-Signature"] = signature
    async with aiohttp.ClientSession() as s, s.post(url + path, data=body, headers=hdrs) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


def signed(obj: Any, secret: str = "test-webhook-secret") -> tuple[bytes, str]:
    body = json.dumps(obj).encode()
    return body, sign(body, secret)


async def test_signed_order_is_on_the_topic_before_the_202(ingress, kafka_bootstrap) -> None:
    url, _ = ingress
    entity_id = random.randint(10**6, 10**9)  # unique per run: the broker may keep earlier runs' records
    order = {**blueprint_order(), "entity_id": entity_id, "increment_id": f"{entity_id:09d}"}
    body, sig = signed(order)
    status, answer = await post(url, body, sig)
    assert status == 202
    mine = [r for r in await topic_records(kafka_bootstrap) if r.key == str(entity_id).encode()]
    assert len(mine) == 1
    envelope = decode_envelope(mine[0].value)
    assert envelope.event_id == answer["event_id"]
    assert envelope.source == "magento-webhook"
    assert envelope.order == json.loads(body)


async def test_mage_os_data_wrapper_is_accepted_and_keyed_by_entity_id(ingress, kafka_bootstrap) -> None:
    url, _ = ingress
    body, sig = signed({"data": magento_fixture("000000014_cart_discount")})
    status, answer = await post(url, body, sig)
    assert (status, answer["order_id"]) == (202, "11")
    envelope = decode_envelope([r for r in await topic_records(kafka_bootstrap) if r.key == b"11"][-1].value)
    assert envelope.order["increment_id"] == "000000014"


def sales_fixture(folder: str) -> dict[str, Any]:
    [path] = (REPO / "tests" / "fixtures" / "magento" / folder).glob("*.json")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


async def test_credit_memos_invoices_and_cancellations_go_to_their_orders_partition(ingress, kafka_bootstrap) -> None:
    url, _ = ingress
    entity_id = random.randint(10**6, 10**9)
    memo = {**sales_fixture("creditmemo"), "order_id": entity_id}
    invoice = {**sales_fixture("invoice"), "order_id": entity_id}
    cancelled = {**blueprint_order(), "entity_id": entity_id, "state": "canceled", "status": "canceled"}
    answers = []
    for path, obj in ((CREDITMEMO_PATH, {"creditmemo": memo}), (INVOICE_PATH, invoice), (CANCELLED_PATH, cancelled)):
        body, sig = signed(obj)
        answers.append(await post(url, body, sig, path))
    assert [(status, a["order_id"]) for status, a in answers] == [(202, str(entity_id))] * 3
    mine = [r for r in await topic_records(kafka_bootstrap) if r.key == str(entity_id).encode()]
    assert len({r.partition for r in mine}) == 1  # one partition: the orders agent sees them in order
    envelopes = [decode_envelope(r.value) for r in mine]
    assert [(e.kind, e.event_id) for e in envelopes] == [("creditmemo", answers[0][1]["event_id"]),
                                                         ("invoice", answers[1][1]["event_id"]),
                                                         ("order", answers[2][1]["event_id"])]
    assert envelopes[0].creditmemo == memo and envelopes[0].order is None
    assert envelopes[1].invoice == invoice and envelopes[2].body["state"] == "canceled"


async def test_the_later_webhooks_answer_bad_input_like_new_order(ingress, kafka_bootstrap) -> None:
    url, _ = ingress
    memo = sales_fixture("creditmemo")
    body, _ = signed(memo)
    assert (await post(url, body, sign(body, "wrong-secret"), CREDITMEMO_PATH))[0] == 401
    status, answer = await post(url, b"{not json", sign(b"{not json", "test-webhook-secret"), INVOICE_PATH)
    assert status == 400
    no_total = {k: v for k, v in memo.items() if k != "grand_total"}
    body, sig = signed(no_total)
    status, answer = await post(url, body, sig, CREDITMEMO_PATH)
    assert status == 422 and answer["errors"] == [{"field": "grand_total", "message": "Field required"}]
    body, sig = signed({**blueprint_order(), "state": "processing"})
    status, answer = await post(url, body, sig, CANCELLED_PATH)
    assert status == 422 and answer["errors"][0]["field"] == "state"
    body, sig = signed(sales_fixture("invoice"))  # an invoice sent to the credit memo webhook
    status, answer = await post(url, body, sig, CREDITMEMO_PATH)
    assert status == 422 and "this is an invoice (can_void_flag), not a credit memo" in answer["errors"][0]["message"]
    body, sig = signed(sales_fixture("creditmemo"))
    status, answer = await post(url, body, sig, INVOICE_PATH)
    assert status == 422 and "not an invoice" in answer["errors"][0]["message"]
    body, sig = signed({**sales_fixture("invoice"), "order_id": "x"})
    status, answer = await post(url, body, sig, INVOICE_PATH)
    assert status == 422 and answer["errors"][0]["field"] == "order_id"


BAD_CASES = {
    "missing signature": (lambda b, s: (b, None), 401),
    "wrong signature": (lambda b, s: (b, sign(b, "wrong-secret")), 401),
    "body altered after signing": (lambda b, s: (b.replace(b"53.6", b"5.36"), s), 401),
    "not json": (lambda b, s: (b"{not json", sign(b"{not json", "test-webhook-secret")), 400),
    "too large": (lambda b, s: ((big := b" " * 210000 + b), sign(big, "test-webhook-secret")), 413),
    "non-ASCII signature": (lambda b, s: (b, "é" + s[1:]), 401),
    # Validly signed, nested 300 levels: parsed, but no Kafka record could hold it (orjson writes 254).
    "nested 300 levels": (lambda b, s: ((deep := b[:-1] + b', "extension_attributes": ' + b'{"a": ' * 300 + b'1'
                                         + b'}' * 300 + b'}'), sign(deep, "test-webhook-secret")), 422),
    "nested beyond the parser": (lambda b, s: ((deep := b"[" * 2000 + b"]" * 2000), sign(deep, "test-webhook-secret")),
                                 400),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
async def test_bad_input_is_refused_and_nothing_reaches_the_topic(ingress, kafka_bootstrap, case: str) -> None:
    url, _ = ingress
    make, expected = BAD_CASES[case]
    before = len(await topic_records(kafka_bootstrap))
    body, sig = make(*signed(blueprint_order()))
    status, answer = await post(url, body, sig)
    assert status == expected
    assert answer["error"]
    assert len(await topic_records(kafka_bootstrap)) == before


async def test_schema_invalid_order_gets_422_with_field_paths(ingress, kafka_bootstrap) -> None:
    url, _ = ingress
    order = blueprint_order()
    order["grand_total"] = "lots"
    del order["items"][1]["sku"]
    before = len(await topic_records(kafka_bootstrap))
    status, answer = await post(url, *signed(order))
    assert status == 422
    assert sorted(e["field"] for e in answer["errors"]) == ["grand_total", "items.1.sku"]
    assert len(await topic_records(kafka_bootstrap)) == before


async def test_health_and_readiness(ingress) -> None:
    url, _ = ingress
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/healthz") as r:
            assert r.status == 200
        async with s.get(url + "/readyz") as r:
            assert (r.status, (await r.json())["status"]) == (200, "ready")
        async with s.get(url + "/metrics") as r:
            assert "magqb_webhooks_total" in await r.text()


async def test_broker_down_gives_503_and_readyz_503(settings_env, monkeypatch, tmp_path) -> None:
    """A second, private broker that we stop: the ingress must answer 503 (Magento retries)."""
    port, controller = free_port(), free_port()
    env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
           "KAFKA_DATA_DIR": str(tmp_path / "kafka")}
    subprocess.run([str(REPO / "ops/kafka/start")], env=env, check=True, capture_output=True, timeout=120)
    try:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
        monkeypatch.setenv("MAGQB_PRODUCE_TIMEOUT", "3")
        settings = load_settings()
        await ensure_topics(settings.kafka_bootstrap_servers, topics.app_topics(2, 1))
        url, runner, producer = await start_ingress(settings)
        try:
            status, _ = await post(url, *signed(blueprint_order()))
            assert status == 202
            subprocess.run([str(REPO / "ops/kafka/stop")], env=env, check=True, capture_output=True, timeout=60)
            # (Other orders than the first: a repeat of a recorded body is answered without Kafka.)
            status, answer = await post(url, *signed({**blueprint_order(), "entity_id": 2}))
            assert status == 503
            assert answer["error"] == "event store unavailable, retry later"
            # Every 503 carries Retry-After (Mage-OS honours it), on every webhook.
            body, sig = signed({"data": {**blueprint_order(), "entity_id": 3}})
            async with aiohttp.ClientSession() as s, s.post(url + "/webhooks/mageos/sales.order.created", data=body,
                                                            headers={"X-Magento-Signature": sig}) as r:
                assert (r.status, r.headers.get("Retry-After")) == (503, "5")
            async with aiohttp.ClientSession() as s, s.get(url + "/readyz") as r:
                assert r.status == 503
        finally:
            await runner.cleanup()
            await stop_producer(producer, timeout=2)
    finally:
        subprocess.run([str(REPO / "ops/kafka/stop")], env=env, capture_output=True, timeout=60)


def _order(**changes: Any) -> dict[str, Any]:
    order = blueprint_order()
    for path, value in changes.items():
        target: Any = order
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(leaf) if leaf.isdigit() else leaf] = value
    return order


HOSTILE = {
    "amount beyond QBO's 10 digits": (_order(grand_total="1e12"), "grand_total"),
    "NaN amount": (_order(items__0__row_total="NaN"), "items.0.row_total"),
    "infinite amount": (_order(tax_amount="-Infinity"), "tax_amount"),
    "exponent amount": (_order(shipping_amount="9E+999"), "shipping_amount"),
    "huge quantity": (_order(items__1__qty_ordered=1e15), "items.1.qty_ordered"),
    "SKU that cleans to nothing": (_order(items__0__sku=":"), "items.0.sku"),
    "SKU of control characters": (_order(items__0__sku="\t\n\u0001"), "items.0.sku"),
    "thousands of lines": (_order(items=[{"sku": f"S{n}", "qty_ordered": 1} for n in range(1500)]), "items"),
    "increment id with a NUL": (_order(increment_id="1000\u00000001"), "increment_id"),
    "increment id too long": (_order(increment_id="9" * 40), "increment_id"),
    "currency that is not a code": (_order(order_currency_code="US Dollars"), "order_currency_code"),
    "year 1": (_order(created_at="0001-01-01 00:00:00"), "created_at"),
    "entity id past 64 bits": (_order(entity_id=2**64), "entity_id"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_orders_are_refused_with_the_field_path(ingress, kafka_bootstrap, case: str) -> None:
    url, _ = ingress
    order, field = HOSTILE[case]
    before = len(await topic_records(kafka_bootstrap))
    status, answer = await post(url, *signed(order))
    assert status == 422, answer
    assert field in [e["field"] for e in answer["errors"]]
    assert len(await topic_records(kafka_bootstrap)) == before


async def test_an_order_whose_dead_letter_could_not_be_written_is_refused(ingress, kafka_bootstrap) -> None:
    """Within the body limit, but past what one Kafka record can carry with a dead letter's fields."""
    url, settings = ingress
    order = {**blueprint_order(), "customer_note": "x" * 100_000}
    body, sig = signed(order)
    assert len(body) < settings.max_body_bytes
    before = len(await topic_records(kafka_bootstrap))
    status, answer = await post(url, body, sig)
    assert status == 422 and answer["errors"][0]["field"] == "(body)"
    assert "MAGQB_MAX_EVENT_BYTES" in answer["errors"][0]["message"]
    assert len(await topic_records(kafka_bootstrap)) == before
    small = {**blueprint_order(), "entity_id": random.randint(10**6, 10**9), "customer_note": "x" * 60_000}
    assert (await post(url, *signed(small)))[0] == 202  # under the line: accepted


async def _raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing; fails if it keeps the connection open longer."""
    data = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def test_a_client_trickling_its_headers_is_cut_off(ingress) -> None:
    url, settings = ingress
    reader, writer = await _raw(url)
    writer.write(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\n".encode())
    loop = asyncio.get_running_loop()
    started = loop.time()
    cut_off = False
    for _ in range(30):  # one byte a second would keep plain aiohttp waiting forever
        try:
            writer.write(b"X")
            await writer.drain()
            # A byte a second: the wait for the next one is a wait for the server to close.
            if reader.at_eof() or await _closed_within(reader, 1.0) == b"":
                cut_off = True
                break
        except TimeoutError:
            continue  # still open
        except ConnectionError:
            cut_off = True
            break
    assert cut_off
    assert loop.time() - started < settings.ingress_read_timeout_seconds + 3
    writer.close()


async def test_a_client_trickling_its_body_gets_408(ingress, kafka_bootstrap) -> None:
    url, settings = ingress
    body, sig = signed({**blueprint_order(), "entity_id": random.randint(10**6, 10**9)})
    reader, writer = await _raw(url)
    writer.write((f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"X-Magento-Signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body[:10])
    await writer.drain()
    answer = await _closed_within(reader, settings.ingress_read_timeout_seconds + 3)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    writer.close()


async def test_connections_past_the_cap_are_closed_and_the_ingress_still_serves(ingress_runner) -> None:
    url, settings, runner = ingress_runner
    assert runner.server is not None
    server = runner.server
    held = [await _raw(url) for _ in range(settings.ingress_max_connections)]
    await until(lambda: len(server.connections) == settings.ingress_max_connections, 5, "the held connections")
    reader, writer = await _raw(url)
    assert await _closed_within(reader, 2) == b""  # over the cap: closed at once, the others unharmed
    writer.close()
    # The idle ones are swept after the read timeout; then new clients are served again.
    await until(lambda: not server.connections, settings.ingress_read_timeout_seconds + 5, "the idle ones swept")
    status, _ = await post(url, *signed({**blueprint_order(), "entity_id": random.randint(10**6, 10**9)}))
    assert status == 202
    for _, w in held:
        w.close()


def test_metrics_can_live_off_the_public_webhook_port(kafka_bootstrap, tmp_path) -> None:
    from tests.conftest import TEST_ENV
    from tests.e2e.harness import MAGQB, http, poll

    port, metrics_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_"))},
           **TEST_ENV, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    proc = subprocess.Popen([MAGQB, "ingress", "--port", str(port), "--metrics-port", str(metrics_port)], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        poll(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "the ingress")
        assert http("GET", f"http://127.0.0.1:{port}/metrics")[0] == 404
        status, body = http("GET", f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200 and b"magqb_webhooks_total" in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_a_captured_body_posted_again_is_written_once_and_a_flood_of_repeats_gets_429(
        ingress_runner, kafka_bootstrap) -> None:
    _, settings, _ = ingress_runner
    url, runner, producer = await start_ingress(settings.model_copy(update={"ingress_repeats_per_minute": 2}))
    try:
        entity_id = random.randint(10**6, 10**9)
        order = {**blueprint_order(), "entity_id": entity_id, "increment_id": f"{entity_id:09d}"}
        body, sig = signed(order)
        first = await post(url, body, sig)
        # Re-sent as captured, and re-serialized (another key order): the same body, recorded once.
        spaced = json.dumps(dict(reversed(list(order.items()))), indent=2).encode()
        again = [await post(url, body, sig), await post(url, spaced, sign(spaced, "test-webhook-secret"))]
        assert [first[0], *(a[0] for a in again)] == [202, 202, 202]
        assert {a[1]["event_id"] for a in again} == {first[1]["event_id"]}
        status, answer = await post(url, body, sig)  # past the budget of 2 repeats a minute
        assert status == 429 and answer["retry_after_seconds"] >= 1
        # A new body is never held back by the repeats.
        other = {**order, "entity_id": entity_id + 1, "increment_id": f"{entity_id + 1:09d}"}
        assert (await post(url, *signed(other)))[0] == 202
        keys = [r.key for r in await topic_records(kafka_bootstrap)]
        assert (keys.count(str(entity_id).encode()), keys.count(str(entity_id + 1).encode())) == (1, 1)
        async with aiohttp.ClientSession() as s, s.post(url + WEBHOOK_PATH, data=body, headers={
                "Content-Type": "application/json", "X-Magento-Signature": sig}) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    finally:
        await runner.cleanup()
        await stop_producer(producer)
