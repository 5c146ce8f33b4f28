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
from app.domain.state_tally import StateTally


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
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=1, rebalancing=False, in_recovery=False)
    memory_store = SimpleNamespace(data=rows)
    tally = StateTally()
    monitor = Monitor(app, SimpleNamespace(data=memory_store), tally, "127.0.0.1:1", "g", (), partitions=4)
    asyncio.run(monitor.states())
    owned = [(n, k) for n, k in enumerate(keys) if partition_of(k) in mine]
    requested = [n for n, _ in owned if n % 2]
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "requested"}) == len(requested)
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "booked"}) == len(owned) - len(requested)
    oldest = REGISTRY.get_sample_value("magqb_oldest_unbooked_order_seconds")
    assert oldest is not None and abs(oldest - 60 * max(requested)) < 5


def test_counts_follow_the_rows_written_without_reading_the_table_again() -> None:
    now = datetime.now(UTC)
    keys = [str(k) for k in range(2000, 2030)]
    rows = {k: {"status": "requested", "received_at": now.isoformat()} for k in keys}
    every = {TopicPartition(topics.ORDERS, p) for p in range(4)}
    app = SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: every), consumer_generation_id=7,
                          rebalancing=False, in_recovery=False)
    tally = StateTally()
    reads = []

    class Store:
        @property
        def data(self) -> dict[str, object]:
            reads.append(1)
            return rows

    monitor = Monitor(app, SimpleNamespace(data=Store()), tally, "127.0.0.1:1", "g", (), partitions=4)
    asyncio.run(monitor.states())
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "requested"}) == 30
    first_reads = len(reads)
    for k in keys[:10]:  # booked, as the orders agent writes them
        booked = {"status": "synced", "updated_at": now.isoformat()}
        tally.change(partition_of(k), k, rows[k], booked)
        rows[k] = booked
    asyncio.run(monitor.states())
    assert len(reads) == first_reads  # the table was not read again
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "requested"}) == 20
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "booked"}) == 10
    # Mid-rebalance: the partitions still counted stand, one taken away is not counted (its next owner counts it).
    gone = partition_of(keys[0])
    app.rebalancing = True
    monitor.revoked({gone})
    asyncio.run(monitor.states())
    assert len(reads) == first_reads
    still_ours = [k for k in keys if partition_of(k) != gone]
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "requested"}) == \
        sum(1 for k in still_ours if rows[k]["status"] == "requested")
    # Settled again with the partition back: read again from the rows.
    app.rebalancing = False
    asyncio.run(monitor.states())
    assert len(reads) > first_reads
    assert REGISTRY.get_sample_value("magqb_orders", {"state": "booked"}) == 10
