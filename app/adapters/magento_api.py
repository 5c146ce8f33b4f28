"""Magento's REST API, read-only: one page of `GET /V1/orders` at a time, with backoff.

Authenticated with the integration access token as a Bearer token (`MAGENTO_ACCESS_TOKEN`). Since
Magento 2.4.4 that needs "Allow OAuth Access Tokens to be used as standalone Bearer tokens" in the
store's configuration; a 401 says so.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import aiohttp
from pydantic import SecretStr

from app import jsonutil, redact
from app.domain.order_search import OrderSearch, SearchPage, SearchResponseError, parse_page

log = logging.getLogger("magqb.magento")

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class MagentoApiError(Exception):
    """Magento refused for good (auth, not found, a body that is not a search result)."""


class MagentoClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, access_token: SecretStr,
                 max_attempts: int = 8, backoff_seconds: float = 1.0, max_backoff_seconds: float = 60.0,
                 sleep: Callable[[float], object] | None = None) -> None:
        if not base_url.strip():
            raise MagentoApiError("MAGENTO_BASE_URL is not set (the store's REST base, e.g. "
                                  "https://shop.example.com/rest/V1)")
        if not access_token.get_secret_value().strip():
            raise MagentoApiError("MAGENTO_ACCESS_TOKEN is not set (System > Extensions > Integrations: the "
                                  "integration's access token)")
        redact.register(access_token.get_secret_value())
        self._session = session
        self._url = base_url.rstrip("/") + "/orders"
        self._headers = {"Authorization": f"Bearer {access_token.get_secret_value()}", "Accept": "application/json"}
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._sleep = sleep or asyncio.sleep
        self.requests = 0
        self.retries = 0

    async def orders_page(self, search: OrderSearch, after_id: int = 0) -> SearchPage:
        """The page after `after_id`; 429, 5xx and dropped connections are retried with backoff
        (Retry-After honoured)."""
        page = f"after entity_id {after_id}"
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                async with self._session.get(self._url, params=search.params(after_id), headers=self._headers) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, body, retry_after = 0, str(exc.__class__.__name__).encode(), None
            if status == 200:
                try:
                    return parse_page(jsonutil.loads(body))
                except (ValueError, SearchResponseError) as exc:
                    raise MagentoApiError(f"{page} of {self._url} is not a Magento search result: {exc}") \
                        from None
            if status in (401, 403):
                raise MagentoApiError(
                    f"Magento refused the access token (HTTP {status}): check MAGENTO_ACCESS_TOKEN, the "
                    "integration's access to Sales > Orders, and (Magento >= 2.4.4) that standalone Bearer "
                    "tokens are allowed (Stores > Configuration > Services > OAuth)")
            if status and status not in RETRIED_STATUSES:
                raise MagentoApiError(f"GET {self._url} ({page}): HTTP {status}: "
                                      f"{redact.scrub(body[:300].decode(errors='replace'))}")
            if attempt >= self._max_attempts:
                raise MagentoApiError(f"GET {self._url} ({page}): still failing after {attempt} attempts "
                                      f"({'HTTP ' + str(status) if status else body.decode()})")
            delay = self._delay(attempt, retry_after)
            self.retries += 1
            log.warning("Magento %s (page %s); retrying in %.1fs (attempt %d/%d)",
                        f"answered HTTP {status}" if status else f"unreachable ({body.decode()})", page, delay,
                        attempt, self._max_attempts)
            await self._sleep(delay)  # type: ignore[misc]

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self._max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return min(self._max_backoff, self._backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
