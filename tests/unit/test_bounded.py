"""Issue 22 (bounded state), first part: what a worker remembers per key stays bounded however long it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app import redact
from app.domain.bounded import KeyedLocks, Lru


def test_the_cache_keeps_the_most_recently_used() -> None:
    cache: Lru[str, int] = Lru(3)
    for n, key in enumerate("abc"):
        cache[key] = n
    assert cache.get("a") == 0  # used: the newest now
    cache["d"] = 3
    assert "b" not in cache and [k for k in "acd" if k in cache] == ["a", "c", "d"] and len(cache) == 3
    assert cache.pop("c") == 2 and cache.pop("c") is None


async def test_a_lock_exists_only_while_someone_holds_or_waits_for_it() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def use(name: str, key: str) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(0)  # a turn for the others while the lock is held: not a wait
            order.append(f"{name}-")

    await asyncio.gather(use("a", "doc:1"), use("b", "doc:1"), use("c", "doc:2"))
    assert order.index("a-") < order.index("b+")  # one at a time per key ...
    assert order.index("c+") < order.index("a-")  # ... other keys meanwhile
    assert len(locks) == 0  # ... and nothing left behind
    for n in range(10_000):
        async with locks.hold(f"doc:{n}"):
            pass
    assert len(locks) == 0


def test_the_scrubber_keeps_the_settings_secrets_for_ever_and_the_newest_tokens() -> None:
    redact.register_permanent("the-webhook-secret-value")
    for n in range(redact.ROTATING_KEPT + 500):
        redact.register(f"access-token-{n:06d}")
    assert redact.known_count() <= redact.ROTATING_KEPT + 50  # the newest tokens, the settings' secrets
    newest = f"access-token-{redact.ROTATING_KEPT + 499:06d}"
    assert redact.scrub(f"x {newest} the-webhook-secret-value y") == "x [redacted] [redacted] y"


def test_the_orders_table_is_on_disk_under_the_data_dir_unless_memory_is_asked_for(
        settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from app.domain.mapping import MappingConfig
    from app.settings import Settings
    from app.worker_app import create_worker_app

    ctx = create_worker_app(Settings(), MappingConfig())
    store: Any = ctx.order_state.data
    assert type(store).__module__ == "app.adapters.rocks_store"  # not faust quietly falling back to memory
    assert store.partition_path(3) == (Path(settings_env["MAGQB_DATA_DIR"]) / "faust" / Settings().app_id
                                         / "v1/tables/order_state-3.db")
    assert store.rocksdb_options.memory_bytes == 64 * 1024 * 1024
    assert type(ctx.customers.data).__module__ == "faust.stores.memory"  # a row per customer, not per order
    monkeypatch.setenv("MAGQB_TABLE_STORE", "memory")
    fresh = Path(settings_env["MAGQB_DATA_DIR"]).with_name("fresh")
    monkeypatch.setenv("MAGQB_DATA_DIR", str(fresh))
    memory = create_worker_app(Settings(), MappingConfig())
    assert type(memory.order_state.data).__module__ == "faust.stores.memory"
    memory.app._create_directories()  # faust makes only the last directory of its datadir: ours made the rest
    assert (fresh / "faust" / Settings().app_id / "v1" / "tables").is_dir()
