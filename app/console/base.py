"""What every console page shares: the app's keys, the services the pages call, rendering, who is logged in, the
audit record of an action."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from app.console.audit import AuditLog
from app.console.security import CSRF_FIELD, SESSION_SECONDS, LoginThrottle
from app.console.users import User, UserStore
from schemas.console import Action, ConsoleAction
from schemas.dead_letter import DeadLetter
from schemas.state import OrderState

USER_KEY = web.AppKey("user_store", UserStore)
AUDIT_KEY = web.AppKey("audit", AuditLog)
THROTTLE_KEY = web.AppKey("throttle", LoginThrottle)
USER = web.RequestKey("user", User)
CSP_KEY = web.AppKey("csp", str)


@dataclass
class Services:
    """What the pages read and do: the tools' service functions, bound to this installation's settings."""

    settings: Any
    states: Callable[[], Awaitable[dict[str, OrderState]]]
    order_status: Callable[[str], Awaitable[dict[str, Any] | None]]
    dead_letters: Callable[[], Awaitable[Any]]  # app.tools.dead_letters.DeadLetterLog
    retry: Callable[[list[DeadLetter]], Awaitable[None]]
    purge: Callable[[list[DeadLetter]], Awaitable[None]]
    token_info: Callable[[], Awaitable[Any]]
    # (since, until) → app.tools.reconcile.Reconciliation; order ids → the replay that re-drives them.
    reconcile: Callable[[datetime, datetime | None], Awaitable[Any]] | None = None
    # QuickBooks customer id → e-mail (the customers table): booked orders found by e-mail.
    emails: Callable[[], Awaitable[dict[str, str]]] | None = None
    # The workers' figures now (app.tools.top_view.Snapshot), or None where no /metrics URL is configured.
    figures: Callable[[], Awaitable[Any]] | None = None
    fix: Callable[[list[str]], Awaitable[Any]] | None = None


SERVICES_KEY = web.AppKey("services", Services)


async def logged_in(request: web.Request) -> User | None:
    session = await get_session(request)
    name, since = session.get("user"), session.get("since", 0)
    if not isinstance(name, str) or time.time() - float(since) > SESSION_SECONDS:
        return None
    user = await request.app[USER_KEY].get(name)  # a user removed or demoted since loses it at once
    if user is None or session.get("epoch") != user.epoch:
        return None  # logged out (everywhere) or the password changed since this session began
    return user


def operator(request: web.Request) -> User:
    user = request[USER]
    if not user.may_act:
        raise web.HTTPForbidden(text=f"{user.name} is a viewer: retry, purge, fix and connect are for operators.")
    return user


async def audit(request: web.Request, action: Action, order_id: str | None = None, target: str = "",
                detail: str = "") -> None:
    user = request[USER]
    await request.app[AUDIT_KEY].record(ConsoleAction(user=user.name, role=user.role, action=action,
                                                      order_id=order_id, target=target, detail=detail[:500]))


def page(template: str, request: web.Request, **context: Any) -> web.Response:
    session_user = request.get(USER)
    return aiohttp_jinja2.render_template(template, request, {"user": session_user, **context})


async def csrf_token(request: web.Request) -> dict[str, Any]:
    session = await get_session(request)
    return {"csrf_token": session.get(CSRF_FIELD, ""), "csrf_field": CSRF_FIELD}


async def token_state(services: Services) -> dict[str, Any]:
    try:
        info = await services.token_info()
    except Exception as exc:  # noqa: BLE001 - the page shows that the store cannot be read, and why (no secret)
        return {"state": "unreadable", "detail": exc.__class__.__name__}
    if info is None:
        return {"state": "missing"}
    expiry = info.earliest_expiry()
    days = (expiry - datetime.now(UTC)).total_seconds() / 86400 if expiry else None
    return {"state": "expiring" if days is not None and days < 14 else "ok", "updated_at": info.updated_at,
            "expires_at": expiry, "days_left": days, "connected_at": info.connected_at,
            "rolling_expiry": info.expires_at, "hard_expiry": info.hard_expires_at}


def day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None
