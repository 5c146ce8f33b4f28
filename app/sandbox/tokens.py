"""The sandbox's OAuth2 authority: rotating refresh tokens and expiring access tokens, as Intuit's."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RefreshToken:
    issued_at: float
    superseded_at: float | None = None


@dataclass
class TokenAuthority:
    initial_refresh_token: str
    token_ttl: int = 3600
    # Intuit: "Your previous refresh tokens expire 24 hours after you receive a new one."
    refresh_token_grace: int = 24 * 3600
    refresh_token_ttl: int = 8726400
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (wall clock)

    def __post_init__(self) -> None:
        self.refresh_tokens.setdefault(self.initial_refresh_token, RefreshToken(issued_at=time.time()))

    def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        now = time.time()
        entry = self.refresh_tokens.get(refresh_token)
        if entry is None:
            return None
        if entry.superseded_at is not None and now - entry.superseded_at > self.refresh_token_grace:
            return None
        if now - entry.issued_at > self.refresh_token_ttl:
            return None
        # Rotate: the newest token is the one to use; every older one keeps working for the grace period.
        for other in self.refresh_tokens.values():
            if other.superseded_at is None:
                other.superseded_at = now
        new_rt = "RT1-" + secrets.token_urlsafe(24)
        self.refresh_tokens[new_rt] = RefreshToken(issued_at=now)
        access = "eyJ" + secrets.token_urlsafe(48)
        self.access_tokens[access] = now + self.token_ttl
        self._forget_expired(now)
        return {
            "access_token": access,
            "refresh_token": new_rt,
            "token_type": "bearer",
            "expires_in": self.token_ttl,
            "x_refresh_token_expires_in": self.refresh_token_ttl,
        }

    def _forget_expired(self, now: float) -> None:
        if len(self.access_tokens) > 1000:
            self.access_tokens = {t: exp for t, exp in self.access_tokens.items() if exp > now}

    def expire_access_tokens(self) -> None:
        """Operator/test hook: every access token issued so far is now expired."""
        for token in self.access_tokens:
            self.access_tokens[token] = 0.0

    def check(self, header: str | None) -> str | None:
        """None when the bearer token is valid, else the 401 detail QBO gives."""
        if not header or not header.startswith("Bearer "):
            return "Malformed bearer token: too short or too long"
        token = header[len("Bearer ") :].strip()
        expiry = self.access_tokens.get(token)
        if expiry is None:
            return f"Token invalid: {token[:10]}"
        if time.time() >= expiry:
            return f"Token expired: {token[:40]}"
        return None

    def dump(self) -> dict[str, Any]:
        return {
            "refresh_tokens": {t: [e.issued_at, e.superseded_at] for t, e in self.refresh_tokens.items()},
            "access_tokens": self.access_tokens,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.refresh_tokens = {
            t: RefreshToken(float(v[0]), None if v[1] is None else float(v[1]))
            for t, v in data.get("refresh_tokens", {}).items()
        }
        self.refresh_tokens.setdefault(self.initial_refresh_token, RefreshToken(issued_at=time.time()))
        self.access_tokens = {t: float(v) for t, v in data.get("access_tokens", {}).items()}
