"""Persisted QBO refresh tokens, one per realm (aiosqlite under MAGQB_DATA_DIR).

QBO rotates refresh tokens: the newest one must survive a crash, so it is
written (and committed) before the access token that came with it is used.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from app.private_files import private_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refresh_tokens (
    realm_id TEXT PRIMARY KEY,
    refresh_token TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def _connect(self) -> aiosqlite.Connection:
        private_dir(self.path.parent)
        if not self.path.exists():
            # Created 0600 before SQLite writes a byte (its -wal and -shm files take the same mode).
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        db = await aiosqlite.connect(self.path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(_SCHEMA)
        return db

    async def get(self, realm_id: str) -> str | None:
        db = await self._connect()
        try:
            async with db.execute("SELECT refresh_token FROM refresh_tokens WHERE realm_id = ?", (realm_id,)) as cur:
                row = await cur.fetchone()
            return str(row[0]) if row else None
        finally:
            await db.close()

    async def put(self, realm_id: str, refresh_token: str) -> None:
        db = await self._connect()
        try:
            await db.execute(
                "INSERT INTO refresh_tokens (realm_id, refresh_token, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(realm_id) DO UPDATE SET refresh_token = excluded.refresh_token, "
                "updated_at = excluded.updated_at",
                (realm_id, refresh_token, datetime.now(UTC).isoformat()),
            )
            await db.commit()
        finally:
            await db.close()
