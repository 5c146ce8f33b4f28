"""Who may see and do what in the console: sessions, CSRF tokens, login throttling.

Sessions are cookies encrypted and signed with Fernet (aiohttp-session's EncryptedCookieStorage): HttpOnly,
SameSite=Lax (Intuit's redirect back after consent is a top-level GET from its site), Secure when
MAGQB_CONSOLE_SECURE_COOKIES says the console is behind TLS. The key is MAGQB_CONSOLE_SECRET, or one made
once and kept in MAGQB_DATA_DIR (0600), so a restart keeps sessions.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

from app.private_files import private_dir

SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"
LOGIN_FAILURES_ALLOWED = 5  # per name and per address, in LOGIN_WINDOW_SECONDS
LOGIN_WINDOW_SECONDS = 300.0


def session_key(configured: str, data_dir: Path) -> bytes:
    """32 bytes for Fernet: MAGQB_CONSOLE_SECRET (any text, stretched), else a random key kept in the data dir."""
    if configured.strip():
        import hashlib

        return hashlib.sha256(configured.encode()).digest()
    path = private_dir(data_dir) / "console-session.key"
    if path.exists():
        key = base64.urlsafe_b64decode(path.read_bytes().strip())
        if len(key) == 32:
            return key
    key = os.urandom(32)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.urlsafe_b64encode(key))
    return key


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class LoginThrottle:
    """Failed logins counted per user name and per client address; past the allowance both wait out the
    window. Bounded: the oldest keys go first."""

    def __init__(self, allowed: int = LOGIN_FAILURES_ALLOWED, window: float = LOGIN_WINDOW_SECONDS,
                 capacity: int = 10_000) -> None:
        self.allowed, self.window, self.capacity = allowed, window, capacity
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now - t < self.window]
        if times:
            self._failures[key] = times
            self._failures.move_to_end(key)
        else:
            self._failures.pop(key, None)
        return times

    def blocked_for(self, name: str, address: str, now: float | None = None) -> float:
        """Seconds until a login for `name` from `address` is considered again; 0 when it may be tried now."""
        now = time.monotonic() if now is None else now
        waits = [self.window - (now - times[0]) for key in (f"u:{name.lower()}", f"a:{address}")
                 if len(times := self._recent(key, now)) >= self.allowed]
        return max(waits, default=0.0)

    def failed(self, name: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in (f"u:{name.lower()}", f"a:{address}"):
            self._failures.setdefault(key, []).append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def succeeded(self, name: str, address: str) -> None:
        """The attempt counted before the check was good: the name starts afresh, the address gets it back."""
        self._failures.pop(f"u:{name.lower()}", None)
        times = self._failures.get(f"a:{address}")
        if times:
            times.pop()
