"""`magqb status ORDER`: one order's story."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from app.cli.common import fail, get_settings


@click.command()
@click.argument("order")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def status(order: str, as_json: bool) -> None:
    """Where one order stands: ORDER is its entity id or increment id.

    Every event seen for it (webhook, import, replay; topic, partition, offset, time), its state,
    each command and result, commands waiting on a retry rung (attempts, next retry time), its
    dead letters with their QuickBooks fault, its QuickBooks document (type, Id, DocNumber,
    TotalAmt), its credit memos, paid invoices and cancellation with theirs (RefundReceipt or
    CreditMemo, Payment, void) and what the order nets to. Reads the order-state changelog from its end: fast for a recent order.
    Exit status 1 when no such order is in the log.
    """
    s = get_settings()  # read-only: a log without the topics has no such order
    from app.tools.order_status import order_status

    info = asyncio.run(order_status(s, order.strip()))
    if info is None:
        fail(f"no order {order!r} in the log (entity id or increment id; `magqb import` brings history in)", 1)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(_text(info))


def _text(i: dict[str, Any]) -> str:
    lines = [f"order {i['order_ref']} (entity id {i['order_id']}): {i['state']}"]
    if i.get("error"):
        lines.append(f"  why: {i['error']}")
    doc = i.get("document")
    if doc:
        lines.append(f"  QuickBooks: {doc['type']} Id={doc['Id']} DocNumber={doc['DocNumber']} TotalAmt={doc['TotalAmt']}")
        if doc.get("numbered_by_quickbooks"):
            lines.append("  numbered by QuickBooks: the company's custom transaction numbers are off (Settings → Sales);"
                         " magqb finds its documents by their note, at one more read each")
    elif i.get("doc_number"):
        lines.append(f"  QuickBooks: not booked yet; it will be {i.get('doc_type')} DocNumber={i['doc_number']}")
    names = {"refund": "credit memo", "payment": "invoice paid", "void": "cancellation"}
    for f in i.get("later") or []:
        doc = f" → {f['type']} {f['number'] or ''} Id={f['Id'] or '-'} {f['amount'] or ''}".rstrip() if f.get("type") \
            else ""
        why = f" ({f['error']})" if f.get("error") else ""
        what = "cancellation" if f["kind"] == "void" else f"{names.get(f['kind'], f['kind'])} {f['magento']}"
        lines.append(f"  {what}: {f['status']}{doc}{' voided' if f['kind'] == 'void' and doc else ''}{why}")
    if i.get("later") and i.get("net") is not None:
        lines.append(f"  net in QuickBooks: {i['net']} (the sale, 0 once voided, less refunds booked)")
    if i.get("duplicates_seen"):
        lines.append(f"  duplicate deliveries seen: {i['duplicates_seen']}")
    lines.append("  story:")
    for h in i.get("story") or []:
        where = f" [{h['topic']}/{h['partition']}@{h['offset']}]" if h.get("topic") else ""
        lines.append(f"    {str(h.get('at', ''))[:19].replace('T', ' ')}  {h['what']:<11} {h['detail']}{where}")
    if not i.get("story"):
        lines.append("    (no story kept: the order was handled by a worker older than this one)")
    for r in i.get("retries") or []:
        lines.append(f"  waiting on {r['rung']}: request {r['request_id'][:16]}… attempt {r['attempts']}, next try at "
                     f"{r['next_retry_at'][:19]} (in {r['next_retry_in_seconds']}s): {r['last_error']}")
    if i.get("outstanding_commands") and not i.get("retries"):
        lines.append(f"  commands out: {len(i['outstanding_commands'])} (being sent now or answered soon)")
    for d in i.get("dead_letters") or []:
        fault = d.get("fault") or {}
        code = f" fault {fault.get('code')}" if fault else ""
        lines.append(f"  dead letter {d['id']} ({d['status']}): {d['reason']} on {d['command_type']} after "
                     f"{d['attempts']} attempt(s){code}: {d['last_error']}")
    return "\n".join(lines)
