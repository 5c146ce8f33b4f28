"""`magqb ingress` and `magqb worker`: the two long-running services."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import click

from app.cli.common import app_topics, check_magento_rest, check_port, fail, get_settings, retry_topics, serve_until_signal
from app.cli.common import mapping as mapping_

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger("magqb")

# ---------------------------------------------------------------- ingress


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--metrics-host", default=None,
              help="Interface of the --metrics-port listener [default: $MAGQB_METRICS_HOST or 127.0.0.1].")
@click.option("--metrics-port", type=int, default=None,
              help="Serve /metrics on this port (on --metrics-host) instead of the webhook port: use it when "
                   "the webhook port is public.")
def ingress(host: str, port: int, metrics_host: str | None, metrics_port: int | None) -> None:
    """Receive signed Magento webhooks and publish them to Kafka.

    POST /webhooks/magento/new-order (and order-cancelled, creditmemo-created,
    invoice-paid), /webhooks/mageos/<event>, /webhooks/adobe-commerce and
    /webhooks/adobe-io (docs/connect-your-store.md) answer 2xx only after Kafka
    acknowledged the event (acks=all); 401 bad signature, 400 not JSON, 408 body
    too slow, 413 too large, 422 not an order (with field paths), 503 (with
    Retry-After) Kafka or Magento's REST API unavailable. Also GET /healthz,
    /readyz and /metrics.
    """
    settings = get_settings()
    check_magento_rest(settings, "the ingress")
    if settings.adobe_webhook_public_key.strip():
        from app.sources.rsa import PublicKeyError, load_public_key

        try:
            load_public_key(settings.adobe_webhook_public_key)
        except PublicKeyError as exc:
            fail(f"cannot start the ingress: MAGQB_ADOBE_WEBHOOK_PUBLIC_KEY: {exc}")
    from app.logs import setup_logging

    setup_logging(settings.log_level)
    metrics_host = metrics_host or settings.metrics_host
    check_port(host, port, "the ingress")
    if metrics_port is not None:
        check_port(metrics_host, metrics_port, "the ingress's metrics listener")
    asyncio.run(_run_ingress(settings, host, port, metrics_host, metrics_port))


async def _run_ingress(settings: Any, host: str, port: int, metrics_host: str = "127.0.0.1",
                       metrics_port: int | None = None) -> None:
    from app.adapters.kafka_admin import BrokerUnavailable, ensure_topics
    from app.ingress.server import WEBHOOK_PATH, make_producer, serve, serve_metrics, stop_producer

    try:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            app_topics(settings),
            timeout=settings.kafka_connect_timeout_seconds,
        )
    except BrokerUnavailable as exc:
        fail(f"cannot start the ingress: {exc}")
    producer = make_producer(settings)
    await producer.start()
    metrics_runner = None
    try:
        runner = await serve(settings, producer, host, port, with_metrics=metrics_port is None)
        if metrics_port is not None:
            metrics_runner = await serve_metrics(metrics_host, metrics_port)
    except OSError as exc:
        await stop_producer(producer)
        fail(f"cannot start the ingress: {exc.strerror}")
    log.info("ingress ready: POST http://%s:%d%s (Kafka %s), metrics on http://%s:%d/metrics", host, port,
             WEBHOOK_PATH, settings.kafka_bootstrap_servers, metrics_host if metrics_port else host,
             metrics_port or port)
    try:
        await serve_until_signal(runner)
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await stop_producer(producer)
        log.info("ingress stopped")


# ---------------------------------------------------------------- worker


@click.command()
@click.option("--web-port", default=6066, show_default=True, type=int,
              help="Port of the worker's web server (Faust views and /metrics, loopback); one per worker.")
@click.option("--metrics-port", type=int, default=None,
              help="Also serve /metrics on this port of MAGQB_METRICS_HOST (default 127.0.0.1): the one Prometheus "
                   "scrapes from another host or container.")
def worker(web_port: int, metrics_port: int | None) -> None:
    """Run the stream processor: the orders agent and the QuickBooks dispatcher.

    Start as many as you like: Kafka shares the partitions among them.
    Local state (tables, token store) lives under MAGQB_DATA_DIR.
    """
    settings = get_settings()
    check_magento_rest(settings, "the worker")
    from app.logs import setup_logging
    from app.private_files import private_dir, private_umask

    setup_logging(settings.log_level)
    private_umask()
    private_dir(settings.data_dir)
    check_port("127.0.0.1", web_port, "the worker's web server")
    if metrics_port is not None:
        check_port(settings.metrics_host, metrics_port, "the worker's metrics listener")
    mapping = mapping_(settings.mapping_file)  # a bad file stops the worker before it touches Kafka

    from app import topics
    from app.adapters.kafka_admin import BrokerUnavailable, TopicLayoutError, cluster_replication, ensure_topics

    try:
        # faust's own topics (changelogs, the assignor's) get the same replication as the app's.
        rf = asyncio.run(cluster_replication(settings.kafka_bootstrap_servers, settings.kafka_replication_factor,
                                             settings.kafka_connect_timeout_seconds))
        settings = settings.model_copy(update={"kafka_replication_factor": rf})
        asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap_servers,
                topics.worker_topics(settings.app_id, settings.kafka_partitions, rf, retry_topics(settings)),
                timeout=settings.kafka_connect_timeout_seconds,
            )
        )
    except (BrokerUnavailable, TopicLayoutError) as exc:
        fail(f"cannot start the worker: {exc}")
    from aiokafka.errors import KafkaError

    from app.adapters.qbo_access import check_token_store
    from app.adapters.token_topic import TokenKeyError

    try:
        log.info("%s", asyncio.run(check_token_store(settings)))
    except TokenKeyError as exc:
        fail(f"cannot start the worker: {exc}")
    except (KafkaError, OSError) as exc:
        fail(f"cannot start the worker: the token topic cannot be read ({exc.__class__.__name__}: {exc})")

    import faust
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from app.worker_app import create_worker_app

    ctx = create_worker_app(settings, mapping, web_port=web_port)
    if settings.table_store == "rocksdb":
        _warm_up_table(settings, ctx.order_state)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr=settings.metrics_host)  # a thread: scrapes never wait on the loop
        except OSError as exc:
            fail(f"cannot start the worker's metrics listener on {settings.metrics_host}:{metrics_port}: {exc.strerror}")
        log.info("worker metrics on http://%s:%d/metrics", settings.metrics_host, metrics_port)

    @ctx.app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @ctx.app.task
    async def _install_task_dump() -> None:
        # `kill -USR1 <pid>`: every asyncio task's stack to the log, to see what a stuck worker waits on.
        import signal as _signal
        import sys as _sys

        def dump() -> None:
            tasks = asyncio.all_tasks()
            lines = []
            for task in tasks:
                chain: list[str] = []
                coro: Any = task.get_coro()
                while coro is not None and len(chain) < 30:
                    frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
                    if frame is not None:
                        chain.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}"
                                     f"({frame.f_code.co_name})")
                    coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
                lines.append(" > ".join(chain))
            print(f"asyncio tasks ({len(tasks)}):\n" + "\n".join(sorted(lines)), file=_sys.stderr, flush=True)
            print(_consumer_state(ctx.app), file=_sys.stderr, flush=True)

        asyncio.get_running_loop().add_signal_handler(_signal.SIGUSR1, dump)

    async def _ready(sender: Any, **kwargs: Any) -> None:
        assigned = ctx.app.consumer.assignment() if ctx.app.consumer else set()
        orders = sorted(tp.partition for tp in assigned if tp.topic == topics.ORDERS)
        log.info("worker ready: %s partition(s) %s assigned, web on http://127.0.0.1:%d", topics.ORDERS,
                 ",".join(map(str, orders)) or "none", web_port)

    ctx.app.on_rebalance_complete.connect(_ready)  # type: ignore[arg-type]  # mode's Signal types lag

    from app.logs import worker_logging_config

    faust.Worker(
        ctx.app, loglevel=settings.log_level.lower(), quiet=True,
        logging_config=worker_logging_config(settings.log_level),
    ).execute_from_commandline()


LOCK_WAIT_SECONDS = 30.0  # as faust waits for a locked table (30 tries a second apart)


def _warm_up_table(settings: Settings, table: Any) -> None:
    """The orders' table on disk brought up to its changelog's end before the worker joins (see
    app.adapters.table_warmup): a start or a takeover then books within seconds."""
    from aiokafka.errors import KafkaError

    from app.adapters.table_warmup import warm_up

    said = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - said[0] >= 5:
            said[0] = time.monotonic()
            log.info("orders' table on disk: %d of %d changelog records applied", done, total)

    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            done = asyncio.run(warm_up(table.data, table.changelog_topic.get_topic_name(),
                                       settings.kafka_bootstrap_servers, settings.kafka_partitions, progress))
            break
        except (KafkaError, OSError) as exc:
            # faust's own recovery reads what this could not: slower, never wrong
            log.warning("orders' table not warmed up (%s: %s): the worker recovers it as it joins",
                        exc.__class__.__name__, exc)
            return
        except Exception as exc:  # noqa: BLE001 - rocksdict raises bare Exceptions ("IO error: lock …")
            if "lock" not in str(exc).lower():
                fail(f"cannot start the worker: the orders' table under {settings.data_dir} cannot be opened: {exc}")
            if time.monotonic() > deadline:
                fail(f"cannot start the worker: its tables under {settings.data_dir} are open in another process "
                     "(each worker needs a MAGQB_DATA_DIR of its own)")
            time.sleep(1)  # the worker before us on this data dir may still be exiting
    if done.rows:
        log.info("orders' table on disk up to date: %d changelog records applied in %.1fs", done.rows, done.seconds)


# ---------------------------------------------------------------- tools


def _consumer_state(app: Any) -> str:
    """What the Kafka consumer holds, fetches and buffers: the other half of a stuck worker's story."""
    out = []

    def tps(values: Any) -> str:
        return ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in (values or ())))

    try:
        c = app.consumer
        out.append(f"assigned: {tps(c.assignment())}")
        out.append(f"active: {tps(c._active_partitions)}")
        out.append(f"paused: {tps(c._paused_partitions)}; buffered: {tps(c._buffered_partitions)}")
        out.append(f"flow_active={c.flow_active} can_resume_flow={c.can_resume_flow.is_set()} "
                   f"in_recovery={app.in_recovery} rebalancing={app.rebalancing}")
        ak = c._thread._consumer
        if ak is not None:
            out.append(f"aiokafka paused: {tps(ak.paused())}")
            out.append(f"faust read offsets: { {f'{tp.topic}/{tp.partition}': o for tp, o in c._read_offset.items()} }")
            out.append(f"faust committed: { {f'{tp.topic}/{tp.partition}': o for tp, o in c._committed_offset.items()} }")
            for tp in sorted(ak.assignment()):
                state = ak._subscription.subscription.assignment.state_value(tp)
                out.append(f"  {tp.topic}/{tp.partition}: position={getattr(state, '_position', '?')} "
                           f"highwater={ak.highwater(tp)} paused={getattr(state, 'paused', '?')} "
                           f"awaiting_reset={getattr(state, 'awaiting_reset', '?')}")
        for channel in app.topics._topics:
            queue = getattr(channel, "queue", None)
            out.append(f"channel {channel}: queued={queue.qsize() if queue is not None else '?'}")
    except Exception as exc:  # noqa: BLE001 - a diagnostic must never take the worker down
        out.append(f"(consumer state unavailable: {exc!r})")
    return "consumer state:\n" + "\n".join(out)


