"""The console's aiohttp application: pages rendered on the server (aiohttp-jinja2), each over the same service
functions as the CLI (app/tools/). Every page needs a login; every form carries a CSRF token; every action is
recorded on Kafka (app/console/audit.py) before it is answered."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from app.console import orders as order_views
from app.console.audit import AuditLog
from app.console.explain import explain, last_message, qbo_link
from app.console.security import CSRF_FIELD, SESSION_SECONDS, LoginThrottle, csrf_ok, new_csrf_token
from app.console.users import User, UserStore
from schemas.console import Action, ConsoleAction
from schemas.dead_letter import DeadLetter
from schemas.state import OrderState

log = logging.getLogger("magqb.console")

HERE = Path(__file__).parent
OPEN_PATHS = ("/login", "/healthz", "/static/")
USER_KEY = web.AppKey("user_store", UserStore)
SERVICES_KEY: web.AppKey[Services] = web.AppKey("services")
AUDIT_KEY = web.AppKey("audit", AuditLog)
THROTTLE_KEY = web.AppKey("throttle", LoginThrottle)
USER = web.RequestKey("user", User)
CSP_KEY = web.AppKey("csp", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    extra: dict[str, Any] = field(default_factory=dict)


def tool_services(settings: Any) -> Services:
    """The real ones: Kafka and the token store of this installation."""
    from app.adapters.qbo_access import token_store
    from app.mapping_file import load_mapping
    from app.tools import dead_letters, order_log
    from app.tools.order_status import order_status
    from app.tools.reconcile import fix_missing, run_reconcile
    from app.tools.top_view import fetch

    bootstrap = settings.kafka_bootstrap_servers
    metrics_urls = [u.strip() for u in str(getattr(settings, "console_metrics_urls", "") or "").split(",") if u.strip()]
    return Services(
        settings=settings,
        states=lambda: order_log.read_states(bootstrap, settings.app_id),
        order_status=lambda wanted: order_status(settings, wanted),
        dead_letters=lambda: dead_letters.read_log(bootstrap),
        retry=lambda letters: dead_letters.retry(bootstrap, letters),
        purge=lambda letters: dead_letters.purge(bootstrap, letters),
        token_info=lambda: token_store(settings).info(settings.quickbooks_realm_id),
        # The mapping file read at each run: a fix made since the console started counts.
        reconcile=lambda since, until: run_reconcile(settings, load_mapping(settings.mapping_file), since, until),
        fix=lambda order_ids: fix_missing(settings, order_ids),
        emails=lambda: order_log.customer_emails(bootstrap, settings.app_id),
        figures=(lambda: asyncio.to_thread(fetch, metrics_urls)) if metrics_urls else None,
    )


# ---------------------------------------------------------------- middleware


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Login first (anonymous → /login), a CSRF token on every POST, and headers that keep pages in their frame."""
    session = await get_session(request)
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = new_csrf_token()
    path = request.path
    if not path.startswith(OPEN_PATHS):
        user = await _user(request)
        if user is None:
            nxt = request.path_qs if request.method == "GET" else "/"
            raise web.HTTPFound(f"/login?next={quote(nxt, safe='')}")
        request[USER] = user
    if request.method == "POST":
        form = await request.post()
        if not csrf_ok(session.get(CSRF_FIELD), str(form.get(CSRF_FIELD) or "")):
            raise web.HTTPForbidden(text="This form is out of date or did not come from the console: go back, "
                                         "reload the page and submit it again.")
    response = await handler(request)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", request.app[CSP_KEY])
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _user(request: web.Request) -> User | None:
    session = await get_session(request)
    name, since = session.get("user"), session.get("since", 0)
    if not isinstance(name, str) or time.time() - float(since) > SESSION_SECONDS:
        return None
    return await request.app[USER_KEY].get(name)  # a user removed or demoted since loses it at once


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


# ---------------------------------------------------------------- login


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


# ---------------------------------------------------------------- pages


async def overview(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    now = datetime.now(UTC)
    summary = order_views.summarize(await services.states(), now)
    letters = await services.dead_letters()
    token = await _token(services)
    figures = None
    if services.figures is not None:
        from app.tools.top_view import QUOTA_PER_MINUTE, view

        snap = await services.figures()
        figures = {"view": view(snap, None), "quota": QUOTA_PER_MINUTE, "unreachable": snap.unreachable,
                   "follow_lag": snap.maximum("magqb_follow_lag_seconds") if snap.samples.get("magqb_follow_lag_seconds")
                   else None}
    return page("overview.html", request, summary=summary, open_letters=len(letters.open()), token=token, now=now,
                realm=services.settings.quickbooks_realm_id, figures=figures)


async def _token(services: Services) -> dict[str, Any]:
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


async def order_list(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    q = request.query.get("q", "").strip()
    status = request.query.get("state", "")
    since, until = _day(request.query.get("since")), _day(request.query.get("until"))
    states = await services.states()
    if q and not (status or since or until):
        hit = order_views.exact(states, q)
        if hit is not None:
            raise web.HTTPFound(f"/orders/{quote(hit)}")
    emails = await services.emails() if "@" in q and services.emails is not None else None
    rows = order_views.search(states, q, status, since, until, emails=emails)
    return page("orders.html", request, rows=rows, q=q, state=status, since=request.query.get("since", ""),
                until=request.query.get("until", ""), states=sorted({*order_views.WAITING, "synced", "failed",
                                                                      "skipped", "cancelled"}))


async def order_page(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    wanted = request.match_info["order_id"]
    status = await services.order_status(wanted)
    if status is None:
        response = page("order.html", request, status=None, wanted=wanted, actions=[], link=None)
        response.set_status(404)
        return response
    actions = await request.app[AUDIT_KEY].of_order(status["order_id"])
    doc = status.get("document") or {}
    link = qbo_link(doc.get("type"), doc.get("Id"), bool(services.settings.quickbooks_sandbox))
    return page("order.html", request, status=status, wanted=wanted, actions=actions, link=link)


async def problems(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    letters = (await services.dead_letters()).open()
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in sorted(letters, key=lambda d: d.dead_at):
        groups.setdefault(d.reason, []).append({"letter": d, "why": explain(d), "last": last_message(d)[:300]})
    return page("problems.html", request, groups=groups, done=request.query.get("done", ""))


async def problems_retry(request: web.Request) -> web.Response:
    user = operator(request)
    form = await request.post()
    letters = await _picked(request, form)
    retriable = [d for d in letters if d.why_not_retriable() is None]
    if not retriable:
        raise web.HTTPBadRequest(text="nothing there can be retried")
    for d in retriable:
        await audit(request, "retry", order_id=d.order_id, target=d.id, detail=f"{d.reason}: {d.command_type}")
    await request.app[SERVICES_KEY].retry(retriable)
    log.info("console: %s retried %d dead letter(s)", user.name, len(retriable))
    raise web.HTTPFound(f"/problems?done=retried+{len(retriable)}")


async def problems_purge(request: web.Request) -> web.Response:
    user = operator(request)
    form = await request.post()
    letters = await _picked(request, form)
    if form.get("confirm") != "yes":
        return page("confirm_purge.html", request, letters=letters, letter=form.get("letter", ""),
                    reason=form.get("reason", ""))
    for d in letters:
        await audit(request, "purge", order_id=d.order_id, target=d.id, detail=d.reason)
    await request.app[SERVICES_KEY].purge(letters)
    log.info("console: %s purged %d dead letter(s)", user.name, len(letters))
    raise web.HTTPFound(f"/problems?done=purged+{len(letters)}")


async def _picked(request: web.Request, form: Any) -> list[DeadLetter]:
    """One letter (`letter`: its id) or every open one of a reason (`reason`)."""
    log_ = await request.app[SERVICES_KEY].dead_letters()
    open_ = log_.open()
    if form.get("letter"):
        picked = [d for d in open_ if d.id == form["letter"]]
    elif form.get("reason"):
        picked = [d for d in open_ if d.reason == form["reason"]]
    else:
        picked = []
    if not picked:
        raise web.HTTPNotFound(text="no such open problem (retried or purged meanwhile?)")
    return picked


async def quickbooks(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    return page("quickbooks.html", request, token=await _token(services), realm=services.settings.quickbooks_realm_id,
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
    try:
        realm, _ = await complete(services.settings, _redirect_uri(request), dict(request.query), expected)
    except ConnectError as exc:
        response = page("quickbooks.html", request, token=await _token(services),
                        realm=services.settings.quickbooks_realm_id, done="", error=str(exc))
        response.set_status(400)
        return response
    await audit(request, "connect", target=f"realm {realm}", detail="refresh token stored")
    raise web.HTTPFound("/quickbooks?done=connected")


def _range(request: web.Request, form: Any = None) -> tuple[date, date] | None:
    src = form if form is not None else request.query
    since, until = _day(src.get("since")), _day(src.get("until"))
    if since is None:
        return None
    return since, until or datetime.now(UTC).date()


async def _reconciled(request: web.Request, span: tuple[date, date]) -> Any:
    """The reconciliation of the days since..until (inclusive), or an HTTP error saying why there is none."""
    from app.adapters.oauth import TokenRefreshError
    from app.adapters.qbo_client import QboError
    from app.mapping_file import MappingFileError

    services: Services = request.app[SERVICES_KEY]
    if services.reconcile is None:
        raise web.HTTPNotImplemented(text="reconcile is not available here")
    since = datetime.combine(span[0], datetime.min.time(), UTC)
    until = datetime.combine(span[1] + timedelta(days=1), datetime.min.time(), UTC)
    try:
        return await services.reconcile(since, until)
    except TokenRefreshError as exc:
        raise web.HTTPServiceUnavailable(
            text=f"QuickBooks cannot be read: {exc}. Reconnect on the QuickBooks page.") from None
    except QboError as exc:
        raise web.HTTPServiceUnavailable(text=f"QuickBooks refused the query: {exc}") from None
    except MappingFileError as exc:
        raise web.HTTPServiceUnavailable(text=f"the mapping file cannot be read: {exc}") from None


async def reconcile_page(request: web.Request) -> web.Response:
    span = _range(request)
    today = datetime.now(UTC).date()
    result = await _reconciled(request, span) if span else None
    return page("reconcile.html", request, result=result, since=(span or (today.replace(day=1), today))[0],
                until=(span or (today, today))[1], done=request.query.get("done", ""))


async def reconcile_csv(request: web.Request) -> web.StreamResponse:
    import csv
    import io

    from app.tools.reconcile import COLUMNS

    span = _range(request)
    if span is None:
        raise web.HTTPBadRequest(text="since=YYYY-MM-DD (and until=) name the days to reconcile")
    result = await _reconciled(request, span)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS))
    writer.writeheader()
    for f in result.findings:
        writer.writerow(f.row())
    return web.Response(text=out.getvalue(), content_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="magqb-reconcile-{span[0]}-{span[1]}.csv"'})


async def reconcile_fix(request: web.Request) -> web.Response:
    operator(request)
    form = await request.post()
    span = _range(request, form)
    if span is None:
        raise web.HTTPBadRequest(text="no range")
    services: Services = request.app[SERVICES_KEY]
    result = await _reconciled(request, span)
    missing = result.missing
    if missing and services.fix is not None:
        for order_id in missing:
            await audit(request, "fix", order_id=order_id, target=f"reconcile {span[0]}..{span[1]}",
                        detail="re-driven through a replay (looked up before anything is created)")
        await services.fix(missing)
    raise web.HTTPFound(f"/reconcile?since={span[0]}&until={span[1]}&done=re-drove+{len(missing)}")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


# ---------------------------------------------------------------- the app


def make_app(services: Services, users: UserStore, audit_log: AuditLog, session_key: bytes,
             secure_cookies: bool = False) -> web.Application:
    app = web.Application(middlewares=[
        session_middleware(EncryptedCookieStorage(session_key, cookie_name="magqb_console", httponly=True,
                                                  # Lax: Intuit's redirect back (a top-level GET from another
                                                  # site) must carry the session; POSTs need the CSRF token.
                                                  samesite="Lax", secure=secure_cookies, max_age=SESSION_SECONDS)),
        guard,
    ])
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         context_processors=[csrf_token, aiohttp_jinja2.request_processor])
    app[USER_KEY], app[SERVICES_KEY], app[AUDIT_KEY], app[THROTTLE_KEY] = users, services, audit_log, LoginThrottle()
    # Forms post here only — and the Connect form's answer goes on to Intuit's consent page.
    consent = urlsplit(str(getattr(services.settings, "quickbooks_authorize_url", "") or ""))
    intuit = f" {consent.scheme}://{consent.netloc}" if consent.scheme in ("http", "https") and consent.netloc else ""
    app[CSP_KEY] = (f"default-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'{intuit}; "
                    "frame-ancestors 'none'")
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", overview)
    app.router.add_get("/orders", order_list)
    app.router.add_get("/orders/{order_id}", order_page)
    app.router.add_get("/problems", problems)
    app.router.add_post("/problems/retry", problems_retry)
    app.router.add_post("/problems/purge", problems_purge)
    app.router.add_get("/reconcile", reconcile_page)
    app.router.add_get("/reconcile.csv", reconcile_csv)
    app.router.add_post("/reconcile/fix", reconcile_fix)
    app.router.add_get("/quickbooks", quickbooks)
    app.router.add_post("/quickbooks/connect", quickbooks_connect)
    app.router.add_get("/quickbooks/callback", quickbooks_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", HERE / "static")

    async def start_audit(app: web.Application) -> None:
        await audit_log.start()

    async def stop_audit(app: web.Application) -> None:
        await audit_log.stop()

    app.on_startup.append(start_audit)
    app.on_cleanup.append(stop_audit)
    return app
