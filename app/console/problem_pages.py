"""Problems: dead letters grouped by reason, explained with their fix, retried or purged."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from app.console.base import SERVICES_KEY, Services, audit, operator, page
from app.console.explain import explain, last_message
from schemas.dead_letter import DeadLetter

log = logging.getLogger("magqb.console")


async def problems(request: web.Request) -> web.Response:
    services: Services = request.app[SERVICES_KEY]
    letters = (await services.dead_letters()).open()
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in sorted(letters, key=lambda d: d.dead_at):
        why = explain(d, bool(getattr(services.settings, "quickbooks_sandbox", False)))
        groups.setdefault(d.reason, []).append({"letter": d, "why": why, "last": last_message(d)[:300]})
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
