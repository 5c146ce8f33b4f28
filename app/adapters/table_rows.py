"""A faust table's rows of one partition, read into a StateTally: the RocksDB store (a database per
partition) in key order and in slices that give the event loop back, the memory store at once.

faust's own iteration reads every active partition at once and decodes every row in one go: fine for
a few thousand rows, a stall of seconds for a million."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from app.adapters import kafka_io
from app.domain.state_tally import StateTally

SLICE = 2_000


def tally_key(table: Any, key: Any) -> Any:
    """The key as the scan orders it: the stored bytes in RocksDB, the key itself in memory."""
    store = table.data
    return store._encode_key(key) if hasattr(store, "_dbs") else key


async def scan(table: Any, partition: int, partitions: int, tally: StateTally, still: Callable[[], bool],
               hashed: dict[Any, int] | None = None) -> bool:
    """Count `partition`'s rows into `tally`; False (and nothing counted) when `still()` turns false
    midway (a rebalance: the next owner counts them). `hashed`: the memory store's key → partition."""
    store = table.data
    if not hasattr(store, "_dbs"):  # the memory store: one dict for every partition, read without a pause
        known = hashed if hashed is not None else {}

        def part(key: Any) -> int:
            p = known.get(key)
            if p is None:
                p = known[key] = kafka_io.partition_of(str(key).encode(), partitions)
            return p

        tally.load(partition, ((k, v) for k, v in list(store.data.items()) if part(k) == partition))
        return True
    db = store._db_for_partition(partition)  # open while the partition is ours
    tally.begin(partition)
    after: bytes | None = None
    while True:
        # A fresh iterator every slice: it sees what was written while we were away. Not through the
        # block cache: a count of every row must not push out the rows orders are reading.
        it = db.iter(_uncached())
        if after is None:
            it.seek_to_first()
        else:
            it.seek(after)
            if it.valid() and it.key() == after:
                it.next()
        rows: list[tuple[bytes, Any]] = []
        read = 0
        while it.valid() and read < SLICE:
            key = it.key()
            read += 1
            after = key
            if key != store.offset_key:
                rows.append((key, _decode(store, it.value())))
            it.next()
        tally.scanned(partition, rows, upto=after)
        if read < SLICE:
            break
        await asyncio.sleep(0)
        if not still():
            tally.drop(partition)
            return False
    tally.finish(partition)
    return True


def _uncached() -> Any:
    import rocksdict

    options = rocksdict.ReadOptions()
    options.fill_cache(False)  # type: ignore[call-arg]  # rocksdict's stub leaves out the flag it takes
    return options


def _decode(store: Any, raw: bytes) -> Any:
    try:
        return store._decode_value(raw)
    except Exception:  # noqa: BLE001 - a row this version cannot read is not counted; the worker goes on
        return None
