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
    from app.adapters import kafka_io
    from app.adapters.oauth import TokenRefreshError
    from app.adapters.qbo_access import qbo_client
    from app.adapters.qbo_client import QboError
    from app.tools import order_log
    from app.tools.reconcile import compare, qbo_window, read_documents, read_log_orders, used_prefixes

    cfg = mapping(s.mapping_file)
    bar = Progress("reading order states", unit="records")
    states = await order_log.read_states(s.kafka_bootstrap_servers, s.app_id, lambda d, t: bar.update(d, t))
    bar.close()
    c = kafka_io.consumer(s.kafka_bootstrap_servers, "magqb-reconcile")
    await c.start()
    bar = Progress("reading the order log", unit="events")
    try:
        in_range, known = await read_log_orders(c, states, cfg, since, until, lambda d, t: bar.update(d, t))
    finally:
        bar.close()
        await kafka_io.close(c)
    lo, hi = qbo_window(since, until)
    try:
        async with qbo_client(s) as client:
            docs, reads = await read_documents(client, lo, hi)
    except TokenRefreshError as exc:
        fail(f"{exc}: `magqb token set` or `magqb connect` gives the realm a new refresh token")
    except QboError as exc:
        fail(f"QuickBooks refused the query: {exc}")
    # Every prefix in use now and every one an order or refund went out under before (numbers are for life).
    findings = compare(in_range, known, docs, (*cfg.doc_prefixes, *used_prefixes(states)))
    kinds = {k: sum(1 for f in findings if f.kind == k) for k in ("missing", "booked_twice", "total_differs",
                                                                    "not_voided", "refund_missing", "unknown")}
    rng = f"{since.isoformat()} .. {until.isoformat() if until else 'now'}"
    return findings, {"range": rng, "orders": len(in_range), "documents": len(docs), "qbo_reads": reads,
                      "findings": len(findings), **kinds}


async def _fix(s: Any, order_ids: list[str]) -> None:
    from app.adapters import kafka_io
    from app.cli.replay import _follow
    from app.tools import order_log
    from app.tools.replay import ReplayCheckpoint, Selection, run_replay

    sel = Selection(from_offset=0, orders=frozenset(order_ids))
    statuses = await order_log.order_statuses(s.kafka_bootstrap_servers, s.app_id)
    c = kafka_io.consumer(s.kafka_bootstrap_servers, "magqb-reconcile-fix")
    producer = kafka_io.producer(s.kafka_bootstrap_servers, "magqb-reconcile-fix", s.max_event_bytes)
    await c.start()
    await producer.start()
    try:
        checkpoint = ReplayCheckpoint(s.data_dir, sel, recheck=True, where=f"{s.kafka_bootstrap_servers}|{s.app_id}")
        progress = await run_replay(c, producer, sel, checkpoint, resume=False, recheck=True, statuses=statuses)
    finally:
        await kafka_io.close(producer)
        await kafka_io.close(c)
    click.echo(f"fix: replay {progress.replay_id} re-drove {progress.replayed} missing order(s); the worker looks "
               f"each one up before creating it ({progress.in_progress} in progress left to the worker)", err=True)
    await _follow(s, progress, 600.0)
    click.echo("fix: done; run the same reconcile again to check", err=True)
