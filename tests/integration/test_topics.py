"""Topics on the real broker: durable settings, and a partition layout that cannot silently drift."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app import topics
from app.adapters.kafka_admin import ensure_topics
from tests.conftest import TEST_ENV

pytestmark = pytest.mark.kafka
MAGQB = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "magqb")


async def test_topics_require_min_2_in_sync_replicas_where_there_are_2(kafka_bootstrap: str) -> None:
    assert topics.durability(1) == {"min.insync.replicas": "1"}
    assert topics.durability(3) == {"min.insync.replicas": "2"}
    specs = topics.app_topics(8, 1)
    await ensure_topics(kafka_bootstrap, specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs])
    finally:
        await admin.close()
    values = {r[3]: {c[0]: c[1] for c in r[4]} for resp in described for r in resp.resources}
    assert {name: cfg["min.insync.replicas"] for name, cfg in values.items()} == {s.name: "1" for s in specs}
    assert values[topics.ORDERS]["retention.ms"] == "-1"


def test_a_topic_with_another_partition_count_stops_start_up_with_one_clear_line(kafka_bootstrap: str,
                                                                                 tmp_path: Path) -> None:
    import asyncio

    asyncio.run(ensure_topics(kafka_bootstrap, topics.app_topics(8, 1)))  # as the suite's other tests made them
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_"))},
           **TEST_ENV, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "MAGQB_PARTITIONS": "3",
           "MAGQB_DATA_DIR": str(tmp_path / "data")}
    for command in (["create-topics"], ["worker", "--web-port", "0"]):
        done = subprocess.run([MAGQB, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("magqb:")]
        assert "magento.orders has 8 (needs 3)" in line and "MAGQB_PARTITIONS" in line


async def test_a_topic_an_older_version_kept_14_days_keeps_its_records_now_and_its_other_settings(
        kafka_bootstrap: str) -> None:
    import uuid

    name = f"magqb-test-commands-{uuid.uuid4().hex[:8]}"
    two_weeks = str(14 * 24 * 3600 * 1000)
    old = topics.TopicSpec(name, 1, 1, {"min.insync.replicas": "1", "retention.ms": two_weeks,
                                        "segment.ms": "3600000"})
    assert await ensure_topics(kafka_bootstrap, [old]) == [name]
    now = topics.TopicSpec(name, 1, 1, {"min.insync.replicas": "1", "retention.ms": "-1"})
    assert await ensure_topics(kafka_bootstrap, [now]) == []
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        await admin.delete_topics([name])
    finally:
        await admin.close()
    values = {c[0]: c[1] for c in resp.resources[0][4]}
    assert (values["retention.ms"], values["segment.ms"], values["min.insync.replicas"]) == ("-1", "3600000", "1")
    assert all(s.config["retention.ms"] == "-1" for s in topics.app_topics(8, 1, ("qbo.retry.30s",))
               if s.name.startswith(("qbo.commands", "qbo.retry.")))


async def test_by_default_topics_get_the_clusters_replication_and_fewer_copies_than_wanted_are_said(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import uuid

    from app.adapters.kafka_admin import cluster_replication, replication_for

    assert [replication_for(n) for n in (1, 2, 3, 5)] == [1, 2, 3, 3]
    assert topics.durability(topics.CLUSTER_DEFAULT) == {}
    assert await cluster_replication(kafka_bootstrap, None, 10) == 1  # one broker here
    assert await cluster_replication(kafka_bootstrap, 3, 10) == 3  # MAGQB_REPLICATION_FACTOR wins
    name = f"magqb-test-rf-{uuid.uuid4().hex[:8]}"
    spec = topics.TopicSpec(name, 2, topics.CLUSTER_DEFAULT, {"retention.ms": "-1"})
    assert await ensure_topics(kafka_bootstrap, [spec]) == [name]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([name])
        [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    assert {len(p["replicas"]) for p in described["partitions"]} == {1}
    assert {c[0]: c[1] for c in resp.resources[0][4]}["min.insync.replicas"] == "1"
    # The cluster grew, or MAGQB_REPLICATION_FACTOR was raised: the existing topic is said, with the command.
    with caplog.at_level(logging.WARNING, logger="magqb.kafka"):
        await ensure_topics(kafka_bootstrap, [topics.TopicSpec(name, 2, 3, {"retention.ms": "-1"})])
    [line] = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert "has 1 replica(s) of its partitions, magqb wants 3" in line and "kafka-reassign-partitions" in line
