"""The webhook ingress: verify · validate · produce (acks=all) · then 202.

It answers 2xx only after the broker acknowledged the event, so Magento's
retries cover every failure before that point. It never waits on QuickBooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from app import jsonutil, metrics, topics
from app.adapters.magento_api import MagentoApiError, MagentoClient, MagentoConnection
from app.domain.order_search import int_field, search_criteria
from app.domain.signature import SIGNATURE_HEADER, verify
from app.ingress import repeats
from app.ingress.guard import ConnectionGuard
from app.ingress.repeats import RepeatGuard
from app.settings import Settings
from app.sources import adobe_commerce, adobe_io, mageos
from app.sources.mageos import parse_event_secrets
from app.sources.rsa import load_public_key
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
    def __init__(self, settings: Settings, producer: AIOKafkaProducer,
                 magento: Callable[[], MagentoClient | None] | None = None,
                 key_fetch: Callable[[str], Awaitable[bytes]] | None = None) -> None:
        self.settings = settings
        self.producer = producer
        self._secret = settings.magento_webhook_secret.get_secret_value()
        self._mageos_secrets = parse_event_secrets(settings.mageos_event_secrets.get_secret_value())
        self._adobe_key = (load_public_key(settings.adobe_webhook_public_key)
                           if settings.adobe_webhook_public_key.strip() else None)
        self._io_keys = adobe_io.KeyCache(settings.adobe_io_key_url, key_fetch or _fetch_key)
        self._io_seen = adobe_io.SeenEvents()
        self._repeats = RepeatGuard(settings.ingress_repeats_per_minute)
        # The REST client of notify-then-fetch sources (None: REST not configured).
        self._magento = magento or (lambda: None)

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

    async def _read(self, request: web.Request) -> bytes | web.Response:
        """The body, within the size limit and the read deadline — or the 413/408."""
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            metrics.WEBHOOKS.labels(result="too_large").inc()
            return _problem(413, f"body is larger than {limit} bytes")
        deadline = self.settings.ingress_read_timeout_seconds
        try:
            async with asyncio.timeout(deadline):  # a client trickling its body cannot hold a handler
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            metrics.WEBHOOKS.labels(result="too_large").inc()
            return _problem(413, f"body is larger than {limit} bytes")
        except TimeoutError:
            metrics.WEBHOOKS.labels(result="slow_body").inc()
            log.warning("closed a request from %s: body not received within %.0fs", request.remote, deadline)
            resp = _problem(408, f"body not received within {deadline:.0f} seconds")
            resp.force_close()
            return resp

    def _refuse_signature(self, request: web.Request, header: str, why: str = "") -> web.Response:
        metrics.WEBHOOKS.labels(result="bad_signature").inc()
        log.warning("rejected webhook to %s from %s: missing or bad %s%s", request.path, request.remote, header,
                    f" ({why})" if why else "")
        return _problem(401, f"missing or invalid {header}")

    @staticmethod
    def _json(body: bytes) -> Any:
        """The parsed body, or the answer: 400 (not JSON), 422 (nested deeper than any order)."""
        try:
            parsed = jsonutil.loads(body)
        except ValueError:
            metrics.WEBHOOKS.labels(result="bad_json").inc()
            return _problem(400, "body is not JSON")
        if jsonutil.deeper_than(parsed):
            metrics.WEBHOOKS.labels(result="invalid").inc()
            return _problem(422, "body nested too deep", errors=[
                {"field": "(body)", "message": f"objects and arrays nest more than {jsonutil.MAX_DEPTH} levels"}])
        return parsed

    async def _accept(self, request: web.Request, what: str, secret: str | None = None,
                      source: str = SOURCE) -> web.Response:
        """The blueprint's webhooks and Mage-OS's: hex HMAC-SHA256 of the body, one schema per URL."""
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        if not verify(body, request.headers.get(SIGNATURE_HEADER), self._secret if secret is None else secret):
            return self._refuse_signature(request, SIGNATURE_HEADER)
        parsed = self._json(body)
        if isinstance(parsed, web.Response):
            return parsed
        checked = _validate(what, parsed)
        if isinstance(checked, web.Response):
            return checked
        return await self._publish(*checked, source=source)

    async def _publish(self, raw: dict[str, Any], kind: EventKind, key: str, ref: str, source: str = SOURCE,
                       event_id: str | None = None) -> web.Response:
        """Write the event (acks=all) and answer 202 — or 422 (too large to keep), 503 (Kafka did not
        acknowledge: the sender retries)."""
        published = await self._produce(raw, kind, key, ref, source, event_id)
        if isinstance(published, web.Response):
            return published
        return web.Response(body=jsonutil.dumps({"event_id": published, "order_id": key}), status=202,
                            content_type="application/json")

    async def _produce(self, raw: dict[str, Any], kind: EventKind, key: str, ref: str, source: str,
                       event_id: str | None = None, limit_repeats: bool = True) -> str | web.Response:
        """The event's id once Kafka acknowledged it (or recorded it before: a repeat is not written again), or
        the answer that says why not."""
        body_digest = repeats.digest(kind, key, raw)
        earlier = self._repeats.recorded(body_digest)
        if earlier is not None:
            wait = self._repeats.admit(source) if limit_repeats else 0.0
            if wait:
                metrics.WEBHOOKS.labels(result="repeat_limited").inc()
                log.warning("order_id=%s %s from %s: more repeats of recorded bodies than %d a minute, refused (429)",
                            key, ref, source, self._repeats.per_minute)
                resp = _problem(429, "too many repeats of events already recorded", retry_after_seconds=int(wait))
                resp.headers["Retry-After"] = str(int(wait))
                return resp
            metrics.WEBHOOKS.labels(result="repeat").inc()
            log.info("order_id=%s %s from %s again: recorded as event %s, not written again", key, ref, source,
                     earlier)
            return earlier
        event_id, value = envelope_bytes(raw, source, kind=kind, event_id=event_id)
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
            return _unavailable("event store unavailable, retry later")
        metrics.WEBHOOKS.labels(result="accepted").inc()
        self._repeats.record(body_digest, event_id)
        log.info("order_id=%s %s accepted from %s as event %s", key, ref, source, event_id)
        return event_id

    # ------------------------------------------------------------ Mage-OS async events

    async def mageos_event(self, request: web.Request) -> web.Response:
        event = request.match_info["event"]
        what = mageos.EVENTS.get(event)
        if what is None:
            return _problem(404, f"unknown Mage-OS event {event[:60]!r}: subscribe one of {', '.join(mageos.EVENTS)}")
        secret = self._mageos_secrets.get(event, self._secret)
        started = time.perf_counter()
        try:
            if what in ("order", "cancellation"):
                return await self._accept(request, what, secret, mageos.source(event))
            return await self._mageos_other(request, event, what, secret)
        finally:
            metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)

    async def _mageos_other(self, request: web.Request, event: str, what: str, secret: str) -> web.Response:
        """`paid`: the order, then its paid invoices (from the REST API); `holded`: a notice."""
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        if not verify(body, request.headers.get(SIGNATURE_HEADER), secret):
            return self._refuse_signature(request, SIGNATURE_HEADER)
        parsed = self._json(body)
        if isinstance(parsed, web.Response):
            return parsed
        checked = _validate("order", parsed)
        if isinstance(checked, web.Response):
            return checked
        raw, kind, key, ref = checked
        source = mageos.source(event)
        if what == "notice":
            notice = {"order_id": key, "what": event, "detail": f"status {str(raw.get('status'))[:40]}"}
            return await self._publish(notice, "notice", key, ref, source)
        # Repeats here are judged after the invoices are read: a recorded order body may come with a new invoice.
        repeats_only = self._repeats.recorded(repeats.digest(kind, key, raw)) is not None
        published = await self._produce(raw, kind, key, ref, source, limit_repeats=False)
        if isinstance(published, web.Response):
            return published
        client = self._magento()
        if client is None:
            # The order is on the log, its payment is not: answered 503 so the delivery is not taken as done.
            log.error("order_id=%s %s %s: its invoices need Magento's REST API: set MAGENTO_BASE_URL and the "
                      "integration's credentials (or subscribe the invoice-paid webhook instead): answered 503",
                      key, ref, event)
            return _unavailable("sales.order.paid needs Magento's REST API here: MAGENTO_BASE_URL is not set")
        try:
            invoices = await client.search("invoices", invoices_of(int(key)), f"invoices of order {key}")
        except MagentoApiError as exc:
            log.error("order_id=%s %s %s: Magento's invoices could not be read (%s): answered 503, Mage-OS retries",
                      key, ref, event, exc)
            return _unavailable("Magento's REST API did not answer: retry later")
        for invoice in invoices.items:
            checked = _validate("invoice", invoice)
            if isinstance(checked, web.Response):
                log.warning("order_id=%s invoice %s from REST is not readable: skipped", key, invoice.get("entity_id"))
                continue
            repeats_only = repeats_only and self._repeats.recorded(repeats.digest(
                checked[1], checked[2], checked[0])) is not None
            answer = await self._produce(*checked, source=source, limit_repeats=False)
            if isinstance(answer, web.Response):
                return answer
        wait = self._repeats.admit(source) if repeats_only else 0.0
        if wait:  # nothing new in it, and more such than the source's budget: slowed down (all was recorded)
            metrics.WEBHOOKS.labels(result="repeat_limited").inc()
            resp = _problem(429, "too many repeats of events already recorded", retry_after_seconds=int(wait))
            resp.headers["Retry-After"] = str(int(wait))
            return resp
        return _accepted(published, key)

    # ------------------------------------------------------------ Adobe Commerce webhooks

    async def adobe_commerce_hook(self, request: web.Request) -> web.Response:
        """Inside checkout: 200 {"op": "success"} once Kafka has the order; an exception op otherwise
        (the hook is `required="false"`: the order goes on, and the follower catches it)."""
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        if self._adobe_key is None:
            log.error("an Adobe Commerce webhook came but MAGQB_ADOBE_WEBHOOK_PUBLIC_KEY is not set: refused")
            return self._refuse_signature(request, adobe_commerce.SIGNATURE_HEADER, "no public key configured")
        if not adobe_commerce.verify(self._adobe_key, body, request.headers.get(adobe_commerce.SIGNATURE_HEADER)):
            return self._refuse_signature(request, adobe_commerce.SIGNATURE_HEADER)
        parsed = self._json(body)
        if isinstance(parsed, web.Response):
            return parsed
        order = adobe_commerce.extract_order(parsed)
        checked = _validate("order", order)
        if isinstance(checked, web.Response):
            # A hook configured with `fields` sends a trimmed order: its id is enough to read the order itself.
            fetched = await self._fetch_trimmed(order)
            if fetched is None:
                return checked
            if isinstance(fetched, web.Response):
                return fetched
            checked = fetched
        published = await self._produce(*checked, source=adobe_commerce.SOURCE)
        if isinstance(published, web.Response):
            return published
        return web.json_response(adobe_commerce.SUCCESS)

    async def _fetch_trimmed(self, order: Any) -> tuple[dict[str, Any], EventKind, str, str] | web.Response | None:
        """The order a trimmed body names, read from REST and validated; None when it names none, REST is
        not configured or Magento does not have it (the body's own 422 stands); a 503 when REST is down."""
        entity_id = int_field(order, "entity_id") if isinstance(order, dict) else None
        client = self._magento()
        if entity_id is None or entity_id < 1 or client is None:
            return None
        try:
            full = await client.order(entity_id)
        except MagentoApiError as exc:
            log.error("order_id=%s a trimmed webhook body, and the order could not be read (%s): answered 503",
                      entity_id, exc)
            return _unavailable("Magento's REST API did not answer: retry later")
        if full is None:
            return None
        checked = _validate("order", full)
        return None if isinstance(checked, web.Response) else checked

    # ------------------------------------------------------------ Adobe I/O Events

    async def adobe_io_challenge(self, request: web.Request) -> web.Response:
        challenge = request.query.get("challenge", "")
        if not challenge or len(challenge) > 512:
            return _problem(400, "expected ?challenge=…")
        return web.Response(text=challenge, content_type="text/plain")

    async def adobe_io_events(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            return await self._adobe_io(request)
        finally:
            metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)

    async def _adobe_io(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        client_id = self.settings.adobe_io_client_id.strip()
        if not client_id:
            log.error("an Adobe I/O event came but MAGQB_ADOBE_IO_CLIENT_ID is not set: refused")
            return self._refuse_signature(request, "recipientclientid", "MAGQB_ADOBE_IO_CLIENT_ID not set")
        verdict = await adobe_io.verify(body, request.headers, self._io_keys)
        if verdict.retry:
            log.error("Adobe I/O event from %s: its public key could not be had (%s): answered 503, Adobe retries",
                      request.remote, verdict.reason)
            return _unavailable("the public key could not be had: retry later")
        if not verdict.ok:
            return self._refuse_signature(request, "x-adobe-digital-signature-1/-2", verdict.reason)
        parsed = self._json(body)
        if isinstance(parsed, web.Response):
            return parsed
        if isinstance(parsed, dict) and "validationUrl" in parsed and "type" not in parsed:
            return web.json_response({"status": "ok"})  # a POSTed challenge: answered by the GET handshake
        try:
            events = adobe_io.events_of(parsed)
        except adobe_io.CloudEventError as exc:
            metrics.WEBHOOKS.labels(result="invalid").inc()
            return _problem(400, str(exc))
        if any(adobe_io.recipient(e) != client_id for e in events):
            metrics.WEBHOOKS.labels(result="bad_signature").inc()
            log.warning("rejected Adobe I/O event from %s: recipientclientid is not MAGQB_ADOBE_IO_CLIENT_ID",
                        request.remote)
            return _problem(401, "recipientclientid is not this integration's client id")
        header_id = request.headers.get("x-adobe-event-id") if len(events) == 1 else None
        for event in events:
            note = adobe_io.notification(event, header_id)
            answer = await self._io_event(note)
            if answer is not None:
                return answer
        return web.json_response({"status": "accepted", "events": len(events)})

    async def _io_event(self, note: adobe_io.Notification) -> web.Response | None:
        """Publish the order a notification names, fetched from REST. None: done, or nothing to do (an event
        that can never be booked is logged and left, so the rest of its batch goes on); else the 503 that
        makes Adobe send the batch again."""
        if note.event_id in self._io_seen:
            metrics.WEBHOOKS.labels(result="duplicate").inc()
            log.info("Adobe I/O event %s again: already published", note.event_id)
            return None
        if not adobe_io.is_order_event(note.type):
            log.info("Adobe I/O event %s of type %s: not an order event, nothing to do", note.event_id, note.type[:80])
            return None
        if note.entity_id is None:
            metrics.WEBHOOKS.labels(result="invalid").inc()
            log.warning("Adobe I/O event %s names no order (data.value.entity_id, or its items' order_id): "
                        "subscribe entity_id; the follower books the order", note.event_id[:64])
            return None
        client = self._magento()
        if client is None:
            log.error("Adobe I/O event %s: order %s cannot be fetched, MAGENTO_BASE_URL and credentials are not set "
                      "(answered 503: Adobe retries for 24 h)", note.event_id, note.entity_id)
            return _unavailable("Magento's REST API is not configured here: retry later")
        try:
            order = await client.order(note.entity_id)
        except MagentoApiError as exc:
            log.error("order_id=%s Adobe I/O event %s: the order could not be fetched (%s): answered 503, Adobe "
                      "retries", note.entity_id, note.event_id, exc)
            return _unavailable("Magento's REST API did not answer: retry later")
        key = str(note.entity_id)
        if order is None:
            notice = {"order_id": key, "what": "notification without order",
                      "detail": f"{note.type.rsplit('.', 1)[-1]}: Magento's REST API does not know order {key} "
                                "(rolled back?): nothing booked"}
            published = await self._produce(notice, "notice", key, f"order {key}", adobe_io.SOURCE,
                                            event_id=_event_key(note.event_id))
        else:
            checked = _validate("order", order)
            if isinstance(checked, web.Response):
                # Magento's own order that is not bookable: on the log all the same, where the orders agent
                # dead-letters it with the field paths (an answer here would only stop the batch).
                published = await self._produce(order, "order", key, f"order {key}", adobe_io.SOURCE,
                                                event_id=_event_key(note.event_id))
            else:
                raw, kind, key, ref = checked
                published = await self._produce(raw, kind, key, ref, adobe_io.SOURCE,
                                                event_id=_event_key(note.event_id))
        if isinstance(published, web.Response):
            # Kafka down: 503 and Adobe sends the batch again. Anything else (an order too large to keep)
            # would be refused the same way every time: logged, and the batch goes on.
            return published if published.status == 503 else None
        self._io_seen.add(note.event_id)
        return None

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


RETRY_AFTER_SECONDS = 5


def _unavailable(error: str) -> web.Response:
    """503 with Retry-After: Mage-OS honours it, Adobe retries 5xx, Magento's modules re-send."""
    resp = _problem(503, error, retry_after_seconds=RETRY_AFTER_SECONDS)
    resp.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return resp


def _accepted(event_id: str, key: str) -> web.Response:
    return web.Response(body=jsonutil.dumps({"event_id": event_id, "order_id": key}), status=202,
                        content_type="application/json")


def _event_key(sender_id: str) -> str:
    """The envelope's event id for a sender's event id: the same event re-sent is the same event."""
    return "aio-" + hashlib.sha256(sender_id.encode()).hexdigest()[:28]


def invoices_of(order_id: int) -> list[tuple[str, str]]:
    """searchCriteria of an order's invoices."""
    return search_criteria([[("order_id", str(order_id), "eq")]], [("entity_id", "ASC")], 100)


async def _fetch_key(url: str) -> bytes:
    """One public key from Adobe's key server (short timeouts: the sender waits 10 s at most)."""
    timeout = aiohttp.ClientTimeout(total=5, sock_connect=3)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            return await resp.content.read(16 * 1024)
    except aiohttp.ClientError as exc:
        raise OSError(exc.__class__.__name__) from None


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        **settings.kafka_security().client_kwargs(),
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
              with_metrics: bool = True, magento: Callable[[], MagentoClient | None] | None = None) -> web.Application:
    # A chunked body past the limit makes request.read() raise; _accept answers 413 either way.
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[guard.middleware] if guard is not None else [])
    if guard is not None:
        app.cleanup_ctx.append(guard.sweeper)
    ingress = Ingress(settings, producer, magento)
    app[INGRESS_KEY] = ingress
    app.router.add_post(WEBHOOK_PATH, ingress.new_order)
    app.router.add_post(CANCELLED_PATH, ingress.order_cancelled)
    app.router.add_post(CREDITMEMO_PATH, ingress.creditmemo_created)
    app.router.add_post(INVOICE_PATH, ingress.invoice_paid)
    app.router.add_post(mageos.PATH, ingress.mageos_event)
    app.router.add_post(adobe_commerce.PATH, ingress.adobe_commerce_hook)
    app.router.add_post(adobe_io.PATH, ingress.adobe_io_events)
    app.router.add_get(adobe_io.PATH, ingress.adobe_io_challenge)
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
    # Notify-then-fetch sources read one order from REST inside the sender's timeout (I/O Events: 10 s).
    magento = MagentoConnection(settings.magento_base_url, settings.magento_auth, settings.magento_rest_configured,
                                total_timeout=4.0, max_attempts=2)
    app = build_app(settings, producer, guard, with_metrics, magento)

    async def close_magento(app: web.Application) -> None:
        await magento.close()

    app.on_cleanup.append(close_magento)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    guard.install(runner.server)
    return await _listen(runner, host, port)
