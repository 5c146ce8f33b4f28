"""The orders' table on disk brought up to its changelog's end before a worker joins (on the real
broker, into real RocksDB databases): exactly the rows and tombstones faust would apply, and only the
records past what the disk already holds."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import rocksdict

from app import topics
from app.adapters import kafka_io
from app.adapters.kafka_admin import ensure_topics
from app.adapters.rocks_store import BoundedOptions
from app.adapters.table_warmup import warm_up

pytestmark = pytest.mark.kafka
PARTITIONS = 3


class DiskStore:
    """What warm_up uses of faust's RocksDB store (app.adapters.rocks_store.Store)."""

    offset_key = b"__faust\x00offset__"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rocksdb_options = BoundedOptions(16 * 1024 * 1024)

    def partition_path(self, partition: int) -> Path:
        return self.root / f"order_state-{partition}.db"

    def rows(self, partition: int) -> tuple[dict[str, object], int | None]:
        db = self.rocksdb_options.open(self.partition_path(partition))
        try:
            found = {json.loads(k): json.loads(v) for k, v in db.items() if k != self.offset_key}
            offset = db.get(self.offset_key)
            return found, int(offset) if offset is not None else None
        finally:
            db.close()


async def write(bootstrap: str, topic: str, records: list[tuple[str, dict[str, object] | None]]) -> None:
    producer = kafka_io.producer(bootstrap, "test-warmup", 1 << 20)
    await producer.start()
    try:
        for key, value in records:
            part = kafka_io.partition_of(key.encode(), PARTITIONS)
            await producer.send_and_wait(topic, None if value is None else json.dumps(value).encode(),
                                         key=json.dumps(key).encode(), partition=part)
    finally:
        await kafka_io.close(producer)


async def test_the_disk_gets_every_row_and_tombstone_then_only_what_is_new(kafka_bootstrap: str,
                                                                            tmp_path: Path) -> None:
    topic = f"warmup-{uuid.uuid4().hex[:8]}-order_state-changelog"
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic, PARTITIONS, 1, {"cleanup.policy": "compact"})])
    first = [(str(n), {"status": "requested", "n": n}) for n in range(60)]
    later = [(str(n), {"status": "synced", "n": n}) for n in range(0, 60, 2)] + [("7", None), ("100", {"status": "synced"})]
    await write(kafka_bootstrap, topic, first + later)
    store = DiskStore(tmp_path)

    done = await warm_up(store, topic, kafka_bootstrap, PARTITIONS)
    assert done.rows == 92
    rows = {}
    for p in range(PARTITIONS):
        found, offset = store.rows(p)
        assert offset is not None and all(kafka_io.partition_of(k.encode(), PARTITIONS) == p for k in found)
        rows.update(found)
    assert "7" not in rows and len(rows) == 60  # 0..59 less the tombstone, and 100
    assert [rows[str(n)]["status"] for n in (0, 1, 2, 3)] == ["synced", "requested", "synced", "requested"]

    # Written since: only those are read (faust's offset semantics: the persisted record is read again).
    await write(kafka_bootstrap, topic, [("1", {"status": "synced", "n": 1}), ("100", None)])
    again = await warm_up(store, topic, kafka_bootstrap, PARTITIONS)
    assert again.rows <= 2 + PARTITIONS
    rows = {}
    for p in range(PARTITIONS):
        rows.update(store.rows(p)[0])
    assert rows["1"]["status"] == "synced" and "100" not in rows and len(rows) == 59


async def test_a_database_another_process_holds_is_refused_not_waited_for(kafka_bootstrap: str,
                                                                          tmp_path: Path) -> None:
    topic = f"warmup-{uuid.uuid4().hex[:8]}-order_state-changelog"
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic, PARTITIONS, 1, {"cleanup.policy": "compact"})])
    store = DiskStore(tmp_path)
    held = rocksdict.Rdict(str(store.partition_path(1)), rocksdict.Options(raw_mode=True))
    try:
        with pytest.raises(Exception, match="(?i)lock"):
            await warm_up(store, topic, kafka_bootstrap, PARTITIONS)
    finally:
        held.close()


async def test_a_disk_ahead_of_its_changelog_is_built_anew_from_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The cluster made again under an old data dir: the disk's rows belong to a log that is gone."""
    topic = f"warmup-{uuid.uuid4().hex[:8]}-order_state-changelog"
    await ensure_topics(kafka_bootstrap, [topics.TopicSpec(topic, PARTITIONS, 1, {"cleanup.policy": "compact"})])
    store = DiskStore(tmp_path)
    stale = store.rocksdb_options.open(store.partition_path(0))
    stale[json.dumps("999").encode()] = json.dumps({"status": "synced"}).encode()
    stale[store.offset_key] = b"5000"
    stale.close()
    key = next(str(n) for n in range(100) if kafka_io.partition_of(str(n).encode(), PARTITIONS) == 0)
    await write(kafka_bootstrap, topic, [(key, {"status": "requested"})])
    await warm_up(store, topic, kafka_bootstrap, PARTITIONS)
    rows, offset = store.rows(0)
    assert (rows, offset) == ({key: {"status": "requested"}}, 0)
