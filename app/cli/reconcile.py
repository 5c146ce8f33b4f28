"""`magqb reconcile`: prove the books match the log for a date range (and re-drive what is missing)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import click

from app import topics
from app.cli.common import Progress, ensure_app_topics, fail, get_settings, mapping, render
from app.cli.history import DATE


@click.command()
@click.option("--since", type=DATE, required=True, help="Orders created at or after this (UTC unless an offset).")
@click.option("--until", type=DATE, default=None, help="Orders created before this (default: now).")
@click.option("--fix", is_flag=True, help="Re-drive the missing orders through replay (never creates a duplicate: "
              "each DocNumber is looked up before anything is created).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def reconcile(since: datetime, until: datetime | None, fix: bool, fmt: str) -> None:
    """Compare the orders in the log with the documents in QuickBooks.

    Reports every order created in the range that is missing in QuickBooks (with why: parked,
    in progress, never handled, or booked but gone), booked twice (two documents with its
    DocNumber), or booked at a total other than Magento's grand_total; cancelled but not voided;
    a credit memo without its RefundReceipt/CreditMemo (or with another total), each finding
    saying what the order nets to in QuickBooks and in Magento (grand_total less credit memos,
    0 once cancelled); and every document with our
    DocNumber prefix that no order or credit memo in the log accounts for. QuickBooks is read in
    pages of 1,000 (a handful of reads for a month).

    Exit status 0 only when the books match; 1 when there are findings.
    """
    if until is not None and until <= since:
        fail("--until must be after --since")
    s = get_settings()
    ensure_app_topics(s, [topics.ORDERS])
    findings, summary = asyncio.run(_reconcile(s, since, until))
    rows = [f.row() for f in findings]
    if fmt == "json":
        click.echo(json.dumps({"summary": summary, "findings": rows}, indent=2))
    elif rows:
        from app.tools.reconcile import COLUMNS

        click.echo(render(rows, COLUMNS, fmt))
    if fmt != "json":
        click.echo(_summary_line(summary), err=fmt == "csv")
    missing = [f for f in findings if f.kind == "missing"]
    if fix and missing:
        asyncio.run(_fix(s, [f.order_id for f in missing]))
    raise SystemExit(1 if findings else 0)


def _summary_line(summary: dict[str, Any]) -> str:
    verdict = "the books match" if not summary["findings"] else "the books do NOT match"
    return (f"reconcile {summary['range']}: {summary['orders']} order(s) in the log, {summary['documents']} "
            f"QuickBooks document(s) read in {summary['qbo_reads']} quer(ies): {summary['missing']} missing, "
            f"{summary['booked_twice']} booked twice, {summary['total_differs']} total differs, "
            f"{summary['not_voided']} cancelled but not voided, {summary['refund_missing']} refund(s) missing, "
            f"{summary['unknown']} unknown to the log — {verdict}")


async def _reconcile(s: Any, since: datetime, until: datetime | None) -> tuple[list[Any], dict[str, Any]]:
    from app.adapters.oauth import TokenRefreshError
    from app.adapters.qbo_client import QboError
    from app.tools.reconcile import run_reconcile

    bars: dict[str, Progress] = {}

    def progress(what: str, done: int, total: int) -> None:
        for other in [w for w in bars if w != what]:
            bars.pop(other).close()
        bar = bars.get(what) or bars.setdefault(what, Progress(what, unit="records"))
        bar.update(done, total)

    try:
        result = await run_reconcile(s, mapping(s.mapping_file), since, until, progress)
    except TokenRefreshError as exc:
        fail(f"{exc}: `magqb token set` or `magqb connect` gives the realm a new refresh token")
    except QboError as exc:
        fail(f"QuickBooks refused the query: {exc}")
    finally:
        for bar in bars.values():
            bar.close()
    return result.findings, result.summary


async def _fix(s: Any, order_ids: list[str]) -> None:
    from app.cli.replay import _follow
    from app.tools.reconcile import fix_missing

    progress = await fix_missing(s, order_ids)
    click.echo(f"fix: replay {progress.replay_id} re-drove {progress.replayed} missing order(s); the worker looks "
               f"each one up before creating it ({progress.in_progress} in progress left to the worker)", err=True)
    await _follow(s, progress, 600.0)
    click.echo("fix: done; run the same reconcile again to check", err=True)
