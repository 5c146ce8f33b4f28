"""The ingress on a real socket with the real broker: accepted orders are on the topic, bad input is not."""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app import topics
from app.adapters.kafka_admin import ensure_topics
from app.domain.signature import sign
from app.ingress.server import WEBHOOK_PATH, build_app, make_producer, stop_producer
from app.settings import Settings, load_settings
from schemas.envelope import decode_envelope
from tests.conftest import blueprint_order, free_port, magento_fixture

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


async def start_ingress(settings: Settings) -> tuple[str, web.AppRunner, Any]:
    producer = make_producer(settings)
    await producer.start()
    runner = web.AppRunner(build_app(settings, producer))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}", runner, producer


@pytest.fixture
async def ingress(settings_env: dict[str, str], kafka_bootstrap: str,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Settings]]:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MAGQB_MAX_BODY_BYTES", "65536")
    settings = load_settings()
    await ensure_topics(kafka_bootstrap, topics.app_topics(settings.kafka_partitions, 1))
    url, runner, producer = await start_ingress(settings)
    try:
        yield url, settings
    finally:
        await runner.cleanup()
        await stop_producer(producer)


async def topic_records(bootstrap: str) -> list[Any]:
    """Every record on magento.orders right now (read from the beginning, bounded)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topics.ORDERS])
    finally:
        await admin.close()
    parts = [TopicPartition(topics.ORDERS, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(parts)
        end = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        for _ in range(100):  # bounded: each round reads up to the end offsets taken above
            if all([await consumer.position(tp) >= end[tp] for tp in parts]):
                break
            batch = await consumer.getmany(*parts, timeout_ms=2000)
            if not batch:
                break
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def post(url: str, body: bytes, signature: str | None, **headers: str) -> tuple[int, Any]:
    hdrs = {"Content-Type": "application/json", **headers}
    if signature is not None:
        hdrs["X-Magento-Signature"] = signature
    async with aiohttp.ClientSession() as s, s.post(url + WEBHOOK_PATH, data=body, headers=hdrs) as resp:
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


BAD_CASES = {
    "missing signature": (lambda b, s: (b, None), 401),
    "wrong signature": (lambda b, s: (b, sign(b, "wrong-secret")), 401),
    "body altered after signing": (lambda b, s: (b.replace(b"53.6", b"5.36"), s), 401),
    "not json": (lambda b, s: (b"{not json", sign(b"{not json", "test-webhook-secret")), 400),
    "too large": (lambda b, s: ((big := b" " * 70000 + b), sign(big, "test-webhook-secret")), 413),
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
            status, answer = await post(url, *signed(blueprint_order()))
            assert status == 503
            assert answer["error"] == "event store unavailable, retry later"
            async with aiohttp.ClientSession() as s, s.get(url + "/readyz") as r:
                assert r.status == 503
        finally:
            await runner.cleanup()
            await stop_producer(producer, timeout=2)
    finally:
        subprocess.run([str(REPO / "ops/kafka/stop")], env=env, capture_output=True, timeout=60)
