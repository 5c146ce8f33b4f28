"""Optional persistence of a sandbox company (`magqb sandbox --db PATH`), with aiosqlite.

Writes are behind: the request path only marks what changed; a background task
flushes every `interval` seconds and once more at shutdown, so persistence does
not slow the sandbox down. A restart loads the company, its tokens and its
requestid answers as they were at the last flush.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import aiosqlite

from app import jsonutil

log = logging.getLogger("magqb.sandbox")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entities (entity TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, "
    "PRIMARY KEY (entity, id))",
    "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, status INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class SandboxStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # it holds the company's tokens: private from the first write
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        for ddl in _SCHEMA:
            await self._db.execute(ddl)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def load(self) -> dict[str, Any] | None:
        assert self._db is not None
        async with self._db.execute("SELECT key, value FROM meta") as cur:
            meta = {k: jsonutil.loads_decimal(v) for k, v in await cur.fetchall()}
        if not meta:
            return None
        entities: dict[str, dict[str, Any]] = {}
        async with self._db.execute("SELECT entity, id, body FROM entities") as cur:
            for entity, id_, body in await cur.fetchall():
                entities.setdefault(entity, {})[id_] = jsonutil.loads_decimal(body)
        async with self._db.execute("SELECT key, status, body FROM idempotency") as cur:
            idem = {k: (status, bytes(body)) for k, status, body in await cur.fetchall()}
        return {"meta": meta, "entities": entities, "idempotency": idem}

    async def save(
        self,
        entities: list[tuple[str, str, dict[str, Any]]],
        idempotency: list[tuple[str, int, bytes]],
        meta: dict[str, Any],
    ) -> None:
        assert self._db is not None
        await self._db.executemany(
            "INSERT OR REPLACE INTO entities (entity, id, body) VALUES (?, ?, ?)",
            [(e, i, jsonutil.dumps(b).decode()) for e, i, b in entities],
        )
        await self._db.executemany(
            "INSERT OR REPLACE INTO idempotency (key, status, body) VALUES (?, ?, ?)", idempotency
        )
        await self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(k, jsonutil.dumps(v).decode()) for k, v in meta.items()],
        )
        await self._db.commit()

    async def delete(self, entities: list[tuple[str, str]]) -> None:
        assert self._db is not None
        if entities:
            await self._db.executemany("DELETE FROM entities WHERE entity = ? AND id = ?", entities)
            await self._db.commit()

    async def wipe(self) -> None:
        assert self._db is not None
        for table in ("entities", "idempotency", "meta"):
            await self._db.execute(f"DELETE FROM {table}")  # fixed table names
        await self._db.commit()


async def flush_forever(flush: Any, interval: float = 0.25) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await flush()
        except Exception:  # a failed flush is retried at the next tick
            log.exception("sandbox: persisting the company failed; retrying")
