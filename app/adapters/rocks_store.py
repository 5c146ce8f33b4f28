"""faust's RocksDB store with one memory budget for the whole worker, and a flush at a clean stop.

faust opens a database per partition, each with its own block cache (2 GiB by default) and its own
memtables (3 × 64 MiB): memory that grows with the partitions a worker holds, active and standby, and
that a small host cannot give. Here every database of the process shares one block cache, and the
memtables are charged to it (RocksDB's write buffer manager), so what RocksDB holds in memory is capped
by MAGQB_TABLE_MEMORY_MB however many orders and partitions there are. Index and filter blocks live
in the cache too.

At a clean stop every database flushes its memtables: the next start replays no write-ahead log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import rocksdict
from faust import stores
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as FaustRocksStore

log = logging.getLogger("magqb.table")
SCHEME = "magqb-rocksdb"

_shared: dict[int, tuple[Any, Any]] = {}  # budget in bytes -> (cache, write buffer manager): one per process


def _budget(total: int) -> tuple[Any, Any]:
    if total not in _shared:
        cache = rocksdict.Cache(total)
        # Memtables may take up to half of it before RocksDB flushes them; charged to the cache, they
        # push blocks out rather than adding to it.
        manager = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(total // 2, False, cache)
        _shared[total] = (cache, manager)
    return _shared[total]


class BoundedOptions(RocksDBOptions):
    """RocksDBOptions whose databases share the process's cache and memtable budget."""

    def __init__(self, memory_bytes: int, **kwargs: Any) -> None:
        super().__init__(use_rocksdict=True, **kwargs)
        self.memory_bytes = memory_bytes

    def as_options(self) -> rocksdict.Options:
        cache, manager = _budget(self.memory_bytes)
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_open_files(self.max_open_files or 256)
        opts.set_write_buffer_size(self.write_buffer_size)
        opts.set_max_write_buffer_number(self.max_write_buffer_number)
        opts.set_target_file_size_base(self.target_file_size_base)
        opts.set_write_buffer_manager(manager)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        return opts

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        db = rocksdict.Rdict(str(path), options=self.as_options(), access_type=rocksdict.AccessType.read_write())
        db.set_read_options(rocksdict.ReadOptions())
        return db


class Store(FaustRocksStore):
    """The orders' table on disk (registered as `magqb-rocksdb:`): options from `memory_mb`."""

    def __init__(self, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        opts = dict(options or {})  # faust pops keys from the dict it is given: a copy of the table's
        memory_mb = int(opts.pop("memory_mb", 64))
        super().__init__(*args, options={**opts, "driver": "rocksdict"}, **kwargs)
        self.rocksdb_options = BoundedOptions(memory_mb * 1024 * 1024, **opts)

    async def stop(self) -> None:
        for partition, db in list(self._dbs.items()):
            try:
                db.flush()
            except Exception as exc:  # noqa: BLE001 - a flush is a shortcut for the next start, never needed
                log.warning("table partition %d not flushed at stop (%s): the next start replays its log",
                            partition, exc)
        await super().stop()


def register() -> None:
    """`magqb-rocksdb:<table>` names this store to faust (its store registry is keyed by URL scheme)."""
    stores.STORES.aliases.setdefault(SCHEME, f"{__name__}:Store")
