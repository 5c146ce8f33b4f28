"""The dispatcher agent: the only code that calls QuickBooks — and the retry rungs that feed it.

`qbo.commands` is keyed by realm, so one worker at a time owns a realm's quota.
One actor per worker (faust's offset commit is wrong with concurrency > 1): it
takes a batch, runs different orders' commands concurrently (at most
MAGQB_QBO_MAX_IN_FLIGHT) and each order's commands in sequence, and settles every
command — a result, a delay topic or the dead-letter topic, each acknowledged by
Kafka — before the batch is acknowledged. A parked command waits on its rung
(`qbo.retry.<delay>`), whose agent holds only its own partition until the head
record is due, then sends it back to dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import aiohttp
import faust
from pydantic import ValidationError

from app import metrics, topics
from app.adapters.oauth import TokenManager
from app.adapters.qbo_client import QboClient
from app.adapters.realm_gate import RealmGate
from app.adapters.token_store import TokenStore
from app.dispatch import Command, Dispatcher, GiveUp, RealmBlocked, RetryLater
from app.domain.circuit import CircuitBreaker
from app.domain.pacing import Pacer
from app.domain import retry_ladder as ladder_mod
from app.domain.retry_ladder import Rung, attempts_of, due_of, history_of, next_rung, retry_headers
from app.worker_app import WorkerContext
from schemas.commands import decode_command
from schemas.dead_letter import Attempt, DeadLetter
from schemas.events import CommandFailed, encode_result

log = logging.getLogger("magqb.dispatcher")

BATCH_MAX = 64
BATCH_WITHIN_SECONDS = 0.05
BLOCKED_RECHECK_SECONDS = 30.0


def _headers(event: Any) -> dict[str, bytes]:
    raw = event.headers or {}
    items = raw.items() if hasattr(raw, "items") else raw
    return {str(k): (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}


def register_dispatcher(ctx: WorkerContext) -> None:
    settings = ctx.settings
    ladder = settings.retry_ladder
    rung_topics = {r.label: ctx.app.topic(r.topic, partitions=settings.kafka_partitions, key_type=bytes,
                                          value_type=bytes, key_serializer="raw", value_serializer="raw")
                   for r in ladder}
    dead_letter = ctx.dead_letter

    async def publish_result(cmd: Command, result: Any) -> None:
        fut = await ctx.results.send(key=cmd.order_id.encode(), value=encode_result(result))
        await fut

    async def bury(cmd: Command, reason: str, failure: RetryLater | GiveUp,
                   history: list[dict[str, object]]) -> None:
        attempts = [Attempt.model_validate(h) for h in history]
        letter = DeadLetter(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id,
                            command_type=cmd.type, command=cmd.model_dump(mode="json"), reason=reason,
                            attempts=attempts)
        fut = await dead_letter.send(key=cmd.order_id.encode(), value=letter.model_dump_json().encode())
        await fut
        metrics.DEAD_LETTERS.labels(reason=reason).inc()
        log.error("order_id=%s order=%s %s dead-lettered as %s (%s after %d attempt(s)): %s", cmd.order_id,
                  cmd.order_ref, cmd.type, letter.id, reason, len(attempts), failure.message)
        await publish_result(cmd, CommandFailed(
            order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id, request_id=cmd.request_id,
            command_type=cmd.type, error_class=failure.error_class,
            message=f"dead-lettered as {letter.id}: {failure.message}"[:1000], fault=failure.fault,
        ))

    async def settle(dispatcher: Dispatcher, cmd: Command, event: Any) -> None:
        """Dispatch one command and record what became of it, durably, before it is acknowledged."""
        headers = _headers(event)
        attempts = attempts_of(headers)
        try:
            outcome = await dispatcher.handle(cmd)
        except RealmBlocked:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must become a visible dead letter, not a lost command
            log.exception("order_id=%s %s crashed", cmd.order_id, cmd.type)
            outcome = GiveUp("internal", f"{exc.__class__.__name__}: {exc}")
        if not isinstance(outcome, RetryLater | GiveUp):
            await publish_result(cmd, outcome)
            return
        history = [*history_of(headers), {"at": datetime.now(UTC).isoformat(), "error_class": outcome.error_class,
                                          "message": outcome.message, "fault": outcome.fault}]
        rung = next_rung(ladder, attempts) if isinstance(outcome, RetryLater) else None
        if rung is None:
            reason = "retries_exhausted" if isinstance(outcome, RetryLater) else \
                ("internal" if outcome.error_class == "internal" else "permanent")
            await bury(cmd, reason, outcome, history)
            return
        due = time.time() + rung.seconds
        msg = event.message
        new_headers = retry_headers(headers, attempts + 1, due, outcome.message, history,
                                    (msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000)))
        fut = await rung_topics[rung.label].send(key=event.key, value=event.value, headers=new_headers)
        await fut
        metrics.RETRIES.labels(rung=rung.label).inc()
        log.info("order_id=%s order=%s %s parked on %s (attempt %d failed: %s)", cmd.order_id, cmd.order_ref,
                 cmd.type, rung.topic, attempts, outcome.error_class)

    async def run_order(dispatcher: Dispatcher, items: list[tuple[Command, Any]], gate: asyncio.Semaphore) -> None:
        for cmd, event in items:
            async with gate:
                metrics.COMMANDS_IN_FLIGHT.inc()
                try:
                    await settle(dispatcher, cmd, event)
                finally:
                    metrics.COMMANDS_IN_FLIGHT.dec()

    async def run_batch(dispatcher: Dispatcher, batch: list[Any], gate: asyncio.Semaphore) -> None:
        by_order: OrderedDict[str, list[tuple[Command, Any]]] = OrderedDict()
        for event in batch:
            try:
                cmd = decode_command(event.value or b"")
            except ValidationError as exc:
                metrics.BAD_EVENTS.labels(topic=topics.COMMANDS).inc()
                log.error("skipped an unreadable command at %s[%s]@%s: %s", event.message.topic,
                          event.message.partition, event.message.offset, str(exc).splitlines()[0])
                continue
            by_order.setdefault(cmd.order_id, []).append((cmd, event))
        await asyncio.gather(*(run_order(dispatcher, items, gate) for items in by_order.values()))

    @ctx.app.agent(ctx.commands, name="dispatcher")
    async def dispatcher_agent(stream: faust.StreamT[Any]) -> None:
        realm = settings.quickbooks_realm_id
        timeout = aiohttp.ClientTimeout(total=settings.quickbooks_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tokens = TokenManager(
                session, settings.quickbooks_token_url, settings.quickbooks_client_id,
                settings.quickbooks_client_secret, realm, TokenStore(settings.data_dir / "tokens.sqlite3"),
                settings.quickbooks_refresh_token,
            )
            realm_gate = RealmGate(
                realm, Pacer(settings.qbo_requests_per_minute, settings.qbo_requests_per_second),
                CircuitBreaker(cooldown=settings.circuit_cooldown_seconds), settings.throttle_backoff_seconds,
            )
            client = QboClient(session, settings.qbo_api_base, realm, tokens, settings.quickbooks_minor_version,
                               settings.quickbooks_timeout_seconds, gate=realm_gate)
            dispatcher = Dispatcher(client)
            gate = asyncio.Semaphore(settings.qbo_max_in_flight)
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_SECONDS):
                while True:
                    try:
                        await run_batch(dispatcher, batch, gate)
                        metrics.REALM_BLOCKED.labels(realm=realm).set(0)
                        break
                    except RealmBlocked as exc:
                        # Nothing is acknowledged: the batch waits here, in Kafka, until a refresh works.
                        metrics.REALM_BLOCKED.labels(realm=realm).set(1)
                        log.error("realm=%s dispatch stopped: %s. Put a new refresh token in the token store "
                                  "(or QUICKBOOKS_REFRESH_TOKEN with an empty store); retrying in %.0fs",
                                  realm, exc, BLOCKED_RECHECK_SECONDS)
                        await asyncio.sleep(BLOCKED_RECHECK_SECONDS)

    for rung in ladder:
        register_rung(ctx, rung, rung_topics[rung.label])


def register_rung(ctx: WorkerContext, rung: Rung, topic: faust.TopicT) -> None:
    """The agent of one delay topic: hold the head record until it is due, then back to dispatch."""

    @ctx.app.agent(topic, name=f"retry-{rung.label}")
    async def rung_agent(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            headers = _headers(event)
            due = due_of(headers)
            # Sleep in short steps: only this partition's stream waits, and shutdown stays prompt.
            while (remaining := due - time.time()) > 0:
                await asyncio.sleep(min(remaining, 1.0))
            fut = await ctx.commands.send(key=event.key, value=event.value, headers=headers)
            await fut
            log.info("command back from %s to dispatch (attempt %s)", rung.topic,
                     headers.get(ladder_mod.H_ATTEMPTS, b"?").decode())
