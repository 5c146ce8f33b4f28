"""Shared fixtures and factories: Magento orders, signed bodies, settings, free ports."""

from __future__ import annotations

import copy
import json
import os
import socket
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
MAGENTO_FIXTURES = sorted((FIXTURES / "magento").glob("*.json"))
QBO_FIXTURES = FIXTURES / "qbo"

# Settings every process under test gets; nothing is read from a developer's .env.
TEST_ENV: dict[str, str] = {
    "MAGENTO_WEBHOOK_SECRET": "test-webhook-secret",
    "QUICKBOOKS_CLIENT_ID": "test-client-id",
    "QUICKBOOKS_CLIENT_SECRET": "test-client-secret",
    "QUICKBOOKS_REFRESH_TOKEN": "test-initial-refresh-token",
    "QUICKBOOKS_REALM_ID": "9130350000000042",
    "QUICKBOOKS_SANDBOX": "true",
}


def blueprint_order() -> dict[str, Any]:
    """The sample order of reference/seed-blueprint.txt (also `magqb sample-webhook`'s body)."""
    return json.loads(resources.files("app.samples").joinpath("blueprint_order.json").read_text())


def magento_fixture(name_part: str) -> dict[str, Any]:
    matches = [p for p in MAGENTO_FIXTURES if name_part in p.name]
    assert len(matches) == 1, f"{name_part!r} matches {matches}"
    return json.loads(matches[0].read_text())


def make_order(entity_id: int, email: str, skus: list[tuple[str, int, str]], **overrides: Any) -> dict[str, Any]:
    """A blueprint-shaped order: `skus` is [(sku, qty, unit price)]; tax 0, shipping 5."""
    order = copy.deepcopy(blueprint_order())
    items = []
    subtotal = 0.0
    for n, (sku, qty, price) in enumerate(skus, start=1):
        row = round(qty * float(price), 2)
        subtotal += row
        items.append({"item_id": n, "sku": sku, "name": f"Product {sku}", "qty_ordered": qty,
                      "price": float(price), "row_total": row, "tax_amount": 0, "discount_amount": 0})
    order.update({
        "entity_id": entity_id, "increment_id": f"{entity_id:09d}", "customer_email": email, "items": items,
        "subtotal": round(subtotal, 2), "tax_amount": 0, "shipping_amount": 5,
        "grand_total": round(subtotal + 5, 2),
    })
    order.update(overrides)
    return order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (a local cluster's nodes take a range)."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        try:
            held = []
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    env = {**TEST_ENV, "MAGQB_DATA_DIR": str(tmp_path / "data")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env from the working tree
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The real broker `make test` started; tests that need it fail loudly without it."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    host, _, port = bootstrap.partition(":")
    if not bootstrap:
        pytest.fail("KAFKA_BOOTSTRAP_SERVERS is not set: run the suite with `make test` (it starts Kafka)")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"no Kafka broker at {bootstrap} ({exc}): run the suite with `make test`")
    return bootstrap


def read_topics(bootstrap: str, names: list[str]) -> list[Any]:
    """Every record of these topics right now (aiokafka ConsumerRecords), read from the beginning, bounded."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from app.adapters import kafka_io

    async def read() -> list[Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        records: list[Any] = []
        try:
            consumer.assign(parts)
            end = await consumer.end_offsets(parts)
            await consumer.seek_to_beginning(*parts)
            for _ in range(10_000):  # bounded: each round reads up to the end offsets taken above
                if all([await consumer.position(tp) >= end[tp] for tp in parts]):
                    break
                batch = await consumer.getmany(*parts, timeout_ms=2000)
                if not batch:
                    break
                for recs in batch.values():
                    records.extend(recs)
        finally:
            await kafka_io.close(consumer)
        return records

    return asyncio.run(read())
