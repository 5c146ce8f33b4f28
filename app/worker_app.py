"""The Faust app: topics, tables and agents wired together for `magqb worker`."""

from __future__ import annotations

from functools import partial
from typing import Any

import faust
from mode.utils.objects import cached_property

from agents.context import WorkerContext, raw_topic
from app import topics
from app.adapters.faust_consumer import KeepingFlowControl, RewindingTransport
from app.adapters.ownership import Ownership
from app.domain.mapping import MappingConfig
from app.domain.state_tally import StateTally
from app.private_files import private_dir
from app.settings import Settings


class WorkerApp(faust.App):
    """faust.App whose consumer never leaves a fetched record behind (see app.adapters.faust_consumer)."""

    def _new_transport(self) -> Any:
        return RewindingTransport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> KeepingFlowControl:
        return KeepingFlowControl(loop=self.loop)


async def _end_offsets(bootstrap: str, app_id: str, tps: list[Any]) -> dict[Any, int]:
    """The partitions' log-end offsets, by a plain client of its own (faust's consumer is mid-rebalance)."""
    from aiokafka import TopicPartition

    from app.adapters import kafka_io

    consumer = kafka_io.consumer(bootstrap, f"{app_id}-ownership")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await kafka_io.close(consumer)


def order_state_store(settings: Settings) -> dict[str, Any]:
    """The orders' table's store: on disk, a RocksDB database per partition under the data dir, with one
    memory budget for all of them (app.adapters.rocks_store); customers and items stay in memory (a row
    per customer and SKU, not per order)."""
    if settings.table_store == "memory":
        return {}
    from app.adapters import rocks_store

    rocks_store.register()
    # "<scheme>:order_state": databases tabledir/order_state-<partition>.db ("<scheme>://" is a falsy URL
    # to faust, which then quietly keeps the table in memory).
    return {"store": f"{rocks_store.SCHEME}:order_state", "options": {
        "memory_mb": settings.table_memory_mb, "write_buffer_size": 4 * 1024 * 1024, "max_write_buffer_number": 2,
        "max_open_files": 256}}


def create_worker_app(settings: Settings, mapping: MappingConfig, web_port: int = 6066) -> WorkerContext:
    n = settings.kafka_partitions
    private_dir(settings.data_dir / "faust" / settings.app_id)  # faust makes only the last directory
    app = WorkerApp(
        settings.app_id,
        broker=settings.kafka_broker_url,
        broker_credentials=settings.kafka_security().faust_credentials(),
        # Per installation: two apps on one host (MAGQB_APP_ID, MAGQB_TOPIC_PREFIX) never share table files.
        datadir=str(settings.data_dir / "faust" / settings.app_id),
        store="memory://",  # customers and items: rebuilt from their changelogs on start (order_state_store)
        # A standby copy of other workers' order partitions, on disk: a takeover reads only the newest rows.
        table_standby_replicas=1,
        topic_partitions=n,
        topic_replication_factor=settings.kafka_replication_factor or 1,  # resolved by the caller (cluster_replication)
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        producer_max_request_size=settings.max_event_bytes,
        # On a rebalance faust waits for every in-flight event to be acked; with a batching
        # dispatcher and sleeping retry rungs that wait can deadlock. Our handlers are idempotent,
        # so a revoked partition's unacked events are simply delivered again to the new owner.
        stream_wait_empty=False,
        # A worker that dies (SIGKILL, lost host) holds its partitions until its session times
        # out; keep that short so the others (or its own restart) take over within seconds.
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.kafka_session_timeout_seconds / 4),
        consumer_auto_offset_reset="earliest",
        web_host="127.0.0.1",
        web_port=web_port,
        web_bind="127.0.0.1",
        autodiscover=False,
    )
    orders_and_results = raw_topic(app, topics.ORDERS, topics.RESULTS, partitions=n)
    commands = raw_topic(app, topics.COMMANDS, partitions=n)
    results = raw_topic(app, topics.RESULTS, partitions=n)
    table: dict[str, Any] = {"partitions": n}  # keys and values are JSON (faust's default for tables)
    orders_table = {**table, **order_state_store(settings)}
    # Every worker needs every customer and item id, whichever partitions it owns.
    global_table = {**table, "synchronize_all_active_partitions": True}
    ctx = WorkerContext(
        settings=settings,
        app=app,
        orders_and_results=orders_and_results,
        commands=commands,
        results=results,
        dead_letter=raw_topic(app, topics.DEAD_LETTER, partitions=1),
        # Names as in topics.TABLES: their changelog topics are created before the worker joins.
        order_state=app.Table("order_state", default=None, **orders_table),
        customers=app.GlobalTable("customers", default=None, **global_table),
        items=app.GlobalTable("items", default=None, **global_table),
        mapping=mapping,
        ownership=Ownership(app, partial(_end_offsets, settings.kafka_bootstrap_servers, settings.app_id),
                            session_timeout=settings.kafka_session_timeout_seconds),
        tally=StateTally(),
    )
    from agents.dispatcher import register_dispatcher
    from agents.follower import register_follower
    from agents.orders import register_orders_agent

    register_orders_agent(ctx)
    register_dispatcher(ctx)
    register_follower(ctx)

    from app import metrics

    # At 0 from the start: the first records Kafka deletes unhandled are an increase an alert sees.
    for topic in (topics.ORDERS, topics.RESULTS, topics.COMMANDS, *(r.topic for r in settings.retry_ladder)):
        metrics.RECORDS_EXPIRED_UNHANDLED.labels(topic=topic)

    from app.adapters.monitor import Monitor

    monitor = Monitor(app, ctx.order_state, ctx.tally, settings.kafka_bootstrap_servers, settings.app_id, settings.retry_ladder,
                      settings.monitor_seconds, settings.kafka_partitions, settings.stuck_after_minutes)

    last_generation: list[int | None] = [None]

    async def _uncount(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        # At each assignment, not each revocation: the eager protocol revokes everything every time, and a
        # partition handed straight back was nobody else's meanwhile (its counts stand) -- unless this worker
        # missed a generation (frozen, fenced), when any of them may have been someone else's.
        generation = getattr(app, "consumer_generation_id", None)
        ours = {tp.partition for tp in assigned if tp.topic == topics.ORDERS}
        previous, last_generation[0] = last_generation[0], generation
        missed = previous is None or generation is None or generation != previous + 1
        monitor.revoked(monitor.tally.known() - (set() if missed else ours))

    app.on_partitions_assigned.connect(_uncount)  # type: ignore[arg-type]  # mode's Signal types lag

    @app.task
    async def _monitor() -> None:
        await monitor.run()

    return ctx
