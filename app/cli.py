"""`magqb`: the command line of the service and its local tools."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
import socket
import sys
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import click

from app import __version__

log = logging.getLogger("magqb")


def _fail(message: str) -> NoReturn:
    click.echo(f"magqb: {message}", err=True)
    sys.exit(2)


def _settings() -> Any:
    from app.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))


def _mapping(path: Path | None) -> Any:
    from app.mapping_file import MappingFileError, load_mapping

    try:
        return load_mapping(path)
    except MappingFileError as exc:
        _fail(str(exc))


def _retry_topics(settings: Any) -> tuple[str, ...]:
    return tuple(r.topic for r in settings.retry_ladder)


def _app_topics(settings: Any) -> Any:
    """The application's topics as the settings size them, retry rungs included."""
    from app import topics

    return topics.app_topics(settings.kafka_partitions, settings.kafka_replication_factor, _retry_topics(settings))


def _check_port(host: str, port: int, what: str) -> None:
    """Fail fast with a clear line rather than a traceback from deep inside a server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            _fail(f"cannot start {what}: {host}:{port} is not available ({exc.strerror})")


async def _serve_until_signal(runner: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


class _Commands(click.Group):
    """Loads `magqb sandbox` from app.sandbox only when it is asked for, so the service's own
    commands never import the sandbox."""

    lazy = {"sandbox": ("app.sandbox.cli", "sandbox")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name]
            command: click.Command = getattr(__import__(module, fromlist=[attr]), attr)
            return command
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="magqb")
def main() -> None:
    """magqb: every new Magento 2 order becomes exactly one QuickBooks Online
    SalesReceipt or Invoice, through Kafka.

    Settings come from the environment and a .env file in the current directory
    (see .env.example). A local stack is: Kafka (ops/kafka/start), `magqb sandbox`,
    `magqb ingress` and `magqb worker` — `make run` starts all four.
    """


# ---------------------------------------------------------------- ingress


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Interface of the --metrics-port listener.")
@click.option("--metrics-port", type=int, default=None,
              help="Serve /metrics on this port (on --metrics-host) instead of the webhook port: use it when "
                   "the webhook port is public.")
def ingress(host: str, port: int, metrics_host: str, metrics_port: int | None) -> None:
    """Receive signed Magento webhooks and publish them to Kafka.

    POST /webhooks/magento/new-order answers 202 only after Kafka acknowledged
    the order (acks=all); 401 bad signature, 400 not JSON, 408 body too slow,
    413 too large, 422 not an order (with field paths), 503 Kafka unavailable.
    Also GET /healthz, /readyz and /metrics.
    """
    settings = _settings()
    from app.logs import setup_logging

    setup_logging(settings.log_level)
    _check_port(host, port, "the ingress")
    if metrics_port is not None:
        _check_port(metrics_host, metrics_port, "the ingress's metrics listener")
    asyncio.run(_run_ingress(settings, host, port, metrics_host, metrics_port))


async def _run_ingress(settings: Any, host: str, port: int, metrics_host: str = "127.0.0.1",
                       metrics_port: int | None = None) -> None:
    from app.adapters.kafka_admin import BrokerUnavailable, ensure_topics
    from app.ingress.server import WEBHOOK_PATH, make_producer, serve, serve_metrics, stop_producer

    try:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            _app_topics(settings),
            timeout=settings.kafka_connect_timeout_seconds,
        )
    except BrokerUnavailable as exc:
        _fail(f"cannot start the ingress: {exc}")
    producer = make_producer(settings)
    await producer.start()
    metrics_runner = None
    try:
        runner = await serve(settings, producer, host, port, with_metrics=metrics_port is None)
        if metrics_port is not None:
            metrics_runner = await serve_metrics(metrics_host, metrics_port)
    except OSError as exc:
        await stop_producer(producer)
        _fail(f"cannot start the ingress: {exc.strerror}")
    log.info("ingress ready: POST http://%s:%d%s (Kafka %s), metrics on http://%s:%d/metrics", host, port,
             WEBHOOK_PATH, settings.kafka_bootstrap_servers, metrics_host if metrics_port else host,
             metrics_port or port)
    try:
        await _serve_until_signal(runner)
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await stop_producer(producer)
        log.info("ingress stopped")


# ---------------------------------------------------------------- worker


@main.command()
@click.option("--web-port", default=6066, show_default=True, type=int,
              help="Port of the worker's web server (Faust views and /metrics); one per worker.")
def worker(web_port: int) -> None:
    """Run the stream processor: the orders agent and the QuickBooks dispatcher.

    Start as many as you like: Kafka shares the partitions among them.
    Local state (tables, token store) lives under MAGQB_DATA_DIR.
    """
    settings = _settings()
    from app.logs import setup_logging
    from app.private_files import private_dir, private_umask

    setup_logging(settings.log_level)
    private_umask()
    private_dir(settings.data_dir)
    _check_port("127.0.0.1", web_port, "the worker's web server")
    mapping = _mapping(settings.mapping_file)  # a bad file stops the worker before it touches Kafka

    from app import topics
    from app.adapters.kafka_admin import BrokerUnavailable, TopicLayoutError, ensure_topics

    try:
        asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap_servers,
                topics.worker_topics(settings.app_id, settings.kafka_partitions, settings.kafka_replication_factor,
                                     _retry_topics(settings)),
                timeout=settings.kafka_connect_timeout_seconds,
            )
        )
    except (BrokerUnavailable, TopicLayoutError) as exc:
        _fail(f"cannot start the worker: {exc}")

    import faust
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from app.worker_app import create_worker_app

    ctx = create_worker_app(settings, mapping, web_port=web_port)

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


@main.command("mapping")
@click.argument("file", type=click.Path(path_type=Path), required=False)
def mapping(file: Path | None) -> None:
    """Check a mapping file and print the mapping it gives (FILE, else MAGQB_MAPPING_FILE, else the defaults).

    Exits non-zero naming the offending key when the file cannot be used: the check
    the worker makes on start, without starting it.
    """
    from dataclasses import asdict

    path = file
    if path is None:
        from app.settings import SettingsError, load_settings

        try:
            path = load_settings().mapping_file  # the environment and .env, as the worker reads them
        except SettingsError:
            path = Path(os.environ["MAGQB_MAPPING_FILE"]) if os.environ.get("MAGQB_MAPPING_FILE") else None
    cfg = _mapping(path)
    click.echo(f"# mapping from {path or 'the built-in defaults'}: OK")
    for key, value in asdict(cfg).items():
        click.echo(f"{key} = {value}")


@main.command("create-topics")
def create_topics() -> None:
    """Create the application's Kafka topics (ingress and worker also do it on start)."""
    settings = _settings()
    from app.adapters.kafka_admin import BrokerUnavailable, TopicLayoutError, ensure_topics

    specs = _app_topics(settings)
    try:
        created = asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, specs,
                                            timeout=settings.kafka_connect_timeout_seconds))
    except (BrokerUnavailable, TopicLayoutError) as exc:
        _fail(str(exc))
    for spec in specs:
        click.echo(f"{spec.name}: {'created' if spec.name in created else 'exists'} ({spec.partitions} partitions)")


@main.command("sample-webhook")
@click.option("--url", default="http://127.0.0.1:8080/webhooks/magento/new-order", show_default=True,
              help="The ingress webhook URL.")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False),
              help="Order JSON to send instead of the built-in sample (the blueprint's order).")
def sample_webhook(url: str, path: str | None) -> None:
    """Print a ready-to-paste curl command that posts a correctly signed order.

    The signature is the hex HMAC-SHA256 of the exact body with MAGENTO_WEBHOOK_SECRET.
    """
    from app.domain.signature import SIGNATURE_HEADER, sign

    settings = _settings()
    if path:
        with open(path, "rb") as fh:
            raw = fh.read()
    else:
        raw = resources.files("app.samples").joinpath("blueprint_order.json").read_bytes()
    body = json.dumps(json.loads(raw), separators=(",", ":"))
    signature = sign(body.encode(), settings.magento_webhook_secret.get_secret_value())
    click.echo(
        f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/json' "
        f"-H '{SIGNATURE_HEADER}: {signature}' --data-raw {shlex.quote(body)}"
    )


# ---------------------------------------------------------------- dead letters


@main.group()
def dlq() -> None:
    """Dead letters: commands QuickBooks refused for good (or after the last retry rung).

    Each names the order, the command, every attempt and the QBO fault. Fix the
    cause (mapping, data, QBO settings), then `magqb dlq retry ID`.
    """


def _dlq_log() -> Any:
    from app.adapters.kafka_admin import BrokerUnavailable, TopicLayoutError, ensure_topics
    from app.dead_letters import read_log

    settings = _settings()
    try:
        asyncio.run(ensure_topics(settings.kafka_bootstrap_servers,
                                  [s for s in _app_topics(settings) if s.name == "qbo.dead-letter"],
                                  timeout=settings.kafka_connect_timeout_seconds))
    except (BrokerUnavailable, TopicLayoutError) as exc:
        _fail(str(exc))
    return settings, asyncio.run(read_log(settings.kafka_bootstrap_servers))


@dlq.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also list dead letters already retried or purged.")
def dlq_list(show_all: bool) -> None:
    """List the open dead letters, oldest first."""
    _, log_ = _dlq_log()
    letters = log_.letters if show_all else log_.open()
    if not letters:
        click.echo("no dead letters" + ("" if show_all else " open"))
        return
    click.echo(f"{'ID':<12}  {'DEAD AT (UTC)':<19}  {'ORDER':<14}  {'COMMAND':<16}  {'REASON':<17}  TRIES  "
               f"{'STATUS':<7}  LAST ERROR")
    for d in letters:
        last = d.attempts[-1].message if d.attempts else ""
        click.echo(f"{d.id:<12}  {d.dead_at:%Y-%m-%d %H:%M:%S}  {d.order_ref[:14]:<14}  {d.command_type:<16}  "
                   f"{d.reason:<17}  {len(d.attempts):>5}  {log_.status(d):<7}  {last[:70]}")
    if log_.unreadable:
        click.echo(f"({log_.unreadable} unreadable record(s) skipped)", err=True)


@dlq.command("show")
@click.argument("letter_id")
def dlq_show(letter_id: str) -> None:
    """Show one dead letter in full: the order, the command, every attempt with its QBO fault."""
    _, log_ = _dlq_log()
    letter = log_.find(letter_id)
    if letter is None:
        _fail(f"no single dead letter with an id starting {letter_id!r} (see `magqb dlq list --all`)")
    click.echo(json.dumps({"status": log_.status(letter), **letter.model_dump(mode="json")}, indent=2))


@dlq.command("retry")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every open dead letter.")
def dlq_retry(letter_ids: tuple[str, ...], retry_all: bool) -> None:
    """Send dead letters back to dispatch (after the cause was fixed). Booking stays exactly-once."""
    from app.dead_letters import retry

    settings, log_ = _dlq_log()
    letters = _retriable(_pick(log_, letter_ids, retry_all))
    asyncio.run(retry(settings.kafka_bootstrap_servers, letters))
    for d in letters:
        click.echo(f"retried {d.id}: order {d.order_ref} {d.command_type}")


@dlq.command("purge")
@click.argument("letter_ids", nargs=-1)
@click.option("--all", "purge_all", is_flag=True, help="Purge every open dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(letter_ids: tuple[str, ...], purge_all: bool, yes: bool) -> None:
    """Mark dead letters as handled without retrying them (they stay in the topic's history)."""
    from app.dead_letters import purge

    settings, log_ = _dlq_log()
    letters = _pick(log_, letter_ids, purge_all)
    if not yes:
        click.confirm(f"Purge {len(letters)} dead letter(s)? Their orders will not be booked by magqb", abort=True)
    asyncio.run(purge(settings.kafka_bootstrap_servers, letters))
    click.echo(f"purged {len(letters)} dead letter(s)")


def _pick(log_: Any, ids: tuple[str, ...], everything: bool) -> list[Any]:
    if everything:
        letters = log_.open()
        if not letters:
            _fail("no open dead letters")
        return list(letters)
    if not ids:
        _fail("name dead letter ids (see `magqb dlq list`) or use --all")
    picked = []
    for prefix in ids:
        letter = log_.find(prefix)
        if letter is None:
            _fail(f"no single dead letter with an id starting {prefix!r}")
        if log_.status(letter) != "open":
            _fail(f"dead letter {letter.id} was already {log_.status(letter)}")
        picked.append(letter)
    return picked


def _retriable(letters: list[Any]) -> list[Any]:
    for letter in letters:
        why = letter.why_not_retriable()
        if why is not None:
            _fail(f"dead letter {letter.id} cannot be retried: {why}; `magqb dlq purge` it once handled")
    return letters


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
