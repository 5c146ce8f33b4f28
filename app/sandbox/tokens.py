"""The sandbox's OAuth2 authority: rotating refresh tokens and expiring access tokens, as Intuit's."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

# Intuit: every refresh token's lineage ends 5 years after consent, however often it rotates.
HARD_TTL = 5 * 365 * 24 * 3600
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"


@dataclass
class RefreshToken:
    issued_at: float
    superseded_at: float | None = None
    hard_expires_at: float | None = None


@dataclass
class AuthCode:
    redirect_uri: str
    expires_at: float


@dataclass
class TokenAuthority:
    initial_refresh_token: str
    token_ttl: int = 3600
    # Intuit: "Your previous refresh tokens expire 24 hours after you receive a new one."
    refresh_token_grace: int = 24 * 3600
    refresh_token_ttl: int = 8726400
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (wall clock)
    hard_ttl: int = HARD_TTL
    codes: dict[str, AuthCode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = time.time()
        self.refresh_tokens.setdefault(self.initial_refresh_token, RefreshToken(issued_at=now,
                                                                                hard_expires_at=now + self.hard_ttl))

    def refresh(self, refresh_token: str, include_hard_expiry: bool = False) -> dict[str, Any] | None:
        now = time.time()
        entry = self.refresh_tokens.get(refresh_token)
        if entry is None:
            return None
        if entry.superseded_at is not None and now - entry.superseded_at > self.refresh_token_grace:
            return None
        if now - entry.issued_at > self.refresh_token_ttl:
            return None
        hard = entry.hard_expires_at or (entry.issued_at + self.hard_ttl)
        if now >= hard:
            return None
        # Rotate: the newest token is the one to use; every older one keeps working for the grace period.
        for other in self.refresh_tokens.values():
            if other.superseded_at is None:
                other.superseded_at = now
        return self._issue(now, hard, include_hard_expiry)

    def _issue(self, now: float, hard: float, include_hard_expiry: bool) -> dict[str, Any]:
        new_rt = "RT1-" + secrets.token_urlsafe(24)
        self.refresh_tokens[new_rt] = RefreshToken(issued_at=now, hard_expires_at=hard)
        access = "eyJ" + secrets.token_urlsafe(48)
        self.access_tokens[access] = now + self.token_ttl
        self._forget_expired(now)
        answer: dict[str, Any] = {
            "access_token": access,
            "refresh_token": new_rt,
            "token_type": "bearer",
            "expires_in": self.token_ttl,
            # the rolling expiry never outlives the hard one
            "x_refresh_token_expires_in": int(min(self.refresh_token_ttl, hard - now)),
        }
        if include_hard_expiry:  # Intuit sends it when asked (x-include-refresh-token-hard-expires-in: true)
            answer["x_refresh_token_hard_expires_in"] = int(hard - now)
        return answer

    def authorize(self, redirect_uri: str) -> str:
        """The user consented (at once, here): a one-time code for the redirect URI, valid 5 minutes."""
        code = "AB1-" + secrets.token_urlsafe(24)
        self.codes[code] = AuthCode(redirect_uri, time.time() + 300)
        return code

    def exchange(self, code: str, redirect_uri: str, include_hard_expiry: bool = False) -> dict[str, Any] | None:
        """The authorization code for the first tokens of a new lineage (None: unknown, used, expired or
        another redirect URI — Intuit's invalid_grant)."""
        now = time.time()
        entry = self.codes.pop(code, None)
        if entry is None or entry.expires_at < now or entry.redirect_uri != redirect_uri:
            return None
        return self._issue(now, now + self.hard_ttl, include_hard_expiry)

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
            "refresh_tokens": {t: [e.issued_at, e.superseded_at, e.hard_expires_at]
                               for t, e in self.refresh_tokens.items()},
            "access_tokens": self.access_tokens,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.refresh_tokens = {
            t: RefreshToken(float(v[0]), None if v[1] is None else float(v[1]),
                            float(v[2]) if len(v) > 2 and v[2] is not None else None)
            for t, v in data.get("refresh_tokens", {}).items()
        }
        now = time.time()
        self.refresh_tokens.setdefault(self.initial_refresh_token, RefreshToken(issued_at=now,
                                                                                hard_expires_at=now + self.hard_ttl))
        self.access_tokens = {t: float(v) for t, v in data.get("access_tokens", {}).items()}
