"""The webhook ingress: verify · validate · produce (acks=all) · then 202.

It answers 2xx only after the broker acknowledged the event, so Magento's
retries cover every failure before that point. It never waits on QuickBooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from app import jsonutil, metrics, topics
from app.domain.signature import SIGNATURE_HEADER, verify
from app.ingress.guard import ConnectionGuard
from app.settings import Settings
from schemas.envelope import EventKind, envelope_bytes
from schemas.magento import MagentoCreditMemo, MagentoInvoice, MagentoOrder, extract_entity, extract_order

log = logging.getLogger("magqb.ingress")

INGRESS_KEY: web.AppKey[Ingress] = web.AppKey("ingress")
WEBHOOK_PATH = "/webhooks/magento/new-order"
CANCELLED_PATH = "/webhooks/magento/order-cancelled"
CREDITMEMO_PATH = "/webhooks/magento/creditmemo-created"
INVOICE_PATH = "/webhooks/magento/invoice-paid"
SOURCE = "magento-webhook"
# An accepted order may one day travel inside a dead letter (its attempts, the fault, the command
# left out if need be): the event must leave this much room under MAGQB_MAX_EVENT_BYTES.
DEAD_LETTER_RESERVE = 32 * 1024


def _problem(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status, dumps=lambda o: jsonutil.dumps(o).decode())


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


SCHEMAS: dict[str, tuple[EventKind, str]] = {
    "order": ("order", "the Magento order schema"),
    "cancellation": ("order", "the Magento order schema"),
    "creditmemo": ("creditmemo", "the Magento credit memo schema (GET /V1/creditmemo/{id})"),
    "invoice": ("invoice", "the Magento invoice schema (GET /V1/invoices/{id})"),
}


def _validate(what: str, parsed: Any) -> tuple[dict[str, Any], EventKind, str, str] | web.Response:
    """(the payload as sent, its event kind, the order's key, words for the log) — or the 422."""
    kind, schema = SCHEMAS[what]
    raw = extract_order(parsed) if kind == "order" else extract_entity(parsed, "order_id")
    if not isinstance(raw, dict):
        metrics.WEBHOOKS.labels(result="invalid").inc()
        return _problem(422, f"{'order' if kind == 'order' else kind} is not a JSON object",
                        errors=[{"field": "(body)", "message": "expected an object"}])
    model: MagentoOrder | MagentoCreditMemo | MagentoInvoice
    try:
        if kind == "creditmemo":
            model = MagentoCreditMemo.model_validate(raw)
        elif kind == "invoice":
            model = MagentoInvoice.model_validate(raw)
        else:
            model = MagentoOrder.model_validate(raw)
    except ValidationError as exc:
        metrics.WEBHOOKS.labels(result="invalid").inc()
        errors = _field_errors(exc)
        log.warning("rejected %s (schema): %s", what, ", ".join(e["field"] for e in errors))
        return _problem(422, f"body does not match {schema}", errors=errors)
    if isinstance(model, MagentoOrder):
        if what == "cancellation" and str(model.state or "").lower() != "canceled":
            metrics.WEBHOOKS.labels(result="invalid").inc()
            return _problem(422, "order-cancelled needs a cancelled order", errors=[
                {"field": "state", "message": f"is {str(model.state)[:40]!r}, not 'canceled'"}])
        return raw, kind, model.key, f"order={model.order_ref}"
    if isinstance(model, MagentoCreditMemo):
        return raw, kind, model.key, f"credit memo {model.refund_ref}"
    return raw, kind, model.key, f"invoice {model.invoice_ref}"


class Ingress:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self._secret = settings.magento_webhook_secret.get_secret_value()

    async def new_order(self, request: web.Request) -> web.Response:
        return await self._timed(request, "order")

    async def order_cancelled(self, request: web.Request) -> web.Response:
        return await self._timed(request, "cancellation")

    async def creditmemo_created(self, request: web.Request) -> web.Response:
        return await self._timed(request, "creditmemo")

    async def invoice_paid(self, request: web.Request) -> web.Response:
        return await self._timed(request, "invoice")

    async def _timed(self, request: web.Request, what: str) -> web.Response:
        started = time.perf_counter()
        try:
            return await self._accept(request, what)
        finally:
            metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)

    async def _accept(self, request: web.Request, what: str) -> web.Response:
        """Every webhook: the same limits, signature and answers; only the payload's schema differs."""
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            metrics.WEBHOOKS.labels(result="too_large").inc()
            return _problem(413, f"body is larger than {limit} bytes")
        deadline = self.settings.ingress_read_timeout_seconds
        try:
            async with asyncio.timeout(deadline):  # a client trickling its body cannot hold a handler
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.WEBHOOKS.labels(result="too_large").inc()
            return _problem(413, f"body is larger than {limit} bytes")
        except TimeoutError:
            metrics.WEBHOOKS.labels(result="slow_body").inc()
            log.warning("closed a request from %s: body not received within %.0fs", request.remote, deadline)
            resp = _problem(408, f"body not received within {deadline:.0f} seconds")
            resp.force_close()
            return resp

        if not verify(body, request.headers.get(SIGNATURE_HEADER), self._secret):
            metrics.WEBHOOKS.labels(result="bad_signature").inc()
            log.warning("rejected webhook from %s: missing or bad %s", request.remote, SIGNATURE_HEADER)
            return _problem(401, f"missing or invalid {SIGNATURE_HEADER}")

        try:
            parsed = jsonutil.loads(body)
        except ValueError:
            metrics.WEBHOOKS.labels(result="bad_json").inc()
            return _problem(400, "body is not JSON")

        checked = _validate(what, parsed)
        if isinstance(checked, web.Response):
            return checked
        raw_order, kind, key, ref = checked
        event_id, value = envelope_bytes(raw_order, SOURCE, kind=kind)
        room = self.settings.max_event_bytes - DEAD_LETTER_RESERVE
        if len(value) > room:
            metrics.WEBHOOKS.labels(result="invalid").inc()
            log.warning("order_id=%s %s rejected: %d bytes, more than the %d an event may have", key, ref,
                        len(value), room)
            return _problem(422, "order too large to keep", errors=[{
                "field": "(body)", "message": f"the order is {len(value)} bytes as an event; at most {room} fit "
                f"(MAGQB_MAX_EVENT_BYTES minus room for its dead letter)"}])
        try:
            # The idempotent producer never gives up on a batch by itself, so the answer is
            # bounded here. A 503'd event may still land once Kafka is back; Magento re-sends
            # it anyway and the orders agent books an order once however often it arrives.
            async with asyncio.timeout(self.settings.kafka_produce_timeout_seconds):
                # Keyed by the order: its credit memos, invoices and cancellation follow it in order.
                await self.producer.send_and_wait(topics.ORDERS, value, key=key.encode())
        except (KafkaError, TimeoutError, OSError) as exc:
            metrics.WEBHOOKS.labels(result="broker_unavailable").inc()
            log.error("order_id=%s %s not accepted: Kafka did not acknowledge (%s)", key, ref, exc.__class__.__name__)
            return _problem(503, "event store unavailable, retry later", retry_after_seconds=5)

        metrics.WEBHOOKS.labels(result="accepted").inc()
        log.info("order_id=%s %s accepted as event %s", key, ref, event_id)
        return web.Response(body=jsonutil.dumps({"event_id": event_id, "order_id": key}), status=202,
                            content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout=3)
        except (TimeoutError, KafkaError, OSError) as exc:
            return web.json_response({"status": "unavailable", "kafka": exc.__class__.__name__}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=1,
        max_request_size=settings.max_event_bytes,
        request_timeout_ms=int(settings.kafka_produce_timeout_seconds * 1000),
        client_id="magqb-ingress",
    )


async def stop_producer(producer: AIOKafkaProducer, timeout: float = 10.0) -> None:
    """Flush and close; bounded, because with Kafka down an idempotent producer waits forever."""
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except TimeoutError:
        log.warning("Kafka unreachable at shutdown: buffered events were answered 503 and Magento will re-send them")


def build_app(settings: Settings, producer: AIOKafkaProducer, guard: ConnectionGuard | None = None,
              with_metrics: bool = True) -> web.Application:
    # A chunked body past the limit makes request.read() raise; _accept answers 413 either way.
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[guard.middleware] if guard is not None else [])
    if guard is not None:
        app.cleanup_ctx.append(guard.sweeper)
    ingress = Ingress(settings, producer)
    app[INGRESS_KEY] = ingress
    app.router.add_post(WEBHOOK_PATH, ingress.new_order)
    app.router.add_post(CANCELLED_PATH, ingress.order_cancelled)
    app.router.add_post(CREDITMEMO_PATH, ingress.creditmemo_created)
    app.router.add_post(INVOICE_PATH, ingress.invoice_paid)
    app.router.add_get("/healthz", ingress.healthz)
    app.router.add_get("/readyz", ingress.readyz)
    if with_metrics:
        app.router.add_get("/metrics", ingress.metrics_page)
    return app


async def serve_metrics(host: str, port: int) -> web.AppRunner:
    """/metrics on a listener of its own (loopback by default), off the public webhook port."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return await _listen(runner, host, port)


async def _listen(runner: web.AppRunner, host: str, port: int) -> web.AppRunner:
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


async def serve(settings: Settings, producer: AIOKafkaProducer, host: str, port: int,
                with_metrics: bool = True) -> web.AppRunner:
    """The ingress listening on host:port, its connections guarded; `await runner.cleanup()` stops it."""
    guard = ConnectionGuard(settings.ingress_max_connections, settings.ingress_read_timeout_seconds)
    runner = web.AppRunner(build_app(settings, producer, guard, with_metrics), access_log=None)
    await runner.setup()
    assert runner.server is not None
    guard.install(runner.server)
    return await _listen(runner, host, port)
