"""QBO OAuth2: access tokens from the rotating refresh token, one refresh at a time per realm."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from app import metrics, redact
from app.adapters.token_store import RefreshTokenStore
from app.adapters.token_topic import TokenKeyError
from app.domain.faults import parse_fault

log = logging.getLogger("magqb.oauth")

# Refresh a little before QBO's expiry, as Intuit's own client does (60 s latency allowance).
EXPIRY_MARGIN_SECONDS = 60
# Intuit asks customers to reconnect 30 days before the hard expiry; we warn from 14 days.
EXPIRY_WARNING_DAYS = 14
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"
NO_TOKEN_HINT = "run `magqb connect` (or `magqb token set`) to give it one"
# A token endpoint (or token store) that fails without refusing the token is asked again after this
# long, doubling up to TRANSIENT_MAX_SECONDS: every waiting command asks, one call per period is enough.
TRANSIENT_FIRST_SECONDS = 2.0
TRANSIENT_MAX_SECONDS = 60.0
# The file, or the topic on Kafka, failing: asked again (TimeoutError is an OSError).
STORE_ERRORS = (sqlite3.Error, OSError, KafkaError)
SAVE_RETRY_SECONDS = 5.0


def expiries(data: dict[str, object], now: datetime) -> tuple[datetime | None, datetime | None]:
    """(rolling expiry, hard expiry) of the refresh token in a token answer; None where not given."""
    def at(key: str) -> datetime | None:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return None
        return now + timedelta(seconds=float(value))

    return at("x_refresh_token_expires_in"), at("x_refresh_token_hard_expires_in")


class TokenRefreshError(Exception):
    """No access token. `permanent`: the token endpoint refused the refresh token (invalid_grant: unknown,
    expired, revoked) and only an operator can help; else it failed without saying anything about the
    token (unreachable, a 5xx, an answer that is not a token, the token store unreadable): asked again."""

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
        store: RefreshTokenStore,
        initial_refresh_token: SecretStr,
        refused_recheck_seconds: float = 30.0,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._before_send = before_send  # the worker's ownership fence, before each call to the token endpoint
        self._session = session
        self._token_url = token_url
        self._auth = aiohttp.BasicAuth(client_id, client_secret.get_secret_value())
        redact.register_permanent(client_secret.get_secret_value())
        redact.register(initial_refresh_token.get_secret_value())
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
        # A transient failure: (not before, the error, the next wait).
        self._failing: tuple[float, TokenRefreshError, float] | None = None
        # A refresh token Intuit issued that the store could not keep yet: used, and written again, until it is.
        self._unsaved: tuple[str, str, datetime | None, datetime | None] | None = None  # (used, newest, expiries)
        self._alerted = False
        self._next_save = 0.0  # while the store fails, written again at most every SAVE_RETRY_SECONDS
        self._expiry_published = False
        metrics.REFRESH_TOKEN_UNSAVED.labels(realm=realm_id).set(0)
        for outcome in ("ok", "refused", "unreachable"):  # at 0 from the start: the first refusal is an increase
            metrics.TOKEN_REFRESHES.labels(realm=realm_id, outcome=outcome)

    async def access_token(self) -> str:
        if self._access and time.monotonic() < self._expires_at:
            if self._unsaved is not None and time.monotonic() >= self._next_save:
                async with self._lock:
                    if self._unsaved is not None:
                        await self._save_unsaved()
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
            if self._failing is not None and time.monotonic() < self._failing[0]:
                raise self._failing[1]
            try:
                token = await self._refresh()
            except TokenRefreshError as exc:
                if not exc.permanent:
                    wait = self._failing[2] if self._failing is not None else TRANSIENT_FIRST_SECONDS
                    self._failing = (time.monotonic() + wait, exc, min(wait * 2, TRANSIENT_MAX_SECONDS))
                raise
            self._failing = None
            return token

    async def _current_refresh_token(self) -> str:
        """The token to refresh with: one Intuit issued that is not stored yet, else the store's (which wins over
        the environment: the env token is only the very first one)."""
        if self._unsaved is not None:
            await self._save_unsaved()
            if self._unsaved is not None:
                return self._unsaved[1]
        try:
            refresh_token = await self._store.get(self._realm_id)
        except STORE_ERRORS as exc:
            raise TokenRefreshError(f"the token store of realm {self._realm_id} cannot be read "
                                    f"({exc.__class__.__name__}: {exc}); trying again", False) from None
        except TokenKeyError as exc:
            raise TokenRefreshError(str(exc), True) from None
        if refresh_token is None:
            refresh_token = self._initial.get_secret_value()
        if not refresh_token:
            raise TokenRefreshError(f"no refresh token for realm {self._realm_id}: {NO_TOKEN_HINT}", True)
        return refresh_token

    async def _refresh(self) -> str:
        refresh_token = await self._current_refresh_token()
        redact.register(refresh_token)
        if self._refused is not None:
            token, until, error = self._refused
            if token == refresh_token and time.monotonic() < until:
                raise error
        if self._before_send is not None:
            await self._before_send()  # a worker that lost the realm must not rotate its token
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
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            metrics.TOKEN_REFRESHES.labels(realm=self._realm_id, outcome="unreachable").inc()
            raise TokenRefreshError(f"token endpoint answered 200 with no token ({len(body)} bytes that are not a "
                                    "JSON object): a proxy or an outage page; trying again", False)
        redact.register(str(data.get("access_token") or ""), str(data.get("refresh_token") or ""))
        new_rt = data.get("refresh_token")
        rolling, hard = expiries(data, datetime.now(UTC))
        if isinstance(new_rt, str) and new_rt:
            # Kept before anything else: Intuit may have retired the old one as it answered.
            await self._keep(refresh_token, new_rt, rolling, hard)
        access = data.get("access_token")
        if not isinstance(access, str) or not access:
            metrics.TOKEN_REFRESHES.labels(realm=self._realm_id, outcome="unreachable").inc()
            raise TokenRefreshError("token endpoint answered 200 without an access_token; trying again", False)
        metrics.TOKEN_REFRESHES.labels(realm=self._realm_id, outcome="ok").inc()
        await self._warn_if_expiring()
        self._access = access
        ttl = float(data.get("expires_in", 3600)) if isinstance(data.get("expires_in"), int | float) else 3600.0
        self._expires_at = time.monotonic() + ttl - min(EXPIRY_MARGIN_SECONDS, ttl / 10)
        self.refreshes += 1
        log.info("realm=%s access token refreshed (expires in %ss)", self._realm_id, data.get("expires_in"))
        return self._access

    async def _keep(self, used: str, newest: str, rolling: datetime | None, hard: datetime | None) -> None:
        """Store the refresh token Intuit just issued; if the store fails, keep it here, alert, and write it
        again at every use until it is stored. The store still holds the token of before the first unsaved
        one: that is what a later write must find and replace (not the unsaved one this refresh used)."""
        stored = self._unsaved[0] if self._unsaved is not None else used
        self._unsaved = (stored, newest, rolling, hard)
        await self._save_unsaved()

    async def _save_unsaved(self) -> None:
        assert self._unsaved is not None
        used, newest, rolling, hard = self._unsaved
        try:
            stored = await self._store.replace(self._realm_id, used, newest, rolling, hard)
        except (*STORE_ERRORS, TokenKeyError) as exc:
            self._next_save = time.monotonic() + SAVE_RETRY_SECONDS
            metrics.REFRESH_TOKEN_UNSAVED.labels(realm=self._realm_id).set(1)
            if self._alerted:
                return
            self._alerted = True
            log.critical("realm=%s the refresh token Intuit just issued could not be stored (%s: %s): it is kept in "
                         "memory and used, and written again at every use. Fix the token store (the magqb.tokens "
                         "topic: Kafka; or MAGQB_DATA_DIR: disk full, permissions, a lock) before this worker stops, "
                         "or reconnect with `magqb connect` after",
                         self._realm_id, exc.__class__.__name__, exc)
            return
        if not stored:
            log.warning("realm=%s a newer refresh token was stored while this one was refreshed (magqb connect, "
                        "token set, or another process): keeping the newer one", self._realm_id)
        elif self._alerted:
            log.warning("realm=%s the refresh token kept in memory is stored now", self._realm_id)
        self._unsaved, self._alerted = None, False
        metrics.REFRESH_TOKEN_UNSAVED.labels(realm=self._realm_id).set(0)

    async def _warn_if_expiring(self) -> None:
        self._expiry_published = True
        try:
            info = await self._store.info(self._realm_id)
        except (*STORE_ERRORS, TokenKeyError):
            self._expiry_published = False  # told at the next use (the store's trouble is said elsewhere)
            return
        expiry = info.earliest_expiry() if info else None
        if expiry is None:
            return
        left = (expiry - datetime.now(UTC)).total_seconds()
        metrics.REFRESH_TOKEN_EXPIRY.labels(realm=self._realm_id).set(max(0.0, left))
        if left < EXPIRY_WARNING_DAYS * 86400:
            log.warning("realm=%s the QuickBooks refresh token expires on %s (in %.1f days): reconnect with "
                        "`magqb connect` before then, or every order waits", self._realm_id,
                        expiry.strftime("%Y-%m-%d %H:%M UTC"), max(0.0, left) / 86400)
