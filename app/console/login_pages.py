"""Logging in and out: a fresh session (and CSRF token) at each login, throttled failures, each recorded."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_session import get_session, new_session

from app.console.base import AUDIT_KEY, THROTTLE_KEY, USER, USER_KEY, audit, page
from app.console.security import CSRF_FIELD, new_csrf_token
from schemas.console import ConsoleAction


async def login_form(request: web.Request) -> web.Response:
    return page("login.html", request, next=_safe_next(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    name, password = str(form.get("name") or "").strip(), str(form.get("password") or "")
    nxt = _safe_next(str(form.get("next") or ""))
    address = request.remote or "?"
    throttle = request.app[THROTTLE_KEY]
    wait = throttle.blocked_for(name, address)
    if wait > 0:
        response = page("login.html", request, next=nxt,
                        error=f"Too many failed logins: try again in {int(wait // 60) + 1} minute(s).")
        response.set_status(429)
        return response
    user = await request.app[USER_KEY].verify(name, password)
    if user is None:
        throttle.failed(name, address)
        await request.app[AUDIT_KEY].record(ConsoleAction(user=name[:64] or "?", role="-", action="login_refused",
                                                          detail=f"from {address}"))
        response = page("login.html", request, next=nxt, error="Wrong name or password.")
        response.set_status(401)
        return response
    throttle.succeeded(name)
    session = await new_session(request)  # a fresh session (and CSRF token): no fixation
    session["user"], session["since"], session[CSRF_FIELD] = user.name, time.time(), new_csrf_token()
    request[USER] = user
    await audit(request, "login", detail=f"from {address}")
    raise web.HTTPFound(nxt)


async def logout(request: web.Request) -> web.Response:
    await audit(request, "logout")
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPFound("/login")


def _safe_next(value: str | None) -> str:
    """Only a path of this console: never another site after logging in."""
    if not value or not value.startswith("/") or value.startswith("//") or urlsplit(value).netloc:
        return "/"
    return value
