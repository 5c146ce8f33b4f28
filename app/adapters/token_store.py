"""Persisted QBO refresh tokens, one per realm (aiosqlite under MAGQB_DATA_DIR).

QBO rotates refresh tokens: the newest one must survive a crash, so it is
written (and committed) before the access token that came with it is used.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import aiosqlite

from app.private_files import private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refresh_tokens (
    realm_id TEXT PRIMARY KEY,
    refresh_token TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""
# Added later: stores from before them gain the columns on first open.
_COLUMNS = {"expires_at": "TEXT", "hard_expires_at": "TEXT", "connected_at": "TEXT"}


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a stored refresh token: everything but the token."""

    realm_id: str
    updated_at: datetime
    expires_at: datetime | None  # the rolling expiry (x_refresh_token_expires_in, 100 days, renewed on use)
    hard_expires_at: datetime | None  # the lineage's end (x_refresh_token_hard_expires_in, 5 years from consent)
    connected_at: datetime | None  # when `magqb connect` (or `token set`) put it there

    def earliest_expiry(self) -> datetime | None:
        dates = [d for d in (self.expires_at, self.hard_expires_at) if d is not None]
        return min(dates) if dates else None


class RefreshTokenStore(Protocol):
    """Where a realm's refresh token lives: this file (one worker host), or the sealed topic every host reads
    (app.adapters.token_topic, with MAGQB_TOKEN_KEY)."""

    async def get(self, realm_id: str) -> str | None: ...

    async def put(self, realm_id: str, refresh_token: str, expires_at: datetime | None = None,
                  hard_expires_at: datetime | None = None, connected: bool = False) -> None: ...

    async def replace(self, realm_id: str, used: str, newest: str, expires_at: datetime | None = None,
                      hard_expires_at: datetime | None = None) -> bool: ...

    async def info(self, realm_id: str) -> TokenInfo | None: ...

    async def realms(self) -> list[str]: ...


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class TokenStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(private_file(self.path))
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute(_SCHEMA)
        async with db.execute("PRAGMA table_info(refresh_tokens)") as cur:
            have = {row[1] for row in await cur.fetchall()}
        for name, kind in _COLUMNS.items():
            if name not in have:
                try:
                    await db.execute(f"ALTER TABLE refresh_tokens ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it a moment ago
                    if "duplicate column" not in str(exc):
                        raise
        return db

    async def get(self, realm_id: str) -> str | None:
        db = await self._connect()
        try:
            async with db.execute("SELECT refresh_token FROM refresh_tokens WHERE realm_id = ?", (realm_id,)) as cur:
                row = await cur.fetchone()
            return str(row[0]) if row else None
        finally:
            await db.close()

    async def put(self, realm_id: str, refresh_token: str, expires_at: datetime | None = None,
                  hard_expires_at: datetime | None = None, connected: bool = False) -> None:
        """Store the realm's newest refresh token. Expiries left None keep what was stored (a rotation
        without the hard expiry in its answer keeps the lineage's); `connected` starts a new lineage."""
        now = datetime.now(UTC).isoformat()
        db = await self._connect()
        try:
            await db.execute(
                "INSERT INTO refresh_tokens (realm_id, refresh_token, updated_at, expires_at, hard_expires_at, "
                "connected_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(realm_id) DO UPDATE SET refresh_token = excluded.refresh_token, "
                "updated_at = excluded.updated_at, "
                "expires_at = COALESCE(excluded.expires_at, CASE WHEN ? THEN NULL ELSE expires_at END), "
                "hard_expires_at = COALESCE(excluded.hard_expires_at, CASE WHEN ? THEN NULL ELSE hard_expires_at END), "
                "connected_at = COALESCE(excluded.connected_at, connected_at)",
                (realm_id, refresh_token, now, expires_at.isoformat() if expires_at else None,
                 hard_expires_at.isoformat() if hard_expires_at else None, now if connected else None,
                 connected, connected),
            )
            await db.commit()
        finally:
            await db.close()

    async def replace(self, realm_id: str, used: str, newest: str, expires_at: datetime | None = None,
                      hard_expires_at: datetime | None = None) -> bool:
        """Store `newest` (what the token endpoint answered to `used`) only if `used` is still the stored
        token, or none is stored: a refresh that raced `magqb connect`, `token set` or another process's
        refresh never overwrites a newer token. False when it did not store."""
        now = datetime.now(UTC).isoformat()
        db = await self._connect()
        try:
            cur = await db.execute(
                "UPDATE refresh_tokens SET refresh_token = ?, updated_at = ?, expires_at = COALESCE(?, expires_at), "
                "hard_expires_at = COALESCE(?, hard_expires_at) WHERE realm_id = ? AND refresh_token = ?",
                (newest, now, expires_at.isoformat() if expires_at else None,
                 hard_expires_at.isoformat() if hard_expires_at else None, realm_id, used))
            stored = cur.rowcount > 0
            if not stored:
                cur = await db.execute(
                    "INSERT OR IGNORE INTO refresh_tokens (realm_id, refresh_token, updated_at, expires_at, "
                    "hard_expires_at) VALUES (?, ?, ?, ?, ?)",
                    (realm_id, newest, now, expires_at.isoformat() if expires_at else None,
                     hard_expires_at.isoformat() if hard_expires_at else None))
                stored = cur.rowcount > 0
            await db.commit()
            return stored
        finally:
            await db.close()

    async def info(self, realm_id: str) -> TokenInfo | None:
        db = await self._connect()
        try:
            async with db.execute("SELECT updated_at, expires_at, hard_expires_at, connected_at FROM refresh_tokens "
                                  "WHERE realm_id = ?", (realm_id,)) as cur:
                row = await cur.fetchone()
        finally:
            await db.close()
        if row is None:
            return None
        return TokenInfo(realm_id, datetime.fromisoformat(row[0]), _when(row[1]), _when(row[2]), _when(row[3]))

    async def realms(self) -> list[str]:
        db = await self._connect()
        try:
            async with db.execute("SELECT realm_id FROM refresh_tokens ORDER BY realm_id") as cur:
                return [str(r[0]) for r in await cur.fetchall()]
        finally:
            await db.close()
