"""The overview and the orders: counts, search, an order's whole story."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from aiohttp import web

from app.console import orders as order_views
from app.console.base import AUDIT_KEY, SERVICES_KEY, Services, day, page, token_state
from app.console.explain import qbo_link


async def overview(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    now = datetime.now(UTC)
    summary = order_views.summarize(await services.states(), now)
    letters = await services.dead_letters()
    token = await token_state(services)
    figures = None
    if services.figures is not None:
        from app.tools.top_view import QUOTA_PER_MINUTE, view

        snap = await services.figures()
        figures = {"view": view(snap, None), "quota": QUOTA_PER_MINUTE, "unreachable": snap.unreachable,
                   "follow_lag": snap.maximum("magqb_follow_lag_seconds") if snap.samples.get("magqb_follow_lag_seconds")
                   else None}
    return page("overview.html", request, summary=summary, open_letters=len(letters.open()), token=token, now=now,
                realm=services.settings.quickbooks_realm_id, figures=figures)


async def order_list(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    q = request.query.get("q", "").strip()
    status = request.query.get("state", "")
    since, until = day(request.query.get("since")), day(request.query.get("until"))
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
