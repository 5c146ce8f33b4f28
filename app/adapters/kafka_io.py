"""Plain aiokafka clients for the operator's tools (import, replay, status, reconcile).

The worker reads through Faust; the tools read topics directly, between offsets fixed when they
start, so a tool ends even while the ingress keeps writing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from app.adapters import kafka_security

_PARTITIONER = DefaultPartitioner()


def producer(bootstrap: str, client_id: str, max_request_size: int = 1_000_000) -> AIOKafkaProducer:
    """acks=all and idempotent, as the ingress: what a tool publishes is as durable as a webhook."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **kafka_security.client_kwargs(bootstrap), acks="all",
                            enable_idempotence=True, linger_ms=5,
                            max_request_size=max_request_size, client_id=client_id)


def consumer(bootstrap: str, client_id: str) -> AIOKafkaConsumer:
    """No group, no commits: reading never moves the workers' offsets."""
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_security.client_kwargs(bootstrap),
                            enable_auto_commit=False, group_id=None,
                            client_id=client_id, auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
                            fetch_max_bytes=32 << 20)


def partition_of(key: bytes, count: int) -> int:
    """The partition a producer's default partitioner (murmur2, as Kafka's Java client) puts `key` in:
    where the ingress writes an order, faust a table row keyed the same way, the orders agent a command."""
    every = list(range(count))
    return int(_PARTITIONER(key, every, every))


@dataclass(frozen=True)
class Span:
    """Offsets [start, end) of one partition."""

    tp: TopicPartition
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


async def partitions(c: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = c.partitions_for_topic(topic)
    if not parts:
        await c._client.force_metadata_update()  # a consumer without a subscription knows no topics yet
        parts = c.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def offsets_at(c: AIOKafkaConsumer, tps: Iterable[TopicPartition], when_ms: int | None) -> dict[TopicPartition, int]:
    """The first offset at or after `when_ms` per partition (the end offset where none is); None = the end."""
    tps = list(tps)
    ends = await c.end_offsets(tps)
    if when_ms is None:
        return dict(ends)
    found = await c.offsets_for_times({tp: when_ms for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}


async def whole(c: AIOKafkaConsumer, topic: str) -> list[Span]:
    """Every partition of `topic` from its first retained offset to its end now."""
    tps = await partitions(c, topic)
    if not tps:
        return []
    starts = await c.beginning_offsets(tps)
    ends = await c.end_offsets(tps)
    return [Span(tp, starts[tp], ends[tp]) for tp in tps]


async def read_spans(c: AIOKafkaConsumer, spans: list[Span], batch: int = 5000,
                     idle_timeout: float = 10.0) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Every record of the spans, in batches (partition order is kept; partitions interleave).
    A partition is done when the consumer's position reaches its end: compaction and transaction
    markers leave gaps, so the last offset read need not be end - 1."""
    todo = {s.tp: s for s in spans if s.size > 0}
    if not todo:
        return
    c.assign(list(todo))
    for tp, span in todo.items():
        c.seek(tp, span.start)
    quiet = 0.0
    while todo:
        got = await c.getmany(*todo, timeout_ms=1000, max_records=batch)
        out: list[ConsumerRecord[bytes, bytes]] = []
        for tp, records in got.items():
            if tp in todo:
                end = todo[tp].end
                out.extend(r for r in records if r.offset < end)
        for tp in list(todo):
            if await c.position(tp) >= todo[tp].end:
                del todo[tp]
                c.pause(tp)
        if out:
            quiet = 0.0
            yield out
        elif todo:
            quiet += 1.0
            if quiet >= idle_timeout:  # an end offset from a moment ago is reachable: the broker is gone
                raise TimeoutError(f"no records from {', '.join(f'{tp.topic}/{tp.partition}' for tp in todo)} "
                                   f"for {idle_timeout:.0f}s")
        await asyncio.sleep(0)


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets of `topic`, by partition (what the workers finished)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="magqb-tools",
                                **kafka_security.client_kwargs(bootstrap))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


async def close(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Stop a client. aiokafka 0.14's consumer stop() re-raises the CancelledError of its own
    committed-offsets task when stopped right after start (no group): that one is not ours to raise."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
