"""`magqb replay`: re-feed past events of `magento.orders` through the pipeline, or say what would happen.

A replay reads a span of the log (from a time or an offset, to a time or the end as it was when the
replay started) and publishes each order's event again, marked with the replay's id. The orders
agent then books what is missing (a DocNumber lookup first: an earlier attempt may have landed),
maps parked orders again with the current mapping, and leaves booked orders alone — no QuickBooks
call, no state write. Each order is replayed once per run (its first event in the span).

`--dry-run` calls nothing and writes nothing: it reads the span and the order-state changelog and
runs the orders agent's own pure decision (`on_order`) with stand-in ids, which gives the document
type, DocNumber and total exactly as the worker would map them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from app import jsonutil, topics
from app.adapters import kafka_io
from app.domain.mapping import MappingConfig
from app.domain.order_flow import on_order
from app.tools.checkpoint import Checkpoint
from schemas.envelope import EnvelopeError, decode_envelope
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState

SOURCE = "replay"


@dataclass(frozen=True)
class Selection:
    """Which events: a start (time in ms, or one offset for every partition), an optional end time,
    optional order ids (entity or increment ids)."""

    from_time_ms: int | None = None
    from_offset: int | None = None
    to_time_ms: int | None = None
    orders: frozenset[str] = frozenset()

    def fingerprint(self) -> str:
        key = json.dumps([self.from_time_ms, self.from_offset, self.to_time_ms, sorted(self.orders)])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


async def plan_spans(c: AIOKafkaConsumer, sel: Selection) -> list[kafka_io.Span]:
    tps = await kafka_io.partitions(c, topics.ORDERS)
    if not tps:
        return []
    firsts = await c.beginning_offsets(tps)
    if sel.from_offset is not None:
        starts = {tp: max(firsts[tp], sel.from_offset) for tp in tps}
    else:
        starts = await kafka_io.offsets_at(c, tps, sel.from_time_ms)
    ends = await kafka_io.offsets_at(c, tps, sel.to_time_ms)
    return [kafka_io.Span(tp, starts[tp], max(starts[tp], ends[tp])) for tp in tps]


@dataclass
class Verdict:
    order_id: str
    order_ref: str
    outcome: str  # booked | would_book | would_park | in_progress | would_skip | unreadable
    detail: str = ""
    doc_type: str | None = None
    doc_number: str | None = None
    total: Decimal | None = None
    qbo_id: str | None = None
    partition: int | None = None
    offset: int | None = None


def classify(key: str, value: bytes | None, state: OrderState | None, cfg: MappingConfig, realm_id: str) -> Verdict:
    """What replaying this event would do, by the orders agent's own decision (ids stood in by names:
    the document's type, number and total do not depend on them)."""
    if state is not None and state.status == "synced":
        return Verdict(key, state.order_ref, "booked", f"{state.doc_type} Id={state.qbo_id} DocNumber="
                       f"{state.doc_number}", state.doc_type, state.doc_number, state.total_amt, state.qbo_id)
    if state is not None and state.status in ("resolving", "requested"):
        return Verdict(key, state.order_ref, "in_progress", f"{state.status}: commands out, not replayed")
    if state is not None and state.status == "skipped":
        # Cancelled: final (a parked one's document, if QuickBooks had one, voided on the way).
        return Verdict(key, state.order_ref, "would_skip", "cancelled in Magento before it was booked")
    try:
        envelope = decode_envelope(value)
        order = MagentoOrder.model_validate(envelope.body)
    except (EnvelopeError, ValidationError) as exc:
        return Verdict(key, "?", "unreadable", str(exc).splitlines()[0][:200])
    decision = on_order(state, order, envelope.body, envelope.event_id,
                        lambda k: CustomerEntry(customer_id=k, display_name=k), lambda n: ItemEntry(item_id=n),
                        cfg, realm_id, replay_id="dry-run")
    if decision.outcome == "requested" and decision.mapped is not None:
        doc = decision.mapped.document
        total = doc.computed_total()
        return Verdict(order.key, order.order_ref, "would_book", f"{decision.mapped.doc_type} DocNumber="
                       f"{doc.DocNumber} total={total}", decision.mapped.doc_type, doc.DocNumber, total)
    if decision.outcome == "skipped":
        return Verdict(order.key, order.order_ref, "would_skip", "cancelled in Magento before it was booked")
    if decision.parked is not None:
        return Verdict(order.key, order.order_ref, "would_park", f"{decision.parked.reason}: "
                       f"{decision.parked.message}"[:300])
    return Verdict(order.key, order.order_ref, decision.outcome or "?", "")


def is_order_event(value: bytes | None) -> bool:
    """A replay re-feeds orders: an order's credit memos and invoices wait in its state for its document
    (and a parked one comes back with `magqb dlq retry`). The envelope's kind comes before its payload."""
    if not value:
        return True  # an empty record is the order's problem to report (unreadable)
    head = value[:512]
    return b'"kind":' not in head or b'"kind":"order"' in head


def wanted(key: str, value: bytes | None, orders: frozenset[str]) -> bool:
    """Is this event one of the orders asked for (entity id = the record key, or increment id)?"""
    if not orders or key in orders:
        return True
    if not value:
        return False
    try:
        order = jsonutil.loads(value).get("order", {})
        return str(order.get("increment_id") or order.get("entity_id") or "") in orders
    except (ValueError, AttributeError):
        return False


def replayed_value(value: bytes, replay_id: str, recheck: bool = False, stuck: bool = False) -> bytes | None:
    """The event again, as a new event of this replay (the order, credit memo or invoice exactly as it was
    received)."""
    try:
        data = jsonutil.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get(str(data.get("kind") or "order")), dict):
        return None
    from datetime import UTC, datetime

    original = data.get("event_id")
    origin = data.get("origin") or data.get("source")
    data.update({"event_id": uuid.uuid4().hex, "received_at": datetime.now(UTC).isoformat(), "source": SOURCE,
                 "origin": origin if isinstance(origin, str) else None, "replay_id": replay_id, "replay_of": original,
                 "retry_of": None, "recheck": recheck, "stuck": stuck})
    return jsonutil.dumps(data)


@dataclass
class ReplayProgress:
    replay_id: str
    starts: dict[str, int] = field(default_factory=dict)  # "partition" → the span's first offset
    positions: dict[str, int] = field(default_factory=dict)  # "partition" → next offset to read
    ends: dict[str, int] = field(default_factory=dict)
    read: int = 0
    replayed: int = 0
    later: int = 0  # credit memos and invoices of the replayed orders, re-sent after them
    repeated: int = 0  # further events of an order already replayed in this run
    booked: int = 0  # orders already booked when the replay started: not published (the worker would ignore them)
    in_progress: int = 0  # orders whose commands are out: left to the worker
    unreadable: int = 0
    produced: dict[str, int] = field(default_factory=dict)  # "partition" → last offset written + 1
    finished: bool = False


class ReplayCheckpoint(Checkpoint[ReplayProgress]):
    """One file per replay (its selection, recheck or not, the cluster and app it ran on)."""

    def __init__(self, data_dir: Path, sel: Selection, recheck: bool = False, where: str = "",
                 stuck: bool = False) -> None:
        mode = f"{recheck}|stuck" if stuck else str(recheck)
        key = hashlib.sha256(f"{sel.fingerprint()}|{mode}|{where}".encode()).hexdigest()[:16]
        super().__init__(data_dir / "replays" / f"{key}.json", ReplayProgress)


async def latest_events(c: AIOKafkaConsumer, spans: list[kafka_io.Span],
                        orders: frozenset[str]) -> dict[str, tuple[int, int]]:
    """The newest event in the spans of each order asked for: order id → (partition, offset). A replay
    re-feeds an order's newest state — its cancellation, not the placement that came before it."""
    latest: dict[str, tuple[int, int]] = {}
    async for batch in kafka_io.read_spans(c, spans):
        for r in batch:
            key = r.key.decode(errors="replace") if r.key else ""
            if key and is_order_event(r.value) and wanted(key, r.value, orders):
                latest[key] = (r.partition, r.offset)
    return latest


IN_PROGRESS = ("resolving", "requested")


async def run_replay(c: AIOKafkaConsumer, producer: AIOKafkaProducer, sel: Selection, checkpoint: ReplayCheckpoint,
                     resume: bool = True, on_batch: Callable[[ReplayProgress, int], None] = lambda p, t: None,
                     recheck: bool = False, statuses: Mapping[str, str] | None = None,
                     stuck: bool = False) -> ReplayProgress:
    """Publish the newest selected event of each order again; the checkpoint moves only past what Kafka
    acknowledged.

    `statuses` (each order's status as the replay starts, app.tools.order_log.order_statuses): booked orders
    are left out — booked is final, and the worker would answer their events with nothing, so a
    replay of a year of booked orders costs a read of the log, not a trip through the workers (a
    recheck publishes them: asking again is its point). Orders in progress are left to the worker:
    their commands are out, and a new event would change nothing — unless `stuck` (`magqb replay --stuck`):
    then only they are published, marked so the worker sends their commands again (looking first)."""
    statuses = statuses or {}
    progress = checkpoint.load() if resume else None
    if progress is None:
        spans = await plan_spans(c, sel)
        progress = ReplayProgress(replay_id=uuid.uuid4().hex[:12],
                                  starts={str(s.tp.partition): s.start for s in spans},
                                  positions={str(s.tp.partition): s.start for s in spans},
                                  ends={str(s.tp.partition): s.end for s in spans})
        checkpoint.save(progress)
    tp_of = {p: TopicPartition(topics.ORDERS, int(p)) for p in progress.positions}
    # The newest event of each order over the whole span (a resumed run looks again from its start).
    latest = await latest_events(c, [kafka_io.Span(tp_of[p], progress.starts.get(p, progress.positions[p]),
                                                    progress.ends[p]) for p in tp_of], sel.orders)
    spans = [kafka_io.Span(tp_of[p], progress.positions[p], progress.ends[p]) for p in tp_of]
    total = sum(s.size for s in spans) + progress.read
    async for batch in kafka_io.read_spans(c, spans):
        futures = []
        for r in batch:
            key = r.key.decode(errors="replace") if r.key else ""
            progress.read += 1
            later = not is_order_event(r.value)
            if latest.get(key) != (r.partition, r.offset) and not (later and key in latest):
                if key in latest:
                    progress.repeated += 1
                continue
            # An order's credit memos and invoices go with it (each is known by its id: one already
            # handled is a no-op, one the worker lost is looked for in QuickBooks before it is booked).
            status = statuses.get(key)
            if stuck and (later or status not in IN_PROGRESS):
                continue  # moved on since the stuck ones were picked, or not the order's own event
            # Refunds and payments are of booked orders: their events go whatever the order's status
            # (the worker answers one it has handled with nothing, and books one it lost, looking first).
            if status == "synced" and not recheck and not later:
                progress.booked += 1
                continue
            if status in IN_PROGRESS and not later and not stuck:
                progress.in_progress += 1
                continue
            value = replayed_value(r.value or b"", progress.replay_id, recheck, stuck) if r.value else None
            if value is None:
                progress.unreadable += 1
                continue
            futures.append(await producer.send(topics.ORDERS, value, key=r.key))
            if later:
                progress.later += 1
            else:
                progress.replayed += 1
        for fut in futures:
            meta = await fut
            part = str(meta.partition)
            progress.produced[part] = max(progress.produced.get(part, 0), meta.offset + 1)
        for r in batch:
            progress.positions[str(r.partition)] = max(progress.positions[str(r.partition)], r.offset + 1)
        checkpoint.save(progress)
        on_batch(progress, total)
    progress.finished = True
    checkpoint.save(progress)
    return progress


def classify_many(todo: list[tuple[str, bytes | None, OrderState | None, int, int]], cfg: MappingConfig,
                  realm_id: str) -> list[Verdict]:
    """`classify` over a chunk (in a worker process: the mapping is the cost of a dry run)."""
    out = []
    for key, value, state, partition, offset in todo:
        v = classify(key, value, state, cfg, realm_id)
        v.partition, v.offset = partition, offset
        out.append(v)
    return out


MAP_CHUNK = 250


async def dry_run(c: AIOKafkaConsumer, sel: Selection, states: dict[str, OrderState], cfg: MappingConfig,
                  realm_id: str, on_verdict: Callable[[Verdict], None],
                  on_batch: Callable[[int, int], None] = lambda done, total: None,
                  processes: int | None = None) -> dict[str, int]:
    """What a replay of the selection would do, order by order (its newest event in the span). Booked
    and in-progress orders are told from their state; the others are mapped, in chunks, by a pool of
    `processes` (default: one per core) once there are enough of them to pay for it."""
    spans = await plan_spans(c, sel)
    total = sum(s.size for s in spans)
    latest = await latest_events(c, spans, sel.orders)
    counts: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    pool: ProcessPoolExecutor | None = None
    pending: list[asyncio.Future[list[Verdict]]] = []
    todo: list[tuple[str, bytes | None, OrderState | None, int, int]] = []
    workers = processes if processes is not None else (os.cpu_count() or 1)

    def tell(verdicts: list[Verdict]) -> None:
        for v in verdicts:
            counts[v.outcome] = counts.get(v.outcome, 0) + 1
            on_verdict(v)

    async def drain(keep: int) -> None:
        while len(pending) > keep:
            tell(await pending.pop(0))

    async def flush() -> None:
        nonlocal pool, todo
        chunk, todo = todo, []
        if workers <= 1 or (pool is None and len(latest) < 4 * MAP_CHUNK):
            tell(classify_many(chunk, cfg, realm_id))
            return
        if pool is None:
            pool = ProcessPoolExecutor(workers)
        pending.append(loop.run_in_executor(pool, classify_many, chunk, cfg, realm_id))
        await drain(2 * workers)

    done = 0
    try:
        async for batch in kafka_io.read_spans(c, spans):
            for r in batch:
                key = r.key.decode(errors="replace") if r.key else ""
                if latest.get(key) != (r.partition, r.offset):
                    continue
                state = states.get(key)
                if state is not None and state.status in ("synced", *IN_PROGRESS):
                    tell(classify_many([(key, r.value, state, r.partition, r.offset)], cfg, realm_id))
                    continue
                todo.append((key, r.value, state, r.partition, r.offset))
                if len(todo) >= MAP_CHUNK:
                    await flush()
            done += len(batch)
            on_batch(done, total)
        if todo:
            await flush()
        await drain(0)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return counts


def summary_line(counts: dict[str, Any]) -> str:
    order = ["booked", "would_book", "would_park", "in_progress", "would_skip", "unreadable"]
    names = {"booked": "already booked", "would_book": "would book", "would_park": "would park",
             "in_progress": "in progress", "would_skip": "would skip (cancelled)", "unreadable": "unreadable"}
    parts = [f"{counts.get(k, 0)} {names[k]}" for k in order if counts.get(k)]
    return ", ".join(parts) or "no orders in the span"
