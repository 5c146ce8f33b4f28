"""The QuickBooks connection: its token's state, and the OAuth connect flow landing back here."""

from __future__ import annotations

from aiohttp import web
from aiohttp_session import get_session

from app.console.base import SERVICES_KEY, Services, audit, operator, page, token_state


async def quickbooks(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    return page("quickbooks.html", request, token=await token_state(services), realm=services.settings.quickbooks_realm_id,
                done=request.query.get("done", ""), error=None)


def _redirect_uri(request: web.Request) -> str:
    """Where Intuit sends the browser back: MAGQB_CONSOLE_URL's, else this request's own host (register it in
    the Intuit app)."""
    base = getattr(request.app[SERVICES_KEY].settings, "console_url", None) or f"{request.scheme}://{request.host}"
    return f"{str(base).rstrip('/')}/quickbooks/callback"


async def quickbooks_connect(request: web.Request) -> web.Response:
    operator(request)
    from app.adapters.qbo_connect import authorization_url

    url, state = authorization_url(request.app[SERVICES_KEY].settings, _redirect_uri(request))
    session = await get_session(request)
    session["qbo_state"] = state
    await audit(request, "connect", target="consent asked")
    raise web.HTTPFound(url)


async def quickbooks_callback(request: web.Request) -> web.Response:
    operator(request)
    from app.adapters.qbo_connect import ConnectError, complete

    services: Services = request.app[SERVICES_KEY]
    session = await get_session(request)
    expected = str(session.pop("qbo_state", "") or "")
    # Recorded before the token is stored: a connection nobody can trace is not made.
    await audit(request, "connect", target=f"realm {request.query.get('realmId', '?')[:40]}",
                detail="consent answered: exchanging the code")
    try:
        realm, _ = await complete(services.settings, _redirect_uri(request), dict(request.query), expected)
    except ConnectError as exc:
        await audit(request, "connect", target="refused", detail=str(exc))
        response = page("quickbooks.html", request, token=await token_state(services),
                        realm=services.settings.quickbooks_realm_id, done="", error=str(exc))
        response.set_status(400)
        return response
    await audit(request, "connect", target=f"realm {realm}", detail="refresh token stored")
    raise web.HTTPFound("/quickbooks?done=connected")
