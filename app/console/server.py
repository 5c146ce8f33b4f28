"""The console's aiohttp application: pages rendered on the server (aiohttp-jinja2), each over the same service
functions as the CLI (app/tools/). Every page needs a login; every form carries a CSRF token; every action is
recorded on Kafka (app/console/audit.py) before it is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import get_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from app.console.audit import AuditLog
from app.console.base import AUDIT_KEY, CSP_KEY, SERVICES_KEY, THROTTLE_KEY, USER, USER_KEY, Services, csrf_token, logged_in
from app.console.login_pages import login, login_form, logout
from app.console.order_pages import order_list, order_page, overview
from app.console.problem_pages import problems, problems_purge, problems_retry
from app.console.quickbooks_pages import quickbooks, quickbooks_callback, quickbooks_connect
from app.console.reconcile_pages import reconcile_csv, reconcile_fix, reconcile_page
from app.console.security import CSRF_FIELD, SESSION_SECONDS, LoginThrottle, csrf_ok, new_csrf_token
from app.console.users import UserStore

HERE = Path(__file__).parent
OPEN_PATHS = ("/login", "/healthz", "/static/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
__all__ = ["Services", "make_app", "tool_services"]


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
    """This console's own host only (no DNS rebinding), login first (anonymous → /login), a CSRF token on every
    POST. The headers that keep pages in their frame go on every answer (`_headers`), redirects and errors too."""
    if not host_allowed(request.host, getattr(request.app[SERVICES_KEY].settings, "console_url", None)):
        raise web.HTTPMisdirectedRequest(text="this console answers to its own address only (MAGQB_CONSOLE_URL)")
    session = await get_session(request)
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = new_csrf_token()
    path = request.path
    if not path.startswith(OPEN_PATHS):
        user = await logged_in(request)
        if user is None:
            nxt = request.path_qs if request.method == "GET" else "/"
            raise web.HTTPFound(f"/login?next={quote(nxt, safe='')}")
        request[USER] = user
    if request.method == "POST":
        form = await request.post()
        if not csrf_ok(session.get(CSRF_FIELD), str(form.get(CSRF_FIELD) or "")):
            raise web.HTTPForbidden(text="This form is out of date or did not come from the console: go back, "
                                         "reload the page and submit it again.")
    return await handler(request)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", request.app[CSP_KEY])
    response.headers.setdefault("Cache-Control", "no-store")


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def host_allowed(host: str, console_url: str | None) -> bool:
    """The Host a request names: MAGQB_CONSOLE_URL's, or (unset) a loopback name — a page of another site that
    resolves its own name to 127.0.0.1 (DNS rebinding) is not this console."""
    if console_url:
        return host.lower() == (urlsplit(console_url).netloc or "").lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOOPBACK


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


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

    app.on_response_prepare.append(_headers)
    app.on_startup.append(start_audit)
    app.on_cleanup.append(stop_audit)
    return app
