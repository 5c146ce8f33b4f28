"""The console's users: a name, an argon2id hash of the password, a role. Kept in MAGQB_DATA_DIR (0600)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.private_files import private_file

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 10
_HASHER = PasswordHasher()  # argon2id, the library's (OWASP-reviewed) parameters
_SCHEMA = ("CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, "
           "epoch INTEGER NOT NULL DEFAULT 0)")
# argon2 is meant to be slow: a few at a time, in threads, so a burst of logins never stalls the pages.
_VERIFYING = asyncio.Semaphore(2)
# Verified against when the name is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY = _HASHER.hash("not a password anyone has")


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    epoch: int = 0  # a session made under another epoch is over (logged out, password changed)

    @property
    def may_act(self) -> bool:
        """Retry, purge, fix, connect: operators only."""
        return self.role == "operator"


def check_new(name: str, password: str, role: str) -> None:
    if not NAME.match(name):
        raise UserError("a user name is 1-64 letters, digits and . _ @ -")
    if role not in ROLES:
        raise UserError(f"the role is one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password needs at least {MIN_PASSWORD} characters")


class UserStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(private_file(self.path))
        await db.execute(_SCHEMA)
        async with db.execute("PRAGMA table_info(users)") as cur:
            if "epoch" not in {row[1] for row in await cur.fetchall()}:  # a file from before epochs
                await db.execute("ALTER TABLE users ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
        return db

    async def add(self, name: str, password: str, role: str) -> bool:
        """Create the user, or give an existing one a new password and role. True when created."""
        check_new(name, password, role)
        db = await self._connect()
        try:
            cur = await db.execute("SELECT 1 FROM users WHERE name = ?", (name,))
            existed = await cur.fetchone() is not None
            # A new password or role ends the user's sessions (epoch + 1).
            await db.execute("INSERT INTO users (name, hash, role) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                             "hash = excluded.hash, role = excluded.role, epoch = users.epoch + 1",
                             (name, _HASHER.hash(password), role))
            await db.commit()
            return not existed
        finally:
            await db.close()

    async def verify(self, name: str, password: str) -> User | None:
        db = await self._connect()
        try:
            cur = await db.execute("SELECT hash, role, epoch FROM users WHERE name = ?", (name,))
            row = await cur.fetchone()
        finally:
            await db.close()
        async with _VERIFYING:
            ok = await asyncio.to_thread(_verify, row[0] if row else _DUMMY, password)
        if not ok or row is None or row[1] not in ROLES:
            return None
        return User(name, row[1], int(row[2]))

    async def get(self, name: str) -> User | None:
        db = await self._connect()
        try:
            cur = await db.execute("SELECT role, epoch FROM users WHERE name = ?", (name,))
            row = await cur.fetchone()
        finally:
            await db.close()
        return User(name, row[0], int(row[1])) if row and row[0] in ROLES else None

    async def end_sessions(self, name: str) -> None:
        """Logging out ends every session of the user: a copied cookie is worth nothing after."""
        db = await self._connect()
        try:
            await db.execute("UPDATE users SET epoch = epoch + 1 WHERE name = ?", (name,))
            await db.commit()
        finally:
            await db.close()

    async def count(self) -> int:
        db = await self._connect()
        try:
            cur = await db.execute("SELECT COUNT(*) FROM users")
            row = await cur.fetchone()
        finally:
            await db.close()
        return int(row[0]) if row else 0
