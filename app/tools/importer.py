"""`magqb import`: Magento's order history into `magento.orders`, exactly as the ingress would write it.

Each order becomes the ingress's envelope (`source: "import"`, keyed by `entity_id`) on the order's
partition; the orders agent books it once however often it arrives, so importing a range twice, or
a range whose orders came by webhook too, books nothing twice. A page's orders are acknowledged by
Kafka before the checkpoint moves past the page: an interrupted import resumes after the last
order of the last page wholly published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from app import jsonutil, topics
from app.adapters.magento_api import MagentoClient
from app.domain.order_search import OrderSearch, Pager
from app.ingress.server import DEAD_LETTER_RESERVE
from app.tools.checkpoint import Checkpoint
from schemas.envelope import EventKind, envelope_bytes
from schemas.magento import MagentoCreditMemo, MagentoInvoice, MagentoOrder

log = logging.getLogger("magqb.import")
SOURCE = "import"


@dataclass
class ImportProgress:
    """What the checkpoint file holds, and what the summary says."""

    search: str
    after_id: int = 0  # the last entity_id taken: the next page starts after it
    seen: int = 0
    total: int | None = None
    pages: int = 0
    published: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # "entity_id increment_id: reason", the first 100
    finished: bool = False


class ImportCheckpoint(Checkpoint[ImportProgress]):
    """One file per search under MAGQB_DATA_DIR/imports."""

    def __init__(self, data_dir: Path, search: OrderSearch) -> None:
        super().__init__(data_dir / "imports" / f"{search.fingerprint()}.json", ImportProgress)


def order_record(raw: dict[str, Any], max_event_bytes: int, run: str = "") -> tuple[str, bytes] | str:
    """(key, envelope) for one order of a search page, or why it cannot be imported. `run` marks the
    event as the import's (like a replay's): a parked order it brings again is booked under request
    ids of its own, its DocNumber looked up first; a booked one costs the worker nothing."""
    return event_record(raw, max_event_bytes, SOURCE, "order", **({"replay_id": run} if run else {}))


MODELS: dict[str, type[MagentoOrder | MagentoCreditMemo | MagentoInvoice]] = {
    "order": MagentoOrder, "creditmemo": MagentoCreditMemo, "invoice": MagentoInvoice}


def event_record(raw: dict[str, Any], max_event_bytes: int, source: str, kind: EventKind,
                 **extra: Any) -> tuple[str, bytes] | str:
    """(key, envelope) for an order, credit memo or invoice read from REST, exactly as the ingress
    writes it — or why it cannot be published."""
    if jsonutil.deeper_than(raw):
        return f"nested more than {jsonutil.MAX_DEPTH} levels: not a Magento {kind}"
    try:
        body = MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or f"({kind})"
        return f"not a Magento {kind}: {where}: {first['msg']} ({exc.error_count()} error(s))"
    _, value = envelope_bytes(raw, source, kind=kind, **extra)
    room = max_event_bytes - DEAD_LETTER_RESERVE
    if len(value) > room:
        return f"too large: {len(value)} bytes as an event, at most {room} fit"
    return body.key, value


def unchecked_record(raw: dict[str, Any], max_event_bytes: int, source: str, kind: EventKind) -> tuple[str, bytes] | None:
    """(key, envelope) of a row that is not a valid order, credit memo or invoice, keyed by its order so the
    orders agent dead-letters it where an operator sees it; None when it is too large to keep."""
    key = str(raw.get("order_id" if kind != "order" else "entity_id") or raw.get("entity_id") or "")
    if not key or jsonutil.deeper_than(raw):
        return None
    _, value = envelope_bytes(raw, source, kind=kind)
    if len(value) > max_event_bytes - DEAD_LETTER_RESERVE:
        return None
    return key, value


async def run_import(client: MagentoClient, producer: AIOKafkaProducer | None, search: OrderSearch,
                     checkpoint: ImportCheckpoint, max_event_bytes: int,
                     on_page: Callable[[ImportProgress], None] = lambda p: None,
                     resume: bool = True) -> ImportProgress:
    """Page through the search and publish every order; `producer=None` is a dry run (counts only)."""
    progress = (checkpoint.load() if resume else None) or ImportProgress(search=search.describe())
    pager = Pager(search.page_size, after_id=progress.after_id, seen=progress.seen, total=progress.total)
    while not pager.done():
        page = await client.orders_page(search, pager.after_id)
        orders = pager.take(page)
        progress.skipped += len(page.items) - len(orders)
        futures = []
        for raw in orders:
            record = order_record(raw, max_event_bytes, f"import-{search.fingerprint()}")
            if isinstance(record, str):
                progress.failed += 1
                ref = f"{raw.get('entity_id', '?')} {raw.get('increment_id', '?')}"
                if len(progress.failures) < 100:
                    progress.failures.append(f"{ref}: {record}")
                log.warning("order_id=%s order=%s not imported: %s", raw.get("entity_id", "?"),
                            raw.get("increment_id", "?"), record)
                continue
            key, value = record
            if producer is not None:
                futures.append(await producer.send(topics.ORDERS, value, key=key.encode()))
            progress.published += 1
        for fut in futures:
            await fut  # the page is durable before the checkpoint passes it
        progress.pages += 1
        progress.after_id, progress.seen, progress.total = pager.after_id, pager.seen, pager.total
        if producer is not None:
            checkpoint.save(progress)
        on_page(progress)
    progress.finished = True
    if producer is not None:
        checkpoint.save(progress)
    return progress
