"""What a worker tells Prometheus besides its counters, every MONITOR_SECONDS: consumer lag of the
partitions it owns, retries waiting per rung, orders by state and the oldest order on its way.

Each worker reports only the partitions assigned to it, so sums across workers are exact; a dead
worker's partitions are reported again by their next owner within a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app import metrics, topics
from app.adapters import kafka_io, kafka_security
from app.adapters.table_rows import scan
from app.domain.retry_ladder import Rung
from app.domain.state_tally import StateTally
from app.domain.stuck import stuck_after

log = logging.getLogger("magqb.monitor")
MONITOR_SECONDS = 15.0


class Monitor:
    def __init__(self, app: Any, order_state: Any, tally: StateTally, bootstrap: str, group: str,
                 ladder: tuple[Rung, ...], every: float = MONITOR_SECONDS, partitions: int = 8,
                 stuck_minutes: float | None = None) -> None:
        self.app = app
        self.tally = tally
        self._partitions: dict[Any, int] = {}  # the memory store's keys: their partition, hashed once
        self.stuck_after = stuck_after(ladder, stuck_minutes)
        self.every = every
        self.partitions = partitions
        self.order_state = order_state
        self.bootstrap = bootstrap
        self.group = group
        self.rungs = {r.topic: r.label for r in ladder}
        self.watched = {topics.ORDERS, topics.RESULTS, topics.COMMANDS, *self.rungs}
        self._labels: set[tuple[str, str, str]] = set()

    def _owned(self) -> set[int]:
        """The order partitions this worker owns (a row's table partition is its order event's partition)."""
        assigned = self.app.consumer.assignment() if self.app.consumer else ()
        return {tp.partition for tp in assigned if tp.topic == topics.ORDERS}

    def _settled(self) -> bool:
        return not (getattr(self.app, "rebalancing", False) or getattr(self.app, "in_recovery", False))

    def revoked(self, partitions: set[int]) -> None:
        """Partitions taken away: their counts are the next owner's (and ours read again if they come back)."""
        for p in partitions:
            self.tally.drop(p)

    async def states(self) -> None:
        """Orders by state and the oldest order on its way, over the partitions this worker owns (its
        table also holds standby copies of others'). Counts are kept as rows change (StateTally); a
        partition is read once, when it becomes ours and its rows are recovered."""
        owned = self._owned()
        self.revoked(self.tally.known() - owned)
        if self._settled():
            generation = getattr(self.app, "consumer_generation_id", None)

            def still() -> bool:
                return self._settled() and getattr(self.app, "consumer_generation_id", None) == generation

            for p in sorted(owned - self.tally.complete()):
                if not await scan(self.order_state, p, self.partitions, self.tally, still, self._partitions):
                    break
        # Mid-rebalance or recovering: the partitions already counted (a partition being recovered is
        # left out until it is read, rather than counted by two workers).
        now = datetime.now(UTC)
        report = self.tally.report(owned, now, self.stuck_after)
        metrics.ORDERS_STUCK.set(report.stuck)
        for name, n in report.counts.items():
            metrics.ORDERS_BY_STATE.labels(state=name).set(n)
        oldest = report.oldest
        metrics.OLDEST_UNBOOKED_SECONDS.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

    async def lag(self, admin: AIOKafkaAdminClient, consumer: Any) -> None:
        assigned = [tp for tp in (self.app.consumer.assignment() if self.app.consumer else ())
                    if tp.topic in self.watched]
        tps = [TopicPartition(tp.topic, tp.partition) for tp in assigned]
        seen: set[tuple[str, str, str]] = set()
        waiting: Counter[str] = Counter({label: 0 for label in self.rungs.values()})
        if tps:
            committed = await admin.list_consumer_group_offsets(self.group, partitions=tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                behind = max(0, ends[tp] - done)
                key = (self.group, tp.topic, str(tp.partition))
                metrics.CONSUMER_LAG.labels(*key).set(behind)
                seen.add(key)
                if tp.topic in self.rungs:
                    waiting[self.rungs[tp.topic]] += behind
        for gone in self._labels - seen:  # partitions moved to another worker: theirs to report now
            metrics.CONSUMER_LAG.remove(*gone)
        self._labels = seen
        for label, n in waiting.items():
            metrics.RETRIES_WAITING.labels(rung=label).set(n)

    async def run(self) -> None:
        """Rounds until cancelled. Nothing here may stop the worker: a broker that is away costs the
        figures of a round (clients are made again next round), never an order."""
        admin: AIOKafkaAdminClient | None = None
        consumer: Any = None
        try:
            while True:
                t0 = time.monotonic()
                try:
                    await self.states()
                    if admin is None:
                        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                                    **kafka_security.client_kwargs(self.bootstrap),
                                                    client_id=f"{self.group}-monitor")
                        await admin.start()
                        consumer = kafka_io.consumer(self.bootstrap, f"{self.group}-monitor")
                        await consumer.start()
                    await self.lag(admin, consumer)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the figures wait for the next round; the worker goes on
                    log.warning("monitor round failed (%s: %s); next in %.0fs", exc.__class__.__name__, exc,
                                self.every)
                    admin, consumer = await self._close(admin, consumer)
                await asyncio.sleep(max(0.5, self.every - (time.monotonic() - t0)))
        finally:
            await self._close(admin, consumer)

    @staticmethod
    async def _close(admin: AIOKafkaAdminClient | None, consumer: Any) -> tuple[None, None]:
        with contextlib.suppress(Exception):
            if consumer is not None:
                await kafka_io.close(consumer)
        with contextlib.suppress(Exception):
            if admin is not None:
                await admin.close()
        return None, None
