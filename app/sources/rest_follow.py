"""`magqb follow`: the REST follower, the safety net under every webhook.

Every MAGQB_FOLLOW_INTERVAL it reads what changed in Magento since its cursor — orders by
`updated_at`, credit memos by `created_at`, paid invoices by `updated_at` — and publishes each as the
webhooks would (`source` `rest-follow`, keyed by the order). The orders agent books an order once
however many sources tell it, so a delivery a webhook dropped is booked within one interval, and one
that came both ways is booked once.

The cursor lives on the compacted topic `magqb.follow-cursor`: it moves only after a page's events
are acknowledged by Kafka, so a follower killed mid-pass costs the next one (on any host) a page
read again, never an order skipped. In the worker it runs on the group's leader only; `magqb follow
--once` runs one pass for cron.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app import jsonutil, metrics, topics
from app.adapters import kafka_io
from app.adapters.magento_api import MagentoClient
from app.domain.follow import STREAMS, StreamPass, first_cursor
from app.domain.order_search import magento_time
from app.tools.importer import event_record, unchecked_record
from schemas.envelope import EventKind
from schemas.follow import FollowCursor

log = logging.getLogger("magqb.follow")
SOURCE = "rest-follow"
OVERLAP_SECONDS = 30.0  # updated_at has one-second resolution, and a row may commit well after the time it carries


class CursorStore:
    """The follower's cursor on `magqb.follow-cursor`, keyed by the store's REST base URL."""

    def __init__(self, producer: AIOKafkaProducer, bootstrap: str, base_url: str) -> None:
        self._producer = producer
        self._bootstrap = bootstrap
        self.key = base_url.rstrip("/").encode()

    async def load(self) -> FollowCursor | None:
        consumer: AIOKafkaConsumer = kafka_io.consumer(self._bootstrap, "magqb-follow-cursor")
        await consumer.start()
        latest: bytes | None = None
        try:
            async for batch in kafka_io.read_spans(consumer, await kafka_io.whole(consumer, topics.FOLLOW_CURSOR)):
                for record in batch:
                    if record.key == self.key:
                        latest = record.value
        finally:
            await kafka_io.close(consumer)
        if not latest:
            return None
        try:
            return FollowCursor.model_validate(jsonutil.loads(latest))
        except ValueError as exc:
            # A cursor this version cannot read: start over from the look-back (re-publishing is harmless).
            log.warning("the follower's cursor on %s is unreadable (%s): starting from the look-back",
                        topics.FOLLOW_CURSOR, str(exc).splitlines()[0])
            return None

    async def save(self, cursor: FollowCursor) -> None:
        await self._producer.send_and_wait(topics.FOLLOW_CURSOR, jsonutil.dumps(cursor.model_dump(mode="json")),
                                           key=self.key)


@dataclass
class PassSummary:
    published: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    failed: list[str] = field(default_factory=list)  # "kind entity_id: reason", the first 100
    cursor: FollowCursor | None = None

    @property
    def total(self) -> int:
        return sum(self.published.values())


class Follower:
    def __init__(self, client: MagentoClient, producer: AIOKafkaProducer, store: CursorStore, max_event_bytes: int,
                 lookback: timedelta = timedelta(hours=24), page_size: int = 100,
                 overlap_seconds: float = OVERLAP_SECONDS, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.producer = producer
        self.store = store
        self.max_event_bytes = max_event_bytes
        self.lookback = lookback
        self.page_size = page_size
        self.overlap = overlap_seconds
        self.clock = clock
        self.label = client.base_url

    def fresh_cursor(self, since: datetime | None = None) -> FollowCursor:
        start = first_cursor(since or self.clock() - self.lookback)
        return FollowCursor(base_url=self.client.base_url, orders=start, creditmemos=start, invoices=start)

    async def run_pass(self, since: datetime | None = None, on_page: Callable[[PassSummary], None] = lambda s: None
                       ) -> PassSummary:
        """Read every stream from its cursor to the end, publishing what is new; the cursor moves
        after each page is acknowledged. `since` starts over from that time (UTC). A stream that fails
        does not hold the others up; the pass then raises the first failure, and is not complete."""
        began = self.clock()
        cursor = None if since is not None else await self.store.load()
        if cursor is None:
            cursor = self.fresh_cursor(since)
            log.info("follower starts at %s (UTC) for %s", cursor.orders.at, self.client.base_url)
        summary = PassSummary()
        requests_before = self.client.requests
        # Rows stamped in the future (a clock or an import tool gone wrong) must not move the cursor past now.
        ceiling = magento_time(began + timedelta(minutes=5))
        failure: Exception | None = None
        for stream in STREAMS:
            step = StreamPass.start(stream, getattr(cursor, stream.name), self.overlap, self.page_size)
            try:
                while not step.done:
                    page = await self.client.search(stream.name, step.next_params(), f"{stream.name} since {step.since}")
                    fresh = step.take(page.items)
                    await self._publish(fresh, stream.kind, summary)  # type: ignore[arg-type]
                    cursor = cursor.model_copy(update={stream.name: step.cursor(self.overlap, ceiling),
                                                       "published": cursor.published + len(fresh)})
                    await self.store.save(cursor)
                    on_page(summary)
            except Exception as exc:  # noqa: BLE001 - the other streams go on; the first failure is raised below
                metrics.FOLLOW_FAILURES.inc()
                log.error("follower: %s stopped at %s (UTC): %s", stream.name, step.since, exc)
                failure = failure or exc
        summary.requests = self.client.requests - requests_before
        if failure is not None:
            raise failure
        cursor = cursor.model_copy(update={"caught_up_at": began, "passes": cursor.passes + 1})
        await self.store.save(cursor)
        summary.cursor = cursor
        metrics.FOLLOW_LAST_PASS.labels(store=self.label).set(time.time())
        caught_up = began.timestamp()
        metrics.FOLLOW_LAG.labels(store=self.label).set_function(lambda: max(0.0, time.time() - caught_up))
        if summary.total:
            log.info("follower pass: %s published (%d request(s) to Magento)",
                     ", ".join(f"{n} {k}" for k, n in summary.published.items()), summary.requests)
        return summary

    async def _publish(self, rows: list[dict[str, object]], kind: EventKind, summary: PassSummary) -> None:
        futures = []
        for raw in rows:
            record = event_record(raw, self.max_event_bytes, SOURCE, kind)
            ref = f"{kind} {raw.get('entity_id', '?')}"
            if isinstance(record, str):
                if len(summary.failed) < 100:
                    summary.failed.append(f"{ref}: {record}")
                log.warning("order_id=%s %s from REST is not bookable: %s", raw.get("order_id") or raw.get("entity_id"),
                            ref, record)
                # On the log all the same, where the orders agent dead-letters it with the field paths: a
                # row skipped here would be seen by no one (too large to keep is the one exception).
                unchecked = unchecked_record(raw, self.max_event_bytes, SOURCE, kind)
                if unchecked is None:
                    metrics.FOLLOW_SKIPPED.inc()
                    log.error("order_id=%s %s from REST cannot be kept on the log at all: skipped (book it by hand)",
                              raw.get("order_id") or raw.get("entity_id"), ref)
                    continue
                record = unchecked
            key, value = record
            futures.append(await self.producer.send(topics.ORDERS, value, key=key.encode()))
        for fut in futures:
            await fut  # the page is durable before the cursor passes it
        if futures:
            summary.published[kind] = summary.published.get(kind, 0) + len(futures)
            metrics.FOLLOW_PUBLISHED.labels(kind=kind).inc(len(futures))

    def stop_reporting(self) -> None:
        """This worker no longer follows (leadership moved): its figures would only go stale."""
        for gauge in (metrics.FOLLOW_LAG, metrics.FOLLOW_LAST_PASS):
            try:
                gauge.remove(self.label)
            except KeyError:
                pass
