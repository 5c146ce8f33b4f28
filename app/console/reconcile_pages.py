"""Reconcile: a range of days against QuickBooks' documents, as CSV too, the missing booked again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from app.console.base import SERVICES_KEY, Services, audit, day, operator, page
from app.redact import scrub

MAX_DAYS = 92  # each reconcile reads QuickBooks (a handful of reads a month): a quarter at a time


def _range(request: web.Request, form: Any = None) -> tuple[date, date] | None:
    src = form if form is not None else request.query
    since, until = day(src.get("since")), day(src.get("until"))
    if since is None:
        return None
    until = until or datetime.now(UTC).date()
    if until < since or (until - since).days >= MAX_DAYS:
        raise web.HTTPBadRequest(text=f"reconcile up to {MAX_DAYS} days at a time, the first day before the last")
    return since, until


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
            text=scrub(f"QuickBooks cannot be read: {exc}. Reconnect on the QuickBooks page.")) from None
    except QboError as exc:
        raise web.HTTPServiceUnavailable(text=scrub(f"QuickBooks refused the query: {exc}")) from None
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
        # A cell a spreadsheet would take for a formula (= + - @) is kept as text.
        writer.writerow({k: f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v
                         for k, v in f.row().items()})
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
