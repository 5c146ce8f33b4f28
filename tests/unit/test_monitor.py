"""The worker's figures count only the orders of the partitions it owns (its table also holds
standby copies of other workers' partitions)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from app import topics
from app.adapters.kafka_io import partition_of as kafka_partition_of
from app.adapters.monitor import Monitor


def partition_of(key: str) -> int:
    return kafka_partition_of(key.encode(), 4)


def test_only_the_owned_partitions_rows_count() -> None:
    now = datetime.now(UTC)
    keys = [str(k) for k in range(1000, 1040)]
    mine = {partition_of(keys[0])}
    rows = {}
    for n, key in enumerate(keys):
        age = timedelta(minutes=n)
        rows[key] = {"status": "requested" if n % 2 else "synced", "received_at": (now - age).isoformat()}
    consumer = SimpleNamespace(assignment=lambda: {TopicPartition(topics.ORDERS, p) for p in mine})
    monitor = Monitor(SimpleNamespace(consumer=consumer), SimpleNamespace(data=rows), "127.0.0.1:1", "g", (),
                      partitions=4)
    asyncio.run(monitor.states())
    owned = [(n, k) for n, k in enumerate(keys) if partition_of(k) in mine]
    requested = [n for n, _ in owned if n % 2]
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "requested"}) == len(requested)
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "booked"}) == len(owned) - len(requested)
    oldest = REGISTRY.get_sample_value("magqb_oldest_unbooked_order_seconds")
    assert oldest is not None and abs(oldest - 60 * max(requested)) < 5
