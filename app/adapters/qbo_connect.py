"""Connecting a QuickBooks company: Intuit's OAuth2 authorization-code flow (authlib), shared by `magqb connect`
(a loopback redirect) and the console's QuickBooks page (a redirect to the console)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app import redact
from app.adapters.oauth import HARD_EXPIRY_HEADER, expiries
from app.adapters.qbo_access import token_store
from app.adapters.token_store import TokenInfo

SCOPE = "com.intuit.quickbooks.accounting"


class ConnectError(Exception):
    """The flow failed; the message is one line for the user (never a token: it is scrubbed)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact.scrub(message))


def _client(settings: Any, redirect_uri: str) -> Any:
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    return AsyncOAuth2Client(settings.quickbooks_client_id, settings.quickbooks_client_secret.get_secret_value(),
                             scope=SCOPE, redirect_uri=redirect_uri)


def authorization_url(settings: Any, redirect_uri: str) -> tuple[str, str]:
    """Intuit's consent page for this app (accounting scope) and the fresh `state` it will send back."""
    client = _client(settings, redirect_uri)
    url, state = client.create_authorization_url(settings.quickbooks_authorize_url)
    return str(url), str(state)


async def complete(settings: Any, redirect_uri: str, query: dict[str, str], expected_state: str) -> tuple[str,
                                                                                                      TokenInfo | None]:
    """Check the callback against the state we sent, exchange its code, store the refresh token and its expiries
    for the company's realm (a new lineage). Returns (realm, what is stored of it)."""
    if not expected_state or query.get("state") != expected_state:
        raise ConnectError("the callback's state does not match this request's: ignored (a stale or forged callback)")
    if query.get("error"):
        raise ConnectError(f"QuickBooks refused the connection: {query['error']}")
    realm, code = query.get("realmId", ""), query.get("code", "")
    if not realm or not code:
        raise ConnectError("the callback carried no code or realmId")
    client = _client(settings, redirect_uri)
    try:
        try:
            token = await client.fetch_token(settings.quickbooks_token_url, code=code,
                                             headers={HARD_EXPIRY_HEADER: "true"})
        except Exception as exc:  # noqa: BLE001 - authlib raises OAuthError or httpx errors; both end here
            raise ConnectError(f"exchanging the code failed: {exc.__class__.__name__}: "
                               f"{getattr(exc, 'description', '') or exc}") from None
    finally:
        await client.aclose()
    refresh = str(token.get("refresh_token") or "")
    if not refresh:
        raise ConnectError("the token answer carried no refresh token")
    redact.register(refresh, str(token.get("access_token") or ""))
    rolling, hard = expiries(dict(token), datetime.now(UTC))
    store = token_store(settings)
    await store.put(realm, refresh, rolling, hard, connected=True)
    return realm, await store.info(realm)
