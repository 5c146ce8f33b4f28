"""Reading what the worker knows, from Kafka, without the worker: order states and order events.

The order-state table lives in its changelog topic (`<app id>-order_state-changelog`, compacted,
key = the JSON of the order id). Tools read it directly: all of it (replay dry runs, reconcile), or
backwards from the end until one order turns up (`magqb status`, fast for a recent order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from app import jsonutil
from app.adapters import kafka_io
from schemas.state import OrderState


def changelog(app_id: str) -> str:
    return f"{app_id}-order_state-changelog"


def state_key(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        key = jsonutil.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    return str(key)


def parse_state(raw: bytes | None) -> OrderState | None:
    """A changelog value as an OrderState; None for a tombstone or a row this version cannot read."""
    if not raw:
        return None
    try:
        return OrderState.model_validate(jsonutil.loads(raw))
    except (ValueError, ValidationError):
        return None


async def _read_changelog(bootstrap: str, app_id: str,
                          on_progress: Callable[[int, int], None], table: str = "order_state") -> dict[str, bytes | None]:
    """A table's changelog end to end: the last value of each key (None: a tombstone)."""
    c = kafka_io.consumer(bootstrap, "magqb-tools-states")
    await c.start()
    raw: dict[str, bytes | None] = {}
    try:
        spans = await kafka_io.whole(c, f"{app_id}-{table}-changelog")
        total = sum(s.size for s in spans)
        done = 0
        async for batch in kafka_io.read_spans(c, spans):
            for r in batch:
                key = state_key(r.key)
                if key is not None:
                    raw[key] = r.value
            done += len(batch)
            on_progress(done, total)
    finally:
        await kafka_io.close(c)
    return raw


async def read_states(bootstrap: str, app_id: str,
                      on_progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, OrderState]:
    """Every order's current state (the changelog read end to end; the last record of a key wins)."""
    out = {}
    for key, value in (await _read_changelog(bootstrap, app_id, on_progress)).items():
        state = parse_state(value)
        if state is not None:
            out[key] = state
    return out


async def customer_emails(bootstrap: str, app_id: str) -> dict[str, str]:
    """QuickBooks customer id → the e-mail it was resolved for (the customers table): a booked order keeps its
    customer's id, not the order body, so this is how it is found by e-mail."""
    out: dict[str, str] = {}
    for email, value in (await _read_changelog(bootstrap, app_id, lambda d, t: None, "customers")).items():
        try:
            row = jsonutil.loads(value) if value else None
        except ValueError:
            continue
        if "@" in email and isinstance(row, dict) and isinstance(row.get("customer_id"), str):
            out[row["customer_id"]] = email
    return out


NEEDS_SALE_FACTS = "synced_needs_sale_facts"


async def order_statuses(bootstrap: str, app_id: str,
                         on_progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, str]:
    """Each order's status now (synced, requested, failed …): only the status is read of each row."""
    out: dict[str, str] = {}
    for key, value in (await _read_changelog(bootstrap, app_id, on_progress)).items():
        if not value:
            continue
        try:
            row = jsonutil.loads(value)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("status"), str):
            out[key] = row["status"]
            if row["status"] == "synced" and row.get("follow_ups") and not row.get("sale"):
                out[key] = NEEDS_SALE_FACTS  # booked by an older magqb; a replay of it lets its refunds go on
    return out


@dataclass(frozen=True)
class Found:
    order_id: str
    state: OrderState
    offset: int
    partition: int


async def find_state(bootstrap: str, app_id: str, wanted: str, chunk: int = 2000) -> Found | None:
    """The current state of one order, by entity id or increment id (order_ref). The changelog is read
    backwards a chunk at a time, so a recent order is found in one chunk: first the partition the
    order's key hashes to (an entity id), then every partition at once, the first hit ending the rest."""
    c = kafka_io.consumer(bootstrap, "magqb-tools-status")
    await c.start()
    try:
        spans = await kafka_io.whole(c, changelog(app_id))
    finally:
        await kafka_io.close(c)
    if not spans:
        return None
    if wanted.isdigit():
        # faust writes a row to the partition of the event that changed it: the order's own partition
        home = kafka_io.partition_of(wanted.encode(), len(spans))
        span = next(s for s in spans if s.tp.partition == home)
        found = await _scan_back(bootstrap, span.tp, span.start, span.end, wanted, chunk)
        if found is not None:
            return found
    scans = {asyncio.ensure_future(_scan_back(bootstrap, s.tp, s.start, s.end, wanted, chunk)) for s in spans}
    try:
        while scans:
            done, scans = await asyncio.wait(scans, return_when=asyncio.FIRST_COMPLETED)
            hits = [hit for hit in (t.result() for t in done) if hit is not None]
            if hits:
                return max(hits, key=lambda f: f.state.updated_at)
        return None
    finally:
        for t in scans:
            t.cancel()
        await asyncio.gather(*scans, return_exceptions=True)


async def _scan_back(bootstrap: str, tp: TopicPartition, start: int, end: int, wanted: str,
                     chunk: int) -> Found | None:
    c = kafka_io.consumer(bootstrap, "magqb-tools-status")
    await c.start()
    try:
        hi = end
        while hi > start:
            lo = max(start, hi - chunk)
            last: Found | None = None
            async for batch in kafka_io.read_spans(c, [kafka_io.Span(tp, lo, hi)]):
                for r in batch:
                    key = state_key(r.key)
                    if key is None:
                        continue
                    if key == wanted:
                        state = parse_state(r.value)
                        last = Found(key, state, r.offset, tp.partition) if state else None
                    elif r.value and wanted.encode() in r.value:
                        state = parse_state(r.value)
                        if state is not None and state.order_ref == wanted:
                            last = Found(key, state, r.offset, tp.partition)
            if last is not None:
                return last
            hi = lo
        return None
    finally:
        await kafka_io.close(c)


async def records_of(c: AIOKafkaConsumer, topic: str, key: str, since_ms: int | None,
                     match: Callable[[ConsumerRecord[bytes, bytes]], bool] | None = None,
                     limit: int = 200, partitions: list[int] | None = None) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of `topic` keyed `key` written since `since_ms` (None: from the start)."""
    tps = [tp for tp in await kafka_io.partitions(c, topic) if partitions is None or tp.partition in partitions]
    starts = await kafka_io.offsets_at(c, tps, since_ms) if since_ms is not None else await c.beginning_offsets(tps)
    ends = await c.end_offsets(tps)
    spans = [kafka_io.Span(tp, starts[tp], ends[tp]) for tp in tps]
    found: list[ConsumerRecord[bytes, bytes]] = []
    want = key.encode()
    async for batch in kafka_io.read_spans(c, spans):
        for r in batch:
            if r.key == want and (match is None or match(r)):
                found.append(r)
    return found[-limit:]
