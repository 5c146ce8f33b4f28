"""Magento's REST API, read-only: search pages (`GET /V1/orders`, `/V1/creditmemos`, `/V1/invoices`) and
one order by id, with backoff.

Every call is authenticated by a MagentoAuth (OAuth 1.0a signed, or a Bearer token: see
magento_auth.py). The query string is encoded here, once, and sent as encoded: the URL signed is
the URL on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from app import jsonutil, redact
from app.adapters.magento_auth import MagentoAuth
from app.domain.order_search import OrderSearch, SearchPage, SearchResponseError, parse_page, search_criteria

log = logging.getLogger("magqb.magento")

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
CLOCK_SKEW_WARN_SECONDS = 300  # Magento refuses an OAuth timestamp more than 600 s away


class MagentoApiError(Exception):
    """Magento refused for good (auth, a body that is not what was asked for) or stayed down."""


class NotFoundUnclear(MagentoApiError):
    """A 404 that does not say Magento has no such entity: maybe a wrong route."""


class MagentoClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, auth: MagentoAuth,
                 max_attempts: int = 8, backoff_seconds: float = 1.0, max_backoff_seconds: float = 60.0,
                 sleep: Callable[[float], object] | None = None) -> None:
        if not base_url.strip():
            raise MagentoApiError("MAGENTO_BASE_URL is not set (the store's REST base, e.g. "
                                  "https://shop.example.com/rest/V1)")
        self._session = session
        self._base = base_url.strip().rstrip("/")
        self._auth = auth
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._sleep = sleep or asyncio.sleep
        self.requests = 0
        self.retries = 0

    @property
    def base_url(self) -> str:
        return self._base

    async def orders_page(self, search: OrderSearch, after_id: int = 0) -> SearchPage:
        """The import's page after `after_id`."""
        return await self.search("orders", search.params(after_id), f"after entity_id {after_id}")

    async def search(self, resource: str, params: Sequence[tuple[str, str]], what: str = "") -> SearchPage:
        """One page of `GET /V1/<resource>?searchCriteria…` (orders, creditmemos, invoices)."""
        body = await self._get(resource, params, what or resource)
        if body is None:
            raise MagentoApiError(f"GET {self._base}/{resource}: HTTP 404 (is MAGENTO_BASE_URL the store's /rest/V1?)")
        if not isinstance(body, dict):
            raise MagentoApiError(f"{what or resource} of {self._base}/{resource} is not a Magento search result")
        try:
            return parse_page(body)
        except SearchResponseError as exc:
            raise MagentoApiError(f"{what or resource} of {self._base}/{resource} is not a Magento search result: "
                                  f"{exc}") from None

    async def order(self, entity_id: int) -> dict[str, Any] | None:
        """`GET /V1/orders/{id}`: the order as Magento has it now, or None when Magento does not know it."""
        try:
            body = await self._get(f"orders/{int(entity_id)}", (), f"order {entity_id}")
        except NotFoundUnclear:
            # A 404 whose words are not Magento's English "doesn't exist" (a translated store, or a wrong base
            # URL): one search tells them apart — it answers only where the REST base is right.
            await self.search("orders", search_criteria([], [], 1), "a check of MAGENTO_BASE_URL")
            return None
        if body is not None and not isinstance(body, dict):
            raise MagentoApiError(f"GET {self._base}/orders/{entity_id} is not an order")
        return body

    def url(self, path: str, params: Sequence[tuple[str, str]]) -> str:
        """The URL as sent and as signed: RFC 3986 percent-encoding (`[` → %5B), space as %20."""
        query = urlencode(list(params), quote_via=quote, safe="")
        return f"{self._base}/{path}" + (f"?{query}" if query else "")

    async def _get(self, path: str, params: Sequence[tuple[str, str]], what: str) -> Any | None:
        """The JSON answer; None for 404. 429, 5xx and dropped connections are retried with backoff
        (Retry-After honoured)."""
        url = self.url(path, params)
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            headers = {"Accept": "application/json", **self._auth.headers("GET", url)}
            server_date = None
            try:
                async with self._session.get(URL(url, encoded=True), headers=headers) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    server_date = resp.headers.get("Date")
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, body, retry_after = 0, str(exc.__class__.__name__).encode(), None
            if status == 200:
                try:
                    return jsonutil.loads(body)
                except ValueError:
                    raise MagentoApiError(f"{what}: {self._base}/{path} answered something that is not JSON") from None
            if status == 404:
                if _not_found(body):
                    return None  # Magento: "The entity that was requested doesn't exist"
                raise NotFoundUnclear(f"GET {self._base}/{path} ({what}): HTTP 404: is MAGENTO_BASE_URL the store's "
                                      "REST base (https://shop.example.com/rest/V1)?")
            if status in (401, 403):
                raise MagentoApiError(self._auth.refused(status) + _skew_note(server_date))
            if status and status not in RETRIED_STATUSES:
                raise MagentoApiError(f"GET {self._base}/{path} ({what}): HTTP {status}: "
                                      f"{redact.scrub(body[:300].decode(errors='replace'))}")
            if attempt >= self._max_attempts:
                raise MagentoApiError(f"GET {self._base}/{path} ({what}): still failing after {attempt} attempts "
                                      f"({'HTTP ' + str(status) if status else body.decode()})")
            delay = self._delay(attempt, retry_after)
            self.retries += 1
            log.warning("Magento %s (%s); retrying in %.1fs (attempt %d/%d)",
                        f"answered HTTP {status}" if status else f"unreachable ({body.decode()})", what, delay,
                        attempt, self._max_attempts)
            await self._sleep(delay)  # type: ignore[misc]

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self._max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(self._max_backoff, self._backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _not_found(body: bytes) -> bool:
    """Magento's answer for an entity it does not have (not a wrong route, which is 404 too)."""
    try:
        message = str(jsonutil.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        return False
    return "doesn't exist" in message or "does not exist" in message or "no such entity" in message.lower()


def _skew_note(server_date: str | None) -> str:
    """Magento's Date header against this host's clock: an OAuth timestamp too far off is refused."""
    if not server_date:
        return ""
    try:
        skew = time.time() - parsedate_to_datetime(server_date).timestamp()
    except (TypeError, ValueError):
        return ""
    if abs(skew) < CLOCK_SKEW_WARN_SECONDS:
        return ""
    # The Date header has whole seconds: minutes are what can be told.
    return (f"; this host's clock is about {abs(skew) / 60:.0f} min {'ahead of' if skew > 0 else 'behind'} Magento's: "
            "fix it (NTP)")


class MagentoConnection:
    """A MagentoClient made on first use, for services that need REST now and then (the ingress's
    notify-then-fetch sources, the follower); None when REST is not configured. `close()` at exit."""

    def __init__(self, base_url: str, auth: Callable[[], MagentoAuth], configured: bool, total_timeout: float = 30.0,
                 max_attempts: int = 8) -> None:
        self._base_url = base_url
        self._auth = auth
        self._configured = configured
        self._timeout = total_timeout
        self._max_attempts = max_attempts
        self._session: aiohttp.ClientSession | None = None
        self._client: MagentoClient | None = None

    def __call__(self) -> MagentoClient | None:
        if not self._configured:
            return None
        if self._client is None:
            auth = self._auth()  # first: incomplete credentials raise before a session is opened
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout,
                                                                                sock_connect=min(10.0, self._timeout)))
            self._client = MagentoClient(self._session, self._base_url, auth, max_attempts=self._max_attempts,
                                         backoff_seconds=0.5, max_backoff_seconds=2.0)
        return self._client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session, self._client = None, None
