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
from app.adapters.token_store import RefreshTokenStore, TokenStore
from app.adapters.token_topic import TokenKeyError, TopicTokenStore, holds_tokens, parse_key


def token_store(settings: Any) -> RefreshTokenStore:
    """The sealed topic every host reads when MAGQB_TOKEN_KEY is set (this host's file as its copy); else the file."""
    file = TokenStore(settings.data_dir / "tokens.sqlite3")
    key = settings.token_key.get_secret_value()
    if not key.strip():
        return file
    return TopicTokenStore(settings.kafka_bootstrap_servers, parse_key(key), file,
                           timeout=settings.kafka_connect_timeout_seconds)


async def check_token_store(settings: Any) -> str:
    """Before a worker or a token tool starts: the key opens every token on the topic, or, without a key, the
    topic holds none (else this host would refresh with its own, stale, file). TokenKeyError is one line to
    show; the answer says where tokens are kept."""
    store = token_store(settings)
    if isinstance(store, TopicTokenStore):
        realms = await store.check()
        return f"refresh tokens on {store.topic} (sealed; {realms} realm(s)), shared by every host"
    if await holds_tokens(settings.kafka_bootstrap_servers):
        from app import topics

        raise TokenKeyError(f"the realms' refresh tokens are on topic {topics.TOKENS}, sealed, and "
                            "MAGQB_TOKEN_KEY is not set: set it to the key the other hosts use")
    return (f"refresh tokens in {settings.data_dir / 'tokens.sqlite3'} (this host only: set MAGQB_TOKEN_KEY on "
            "every host before a second worker host joins)")


@asynccontextmanager
async def qbo_client(settings: Any) -> AsyncIterator[QboClient]:
    async with aiohttp.ClientSession() as session:
        tokens = TokenManager(session, settings.quickbooks_token_url, settings.quickbooks_client_id,
                              settings.quickbooks_client_secret, settings.quickbooks_realm_id, token_store(settings),
                              settings.quickbooks_refresh_token)
        yield QboClient(session, settings.qbo_api_base, settings.quickbooks_realm_id, tokens,
                        settings.quickbooks_minor_version, settings.quickbooks_timeout_seconds, max_concurrent=2)
