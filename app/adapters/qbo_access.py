"""A QuickBooks client for the operator's tools (reconcile), sharing the worker's token store.

The tools run beside the worker: they refresh through the same token store, so a rotated refresh
token is seen by both. Their calls count against the same realm quota; they make few (paged reads).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from app.adapters.oauth import TokenManager
from app.adapters.qbo_client import QboClient
from app.adapters.token_store import TokenStore


def token_store(settings: Any) -> TokenStore:
    return TokenStore(settings.data_dir / "tokens.sqlite3")


@asynccontextmanager
async def qbo_client(settings: Any) -> AsyncIterator[QboClient]:
    async with aiohttp.ClientSession() as session:
        tokens = TokenManager(session, settings.quickbooks_token_url, settings.quickbooks_client_id,
                              settings.quickbooks_client_secret, settings.quickbooks_realm_id, token_store(settings),
                              settings.quickbooks_refresh_token)
        yield QboClient(session, settings.qbo_api_base, settings.quickbooks_realm_id, tokens,
                        settings.quickbooks_minor_version, settings.quickbooks_timeout_seconds, max_concurrent=2)
