"""The console's users: a name, an argon2id hash of the password, a role. Kept in MAGQB_DATA_DIR (0600)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.private_files import private_dir

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 10
_HASHER = PasswordHasher()  # argon2id, the library's (OWASP-reviewed) parameters
_SCHEMA = "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL)"
# Verified against when the name is unknown, so a wrong name costs the same time as a wrong password.
_DUMMY = _HASHER.hash("not a password anyone has")


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    role: Role

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
        private_dir(self.path.parent)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        db = await aiosqlite.connect(self.path)
        await db.execute(_SCHEMA)
        return db

    async def add(self, name: str, password: str, role: str) -> bool:
        """Create the user, or give an existing one a new password and role. True when created."""
        check_new(name, password, role)
        db = await self._connect()
        try:
            cur = await db.execute("SELECT 1 FROM users WHERE name = ?", (name,))
            existed = await cur.fetchone() is not None
            await db.execute("INSERT INTO users (name, hash, role) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                             "hash = excluded.hash, role = excluded.role", (name, _HASHER.hash(password), role))
            await db.commit()
            return not existed
        finally:
            await db.close()

    async def verify(self, name: str, password: str) -> User | None:
        db = await self._connect()
        try:
            cur = await db.execute("SELECT hash, role FROM users WHERE name = ?", (name,))
            row = await cur.fetchone()
        finally:
            await db.close()
        ok: bool
        try:
            ok = _HASHER.verify(row[0] if row else _DUMMY, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or row is None or row[1] not in ROLES:
            return None
        return User(name, row[1])

    async def get(self, name: str) -> User | None:
        db = await self._connect()
        try:
            cur = await db.execute("SELECT role FROM users WHERE name = ?", (name,))
            row = await cur.fetchone()
        finally:
            await db.close()
        return User(name, row[0]) if row and row[0] in ROLES else None

    async def count(self) -> int:
        db = await self._connect()
        try:
            cur = await db.execute("SELECT COUNT(*) FROM users")
            row = await cur.fetchone()
        finally:
            await db.close()
        return int(row[0]) if row else 0
