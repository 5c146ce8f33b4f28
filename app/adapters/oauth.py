"""QBO OAuth2: access tokens from the rotating refresh token, one refresh at a time per realm."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from pydantic import SecretStr

from app import metrics, redact
from app.adapters.token_store import TokenStore
from app.domain.faults import parse_fault

log = logging.getLogger("magqb.oauth")

# Refresh a little before QBO's expiry, as Intuit's own client does (60 s latency allowance).
EXPIRY_MARGIN_SECONDS = 60
# Intuit asks customers to reconnect 30 days before the hard expiry; we warn from 14 days.
EXPIRY_WARNING_DAYS = 14
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"
NO_TOKEN_HINT = "run `magqb connect` (or `magqb token set`) to give it one"


def expiries(data: dict[str, object], now: datetime) -> tuple[datetime | None, datetime | None]:
    """(rolling expiry, hard expiry) of the refresh token in a token answer; None where not given."""
    def at(key: str) -> datetime | None:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return None
        return now + timedelta(seconds=float(value))

    return at("x_refresh_token_expires_in"), at("x_refresh_token_hard_expires_in")


class TokenRefreshError(Exception):
    """The token endpoint refused (invalid_grant: the refresh token is unknown or expired)."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class TokenManager:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        realm_id: str,
        store: TokenStore,
        initial_refresh_token: SecretStr,
        refused_recheck_seconds: float = 30.0,
    ) -> None:
        self._session = session
        self._token_url = token_url
        self._auth = aiohttp.BasicAuth(client_id, client_secret.get_secret_value())
        redact.register(client_secret.get_secret_value(), initial_refresh_token.get_secret_value())
        self._realm_id = realm_id
        self._store = store
        self._initial = initial_refresh_token
        self._access: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0
        # A refresh token QBO refused (invalid_grant) is not offered again for this long: while a
        # realm is blocked every waiting command asks, and one probe per period is enough.
        self._refused_recheck = refused_recheck_seconds
        self._refused: tuple[str, float, TokenRefreshError] | None = None
        self._expiry_published = False
        for outcome in ("ok", "refused", "unreachable"):  # at 0 from the start: the first refusal is an increase
            metrics.TOKEN_REFRESHES.labels(realm=realm_id, outcome=outcome)

    async def access_token(self) -> str:
        if self._access and time.monotonic() < self._expires_at:
            if not self._expiry_published:
                await self._warn_if_expiring()
            return self._access
        return await self.refresh(stale=self._access)

    def forget_expiry(self) -> None:
        """The realm moved to another worker: its expiry gauge is theirs (published again here on use)."""
        self._expiry_published = False

    async def refresh(self, stale: str | None) -> str:
        """Get a new access token unless another task already replaced `stale`."""
        async with self._lock:
            if self._access and self._access != stale and time.monotonic() < self._expires_at:
                return self._access
            # The store wins over the environment: the env token is only the very first one.
            refresh_token = await self._store.get(self._realm_id)
            if refresh_token is None:
                refresh_token = self._initial.get_secret_value()
            if not refresh_token:
                raise TokenRefreshError(f"no refresh token for realm {self._realm_id}: {NO_TOKEN_HINT}", True)
            redact.register(refresh_token)
            if self._refused is not None:
                token, until, error = self._refused
                if token == refresh_token and time.monotonic() < until:
                    raise error
            try:
                async with self._session.post(
                    self._token_url,
                    data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                    auth=self._auth,
                    headers={"Accept": "application/json", HARD_EXPIRY_HEADER: "true"},
                ) as resp:
                    body = await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                metrics.TOKEN_REFRESHES.labels(realm=self._realm_id, outcome="unreachable").inc()
                raise TokenRefreshError(f"token endpoint unreachable: {exc.__class__.__name__}", False) from None
            if status != 200:
                fault = parse_fault(status, body)
                permanent = fault.code in ("invalid_grant", "invalid_client")
                error = TokenRefreshError(
                    f"token refresh for realm {self._realm_id} refused: HTTP {status} {fault.code or ''} "
                    f"{fault.detail}".strip(),
                    permanent,
                )
                if permanent:
                    self._refused = (refresh_token, time.monotonic() + self._refused_recheck, error)
                metrics.TOKEN_REFRESHES.labels(realm=self._realm_id,
                                               outcome="refused" if permanent else "unreachable").inc()
                raise error
            self._refused = None
            metrics.TOKEN_REFRESHES.labels(realm=self._realm_id, outcome="ok").inc()
            data = json.loads(body)
            redact.register(str(data.get("access_token") or ""), str(data.get("refresh_token") or ""))
            new_rt = data.get("refresh_token")
            rolling, hard = expiries(data, datetime.now(UTC))
            if not await self._store.replace(self._realm_id, refresh_token, str(new_rt or refresh_token), rolling, hard):
                log.warning("realm=%s a newer refresh token was stored while this one was refreshed (magqb connect, "
                            "token set, or another process): keeping the newer one", self._realm_id)
            await self._warn_if_expiring()
            self._access = str(data["access_token"])
            ttl = float(data.get("expires_in", 3600))
            self._expires_at = time.monotonic() + ttl - min(EXPIRY_MARGIN_SECONDS, ttl / 10)
            self.refreshes += 1
            log.info("realm=%s access token refreshed (expires in %ss)", self._realm_id, data.get("expires_in"))
            return self._access

    async def _warn_if_expiring(self) -> None:
        self._expiry_published = True
        info = await self._store.info(self._realm_id)
        expiry = info.earliest_expiry() if info else None
        if expiry is None:
            return
        left = (expiry - datetime.now(UTC)).total_seconds()
        metrics.REFRESH_TOKEN_EXPIRY.labels(realm=self._realm_id).set(max(0.0, left))
        if left < EXPIRY_WARNING_DAYS * 86400:
            log.warning("realm=%s the QuickBooks refresh token expires on %s (in %.1f days): reconnect with "
                        "`magqb connect` before then, or every order waits", self._realm_id,
                        expiry.strftime("%Y-%m-%d %H:%M UTC"), max(0.0, left) / 86400)
