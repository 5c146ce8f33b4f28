"""`magqb status`: one order's story from what Kafka holds — fast, without scanning the log.

The order-state row (found by reading the changelog backwards) carries the order's story: each event
received (topic, partition, offset), each command sent, each result. Commands still out are looked
for on the retry rungs between the workers' committed offsets and the end (that is all that waits
there), which gives their attempts and next retry time. Dead letters come from their topic.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from app import jsonutil, topics
from app.adapters import kafka_io
from app.domain.money import ZERO
from app.domain.order_flow import unseen_and_old
from app.domain.retry_ladder import attempts_of, due_of, history_of
from app.tools import order_log
from app.tools.dead_letters import read_log
from schemas.envelope import EnvelopeError, decode_envelope
from schemas.magento import MagentoOrder
from schemas.state import OrderState


async def pending_retries(bootstrap: str, app_id: str, rung_topics: tuple[str, ...],
                          request_ids: set[str]) -> list[dict[str, Any]]:
    """Commands of these request ids waiting on a retry rung: rung, attempts, due time, last error."""
    if not request_ids:
        return []
    out: list[dict[str, Any]] = []
    c = kafka_io.consumer(bootstrap, "magqb-status")
    await c.start()
    try:
        for rung in rung_topics:
            tps = await kafka_io.partitions(c, rung)
            if not tps:
                continue
            done = await kafka_io.committed(bootstrap, app_id, rung)
            firsts = await c.beginning_offsets(tps)
            ends = await c.end_offsets(tps)
            spans = [kafka_io.Span(tp, max(firsts[tp], done.get(tp.partition, 0)), ends[tp]) for tp in tps]
            async for batch in kafka_io.read_spans(c, spans):
                for r in batch:
                    try:
                        rid = jsonutil.loads(r.value or b"{}").get("request_id")
                    except (ValueError, AttributeError):
                        continue
                    if rid in request_ids:
                        headers = {k: v for k, v in r.headers}
                        history = history_of(headers)
                        out.append({"request_id": rid, "rung": rung, "attempts": attempts_of(headers),
                                    "next_retry_at": datetime.fromtimestamp(due_of(headers), UTC).isoformat(),
                                    "next_retry_in_seconds": round(max(0.0, due_of(headers) - time.time())),
                                    "last_error": str(history[-1].get("message", ""))[:300] if history else ""})
    finally:
        await kafka_io.close(c)
    return out


async def order_status(settings: Any, wanted: str) -> dict[str, Any] | None:
    bootstrap, app_id = settings.kafka_bootstrap_servers, settings.app_id
    found = await order_log.find_state(bootstrap, app_id, wanted)
    if found is None:
        return await _not_handled(settings, wanted)
    st = found.state
    events = [h.model_dump(mode="json") for h in st.history if h.what in ("order event", "later event")]
    story = [h.model_dump(mode="json") for h in st.history]
    waiting = set(st.outstanding) | {r for f in st.follow_ups for r in f.outstanding}
    retries = await pending_retries(bootstrap, app_id, tuple(r.topic for r in settings.retry_ladder), waiting)
    letters = [
        {"id": d.id, "status": status, "reason": d.reason, "command_type": d.command_type,
         "dead_at": d.dead_at.isoformat(), "attempts": len(d.attempts),
         "fault": (d.attempts[-1].fault if d.attempts else None),
         "last_error": d.attempts[-1].message[:300] if d.attempts else ""}
        for d, status in (await _letters(bootstrap, found.order_id))
    ]
    document = None
    if st.qbo_id:
        document = {"type": st.doc_type, "Id": st.qbo_id, "DocNumber": st.doc_number,
                    "TotalAmt": str(st.total_amt) if st.total_amt is not None else None,
                    # Booked under a number of QuickBooks' own: the company's custom transaction numbers are off.
                    "numbered_by_quickbooks": bool(st.doc_number) and not str(st.doc_number).startswith(
                        _prefixes(settings))}
    later = [{"kind": f.kind, "magento": f.ref, "status": f.status, "type": f.doc_type, "Id": f.qbo_id,
              "number": f.doc_number, "amount": str(f.total_amt) if f.total_amt is not None else None,
              "error": f.error} for f in st.follow_ups]
    return {
        "order_id": found.order_id, "order_ref": st.order_ref, "state": st.status, "later": later,
        "net": str(net_booked(st)) if st.qbo_id else None,
        "magento_net": str(net_in_magento(st)) if st.qbo_id else None,
        "updated_at": st.updated_at.isoformat(), "error": st.error, "duplicates_seen": st.duplicates_seen,
        "doc_type": st.doc_type, "doc_number": st.doc_number, "document": document,
        "outstanding_commands": sorted(waiting), "retries": retries, "events": events, "story": story,
        "dead_letters": letters,
    }


def _prefixes(settings: Any) -> tuple[str, ...]:
    """The installation's DocNumber prefixes (the mapping file's; the defaults when it cannot be read)."""
    from app.domain.mapping import MappingConfig
    from app.mapping_file import MappingFileError, load_mapping

    try:
        cfg = load_mapping(getattr(settings, "mapping_file", None))
    except MappingFileError:
        cfg = MappingConfig()
    return cfg.doc_prefixes or ("",)


def net_booked(st: OrderState) -> Decimal:
    """What the order's documents net to in QuickBooks: the sale (0 once voided) less its refunds."""
    voided = any(f.kind == "void" and f.status == "done" for f in st.follow_ups)
    sale = ZERO if voided else (st.total_amt or ZERO)
    return sale - sum((f.total_amt or ZERO for f in st.follow_ups if f.kind == "refund" and f.status == "done"), ZERO)


def net_in_magento(st: OrderState) -> Decimal:
    """What the order nets to in Magento as far as magqb has heard: its grand total (the booked document's, equal
    to the cent), nothing once cancelled, less every credit memo received, booked in QuickBooks or not yet."""
    if any(f.kind == "void" for f in st.follow_ups):
        return ZERO
    refunds = ZERO
    for f in st.follow_ups:
        if f.kind != "refund":
            continue
        if f.total_amt is not None:
            refunds += f.total_amt
        elif isinstance(f.body, dict) and f.body.get("grand_total") is not None:
            try:
                refunds += Decimal(str(f.body["grand_total"]))
            except ArithmeticError:
                continue
    return (st.total_amt or ZERO) - refunds


async def _letters(bootstrap: str, order_id: str) -> list[tuple[Any, str]]:
    log = await read_log(bootstrap)
    return [(d, log.status(d)) for d in log.letters if d.order_id == order_id]


async def _not_handled(settings: Any, wanted: str) -> dict[str, Any] | None:
    """No state: maybe received and not handled yet (a worker is behind or down)."""
    if not wanted.isdigit():
        return None
    bootstrap = settings.kafka_bootstrap_servers
    c = kafka_io.consumer(bootstrap, "magqb-status")
    await c.start()
    try:
        tps = await kafka_io.partitions(c, topics.ORDERS)
        part = kafka_io.partition_of(wanted.encode(), len(tps)) if tps else 0
        records = await order_log.records_of(c, topics.ORDERS, wanted, None, partitions=[part])
    finally:
        await kafka_io.close(c)
    if not records:
        return None
    events = []
    notices = []
    old: list[str] = []  # orders of before magqb a change feed reported: not booked on purpose
    max_age = timedelta(hours=settings.unseen_order_max_age_hours)
    for r in records:
        try:
            data = jsonutil.loads(r.value or b"{}")
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        how = f"{data.get('source', '?')} event {data.get('event_id', '?')}"
        try:
            env = decode_envelope(r.value)
            order = MagentoOrder.model_validate(env.body) if env.kind == "order" else None
        except (EnvelopeError, ValidationError):
            env, order = None, None
        if env is not None and order is not None and unseen_and_old(
                None, order, env.source, env.received_at, max_age, env.replay_id, env.retry_of, env.origin):
            day = order.created_at.date() if order.created_at else None
            old.append(f"placed {order.created_at} (UTC), reported changed by {env.origin or env.source}: an order of "
                       f"before magqb, not booked; `magqb import --since {day} --until {day + timedelta(days=1) if day else ''}` "
                       "books it on purpose")
            events.append({"at": data.get("received_at"), "what": "order event", "detail": f"{how}: {old[-1]}",
                           "topic": r.topic, "partition": r.partition, "offset": r.offset})
            continue
        notice = data.get("notice") if data.get("kind") == "notice" else None
        if isinstance(notice, dict):
            # A source told of the order and nothing is to be booked (a notification REST could not back).
            notices.append(f"{notice.get('what', '?')}: {notice.get('detail', '')}")
            events.append({"at": data.get("received_at"), "what": "notice", "detail": f"{notices[-1]} ({how})",
                           "topic": r.topic, "partition": r.partition, "offset": r.offset})
            continue
        events.append({"at": data.get("received_at"), "what": "order event", "detail": f"{how}: not handled yet",
                       "topic": r.topic, "partition": r.partition, "offset": r.offset})
    if old and len(notices) + len(old) == len(events):
        state, error = "before_magqb", old[-1]
    elif len(notices) == len(events):
        state, error = "noted", f"no order event came, only notices; the last: {notices[-1]}"
    else:
        state, error = "received", "received but no worker has handled it yet (is a worker running? `magqb replay` is not needed)"
    return {"order_id": wanted, "order_ref": "?", "state": state, "events": events, "story": events,
            "retries": [], "dead_letters": [], "document": None, "outstanding_commands": [], "error": error}
