"""Logging in and out: a fresh session (and CSRF token) at each login, throttled failures, each recorded."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_session import get_session, new_session

from app.console.base import AUDIT_KEY, THROTTLE_KEY, USER, USER_KEY, audit, page
from app.console.security import CSRF_FIELD, new_csrf_token
from app.console.users import NAME
from schemas.console import ConsoleAction


async def login_form(request: web.Request) -> web.Response:
    return page("login.html", request, next=_safe_next(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    name, password = str(form.get("name") or "").strip(), str(form.get("password") or "")
    nxt = _safe_next(str(form.get("next") or ""))
    address = request.remote or "?"
    throttle = request.app[THROTTLE_KEY]
    if not NAME.match(name):
        name = "?"  # counted (per address), never stored or logged as given
    wait = throttle.blocked_for(name, address)
    if wait > 0:
        response = page("login.html", request, next=nxt,
                        error=f"Too many failed logins: try again in {int(wait // 60) + 1} minute(s).")
        response.set_status(429)
        return response
    # Counted before it is checked: a burst of parallel attempts cannot all slip under the limit.
    throttle.failed(name, address)
    user = await request.app[USER_KEY].verify(name, password) if name != "?" else None
    if user is None:
        await request.app[AUDIT_KEY].record(ConsoleAction(user=name, role="-", action="login_refused",
                                                          detail=f"from {address}"))
        response = page("login.html", request, next=nxt, error="Wrong name or password.")
        response.set_status(401)
        return response
    throttle.succeeded(name, address)
    session = await new_session(request)  # a fresh session (and CSRF token): no fixation
    session["user"], session["since"], session[CSRF_FIELD] = user.name, time.time(), new_csrf_token()
    session["epoch"] = user.epoch
    request[USER] = user
    await audit(request, "login", detail=f"from {address}")
    raise web.HTTPFound(nxt)


async def logout(request: web.Request) -> web.Response:
    await audit(request, "logout")
    await request.app[USER_KEY].end_sessions(request[USER].name)  # every copy of the cookie, not only this one
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPFound("/login")


def _safe_next(value: str | None) -> str:
    """Only a path of this console: never another site after logging in."""
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return "/"
    return value
