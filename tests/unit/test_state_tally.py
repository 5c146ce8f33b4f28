"""Orders by state kept as rows change, and the RocksDB scan that starts the counts while rows are
still being written (rocksdict, the library faust's RocksDB store uses: no broker here)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict

from app.adapters import table_rows
from app.domain.state_tally import StateTally

NOW = datetime(2033, 1, 1, 12, tzinfo=UTC)


def row(status: str, minutes_ago: int = 0) -> dict[str, str]:
    at = (NOW - timedelta(minutes=minutes_ago)).isoformat()
    return {"status": status, "received_at": at, "updated_at": at}


def test_a_row_changing_state_moves_one_count_and_the_oldest_follows() -> None:
    tally = StateTally()
    tally.load(0, [("a", row("requested", 30)), ("b", row("resolving", 10)), ("c", row("synced")), ("d", "junk")])
    report = tally.report([0], NOW, timedelta(minutes=20))
    assert (report.counts["requested"], report.counts["waiting"], report.counts["booked"]) == (1, 1, 1)
    assert (report.stuck, report.oldest) == (1, NOW - timedelta(minutes=30))
    tally.change(0, "a", row("requested", 30), row("synced"))
    report = tally.report([0], NOW, timedelta(minutes=20))
    assert (report.counts["requested"], report.counts["booked"], report.stuck) == (0, 2, 0)
    assert report.oldest == NOW - timedelta(minutes=10)
    tally.change(0, "e", None, row("failed"))  # a new order, parked
    assert tally.report([0], NOW, None).counts["parked"] == 1
    assert tally.report([1], NOW, None).counts["booked"] == 0  # not counted for a partition it never read
    tally.drop(0)
    assert tally.report([0], NOW, None).counts["booked"] == 0


class FakeRocksStore:
    """The parts of faust's RocksDB Store the scan uses, over a real rocksdict database."""

    offset_key = b"__faust\x00offset__"

    def __init__(self, path: Path) -> None:
        self.db = Rdict(str(path), Options(raw_mode=True))
        self._dbs = {0: self.db}

    def _db_for_partition(self, partition: int) -> Any:
        return self._dbs[partition]

    def _encode_key(self, key: str) -> bytes:
        return json.dumps(key).encode()

    def _decode_value(self, raw: bytes) -> Any:
        return json.loads(raw)

    def put(self, key: str, value: Any) -> None:
        self.db[self._encode_key(key)] = json.dumps(value).encode()


def truth(store: FakeRocksStore) -> Counter[str]:
    tally = StateTally()
    tally.load(0, ((k, json.loads(v)) for k, v in store.db.items() if k != store.offset_key))
    return +tally.report([0], NOW, None).counts


@pytest.mark.parametrize("slice_size", [1, 7, 5000])
def test_rows_written_while_the_scan_reads_are_counted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           slice_size: int) -> None:
    monkeypatch.setattr(table_rows, "SLICE", slice_size)
    store = FakeRocksStore(tmp_path / "p0")
    for n in range(100):
        store.put(f"{n:03d}", row("requested"))
    store.db[store.offset_key] = b"99"
    table = type("Table", (), {"data": store})()
    tally = StateTally()

    async def writer() -> None:
        # As the orders agent does: read the old row, write the new one, tell the tally.
        for n in list(range(0, 100, 3)) + [150, 151]:
            key = f"{n:03d}"
            raw = store.db.get(store._encode_key(key))
            old = json.loads(raw) if raw is not None else None
            new = row("synced")
            store.put(key, new)
            tally.change(0, table_rows.tally_key(table, key), old, new)
            await asyncio.sleep(0)  # the scan's turn between two writes: an interleaving, not a wait

    async def both() -> bool:
        results = await asyncio.gather(table_rows.scan(table, 0, 1, tally, lambda: True), writer())
        return bool(results[0])

    assert asyncio.run(both()) is True
    counts = +tally.report([0], NOW, None).counts
    assert counts == truth(store) == Counter({"booked": 36, "requested": 66})
    store.db.close()


def test_a_scan_cut_short_by_a_rebalance_counts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_rows, "SLICE", 10)
    store = FakeRocksStore(tmp_path / "p0")
    for n in range(50):
        store.put(f"{n:03d}", row("synced"))
    table = type("Table", (), {"data": store})()
    tally = StateTally()
    assert asyncio.run(table_rows.scan(table, 0, 1, tally, lambda: False)) is False
    assert tally.known() == set()
    store.db.close()
