"""The dispatcher agent: the only code that calls QuickBooks — and the retry rungs that feed it.

`qbo.commands` is keyed by realm, so one worker at a time owns a realm's quota.
One actor per worker: it takes commands as they come and runs each in a task of its
own (at most MAX_PENDING taken and not yet acknowledged; the QBO client keeps at most
MAGQB_QBO_MAX_IN_FLIGHT requests open, and the realm gate paces them), so a slow command
never holds the ones behind it, and commands waiting for a lookup share one query. A
command is acknowledged only once it is settled — a result, a delay topic or the
dead-letter topic, each acknowledged by Kafka — and in offset order (app.adapters.acks),
so a stop, a crash or a rebalance leaves every unsettled command to the next owner.
A parked command waits on its rung (`qbo.retry.<delay>`), whose agent holds the record
until it is due, then sends it back to dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
import faust
from pydantic import ValidationError

from agents.context import WorkerContext, raw_topic, written_by_me
from app import jsonutil, metrics, topics
from app.adapters import kafka_io
from app.adapters.acks import AckFrontier, Slot, acknowledge, manual_acks
from app.adapters.dead_letter_writer import DeadLetterWriter
from app.adapters.oauth import TokenManager
from app.adapters.ownership import CURRENT_TP
from app.adapters.qbo_access import token_store
from app.adapters.qbo_client import QboClient
from app.adapters.read_budget import ReadBudget
from app.adapters.realm_gate import RealmGate
from app.adapters.transient import Abandoned, pause, retry_transient
from app.dispatch import Command, Dispatcher, GiveUp, Outcome, RealmBlocked, RealmPaused, RetryLater
from app.domain import retry_ladder as ladder_mod
from app.domain.circuit import CircuitBreaker
from app.domain.pacing import Pacer
from app.domain.retry_ladder import Rung, attempts_of, due_of, history_of, next_rung, retry_headers
from schemas.commands import decode_command
from schemas.dead_letter import Attempt, DeadLetter, EventSource, letter_id
from schemas.events import CommandFailed, encode_result

log = logging.getLogger("magqb.dispatcher")

MAX_PENDING = 256  # commands taken from Kafka and not yet acknowledged
BLOCKED_RECHECK_SECONDS = 30.0
PAUSED_RECHECK_SECONDS = 2.0  # the token manager itself backs off (2 s doubling to 60 s) between real calls
PAUSED_LOG_SECONDS = 30.0
OWN_REASONS = ("internal", "docnumber_taken", "stale_reference", "document_differs")  # else "permanent"
# At a stop, commands already talking to QBO get this long to settle; the rest are left
# unacknowledged (the next owner repeats them, idempotently).
STOP_GRACE_SECONDS = 5.0


def _headers(event: Any) -> dict[str, bytes]:
    raw = event.headers or {}
    items = raw.items() if hasattr(raw, "items") else raw
    return {str(k): (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}


def _key(event: Any) -> str | None:
    key = event.key
    return key.decode(errors="replace") if isinstance(key, bytes) else (str(key) if key is not None else None)


def unreadable_letter(event: Any, realm_id: str, error: str) -> DeadLetter:
    """An event no handler could read: its exact bytes and where it was, for `magqb dlq`."""
    msg = event.message
    return DeadLetter(
        id=letter_id("unreadable", msg.topic, msg.partition, msg.offset),
        order_id=_key(event) or "?", order_ref="?", realm_id=realm_id, command_type="unreadable", command={},
        reason="unreadable",
        attempts=[Attempt(at=datetime.now(UTC), error_class="unreadable", message=error[:1000])],
        source=EventSource(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=_key(event)),
        raw_value=DeadLetter.encode_raw(event.value),
    )


def failure_for_its_order(raw: bytes | None, realm_id: str, error: str) -> CommandFailed | None:
    """A command that does not validate, said as its order's CommandFailed — when it still names the order
    (an older or newer version's command, a field out of range); None when it does not."""
    try:
        data = jsonutil.loads(raw or b"")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    order_id, request_id = data.get("order_id"), data.get("request_id")
    if not isinstance(order_id, str) or not order_id or not isinstance(request_id, str) or not request_id:
        return None
    return CommandFailed(order_id=order_id, order_ref=str(data.get("order_ref") or order_id), realm_id=realm_id,
                         request_id=request_id, command_type=str(data.get("type") or "unreadable"),
                         error_class="unreadable", message=f"unreadable command: {error}"[:1000], reason="unreadable",
                         attempts=[Attempt(at=datetime.now(UTC), error_class="unreadable",
                                           message=error[:1000]).model_dump(mode="json")])


async def wind_down(tasks: set[asyncio.Task[None]], grace: float) -> None:
    """Give running tasks `grace` seconds, then cancel the rest; whatever they held stays unacknowledged.
    Cancelled itself (faust cancels an agent that takes too long to stop), it cancels them at once —
    and still waits for them, so none outlives the HTTP session and producer it uses."""
    if not tasks:
        return
    cancelled = False
    try:
        _, pending = await asyncio.wait(set(tasks), timeout=grace)
    except asyncio.CancelledError:
        cancelled, pending = True, set(tasks)
    for task in pending:
        task.cancel()
    while any(not t.done() for t in pending):
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True  # they are cancelled already and end at their next step
    if pending:
        log.info("stopping: %d command(s) left unacknowledged for the next owner", len(pending))
    if cancelled:
        raise asyncio.CancelledError


def register_dispatcher(ctx: WorkerContext) -> None:
    settings = ctx.settings
    realm = settings.quickbooks_realm_id
    ladder = settings.retry_ladder
    rung_topics = {r.label: raw_topic(ctx.app, r.topic, partitions=settings.kafka_partitions) for r in ladder}
    for r in ladder:
        metrics.RETRIES.labels(rung=r.label)  # at 0 from the start
    letters = DeadLetterWriter(ctx.dead_letter, settings.max_event_bytes)

    async def publish_result(cmd: Command, result: Any) -> None:
        await ctx.ownership.held()
        value = encode_result(result)
        if isinstance(result, CommandFailed) and len(value) > settings.max_event_bytes:
            # The order agent has the order; the command and the older attempts can go.
            value = encode_result(result.model_copy(update={"command": None, "attempts": result.attempts[-1:]}))
        fut = await ctx.results.send(key=cmd.order_id.encode(), value=value, headers=written_by_me())
        await fut

    async def give_up(cmd: Command, reason: str, failure: RetryLater | GiveUp,
                      history: list[dict[str, object]]) -> None:
        """The command is done for: say so on qbo.results. The orders agent parks the order (its dead
        letter carries the order itself, so a retry maps it again) or resolves stale ids once."""
        log.error("order_id=%s order=%s %s given up (%s after %d attempt(s)): %s", cmd.order_id, cmd.order_ref,
                  cmd.type, reason, len(history), failure.message)
        await publish_result(cmd, CommandFailed(
            order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id, request_id=cmd.request_id,
            command_type=cmd.type, error_class=failure.error_class, message=failure.message[:1000],
            fault=failure.fault, reason=reason,
            attempts=[Attempt.model_validate(h).model_dump(mode="json") for h in history],
            command=cmd.model_dump(mode="json"), unnumbered=failure.unnumbered,
        ))

    async def record(cmd: Command, event: Any, outcome: Outcome) -> None:
        """Make what became of the command durable: a result, a delay topic or a dead letter."""
        if not isinstance(outcome, RetryLater | GiveUp):
            await publish_result(cmd, outcome)
            return
        headers = _headers(event)
        attempts = attempts_of(headers)
        history: list[dict[str, object]] = [
            *history_of(headers), {"at": datetime.now(UTC).isoformat(), "error_class": outcome.error_class,
                                   "message": outcome.message, "fault": outcome.fault}]
        rung = next_rung(ladder, attempts) if isinstance(outcome, RetryLater) else None
        msg = event.message
        if rung is None:
            reason = "retries_exhausted" if isinstance(outcome, RetryLater) else \
                (outcome.error_class if outcome.error_class in OWN_REASONS else "permanent")
            await give_up(cmd, reason, outcome, history)
            return
        due = time.time() + rung.seconds
        new_headers = retry_headers(headers, attempts + 1, due, outcome.message, history,
                                    (msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000)))
        await ctx.ownership.held()
        fut = await rung_topics[rung.label].send(key=event.key, value=event.value, headers=written_by_me(new_headers))
        await fut
        metrics.RETRIES.labels(rung=rung.label).inc()
        log.info("order_id=%s order=%s %s parked on %s (attempt %d failed: %s)", cmd.order_id, cmd.order_ref,
                 cmd.type, rung.topic, attempts, outcome.error_class)

    @ctx.app.agent(ctx.commands, name="dispatcher")
    async def dispatcher_agent(stream: faust.StreamT[Any]) -> None:
        stream = manual_acks(stream)  # acknowledged below, only once settled

        def stopping() -> bool:
            return bool(stream.should_stop or ctx.app.should_stop)

        timeout = aiohttp.ClientTimeout(total=settings.quickbooks_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tokens = TokenManager(
                session, settings.quickbooks_token_url, settings.quickbooks_client_id,
                settings.quickbooks_client_secret, realm, token_store(settings),
                settings.quickbooks_refresh_token, refused_recheck_seconds=BLOCKED_RECHECK_SECONDS,
                before_send=ctx.ownership.held,
            )
            realm_gate = RealmGate(
                realm, Pacer(settings.qbo_requests_per_minute, settings.qbo_requests_per_second),
                CircuitBreaker(cooldown=settings.circuit_cooldown_seconds,
                               probe_timeout=settings.quickbooks_timeout_seconds + 5),
                settings.throttle_backoff_seconds,
            )
            usage = ReadBudget(settings.data_dir / "usage.sqlite3", realm, settings.qbo_monthly_read_budget)
            await usage.load()
            usage_task = asyncio.create_task(usage.run())
            client = QboClient(session, settings.qbo_api_base, realm, tokens, settings.quickbooks_minor_version,
                               settings.quickbooks_timeout_seconds, gate=realm_gate, usage=usage,
                               max_concurrent=settings.qbo_max_in_flight, before_send=ctx.ownership.held)
            dispatcher = Dispatcher(client)
            room = asyncio.Semaphore(MAX_PENDING)
            frontier: AckFrontier[Any, Any] = AckFrontier()
            tasks: set[asyncio.Task[None]] = set()
            tasks_by_tp: dict[Any, set[asyncio.Task[None]]] = {}
            last_blocked_log = last_paused_log = 0.0

            async def revoked(tps: set[Any]) -> None:
                """The new owner starts on these partitions from the committed offset: stop working on
                them here, now (their commands were not acknowledged and will be dispatched there)."""
                cancelled = [t for tp in tps for t in tasks_by_tp.pop(tp, set()) if not t.done()]
                for task in cancelled:
                    task.cancel()
                for tp in tps:
                    frontier.drop(tp)
                if any(tp.topic == topics.COMMANDS and tp.partition == realm_partition for tp in tps):
                    realm_gate.forget()
                    tokens.forget_expiry()
                if cancelled:
                    await asyncio.gather(*cancelled, return_exceptions=True)
                    log.info("partitions revoked: %d command(s) left to the next owner", len(cancelled))

            realm_partition = kafka_io.partition_of(realm.encode(), settings.kafka_partitions)  # commands: keyed by realm
            ctx.ownership.on_revoke(revoked)

            async def dispatch(cmd: Command, tp: Any, verify: bool) -> Outcome:
                """QBO's answer to the command. While the realm is blocked (refresh token refused) the
                command waits here, unacknowledged, and is tried again every BLOCKED_RECHECK_SECONDS;
                each command is retried only by its own task, so never twice at once."""
                nonlocal last_blocked_log, last_paused_log
                while True:
                    # Revoked while it waited, or frozen past the session timeout: the new owner dispatches it.
                    await ctx.ownership.held(tp, stopping)
                    metrics.COMMANDS_IN_FLIGHT.inc()
                    try:
                        outcome = await dispatcher.handle(cmd, verify)
                        metrics.REALM_BLOCKED.labels(realm=realm).set(0)
                        metrics.REALM_PAUSED.labels(realm=realm).set(0)
                        return outcome
                    except RealmBlocked as exc:
                        blocked = exc
                    except RealmPaused as exc:
                        paused = exc
                        blocked = None
                    except Abandoned:
                        raise  # fenced right before a QuickBooks call: the partition is another worker's
                    except Exception as exc:  # a bug becomes a visible dead letter
                        if stopping():
                            raise Abandoned from exc  # the stop closed the session under it
                        log.exception("order_id=%s %s crashed", cmd.order_id, cmd.type)
                        return GiveUp("internal", f"{exc.__class__.__name__}: {exc}")
                    finally:
                        metrics.COMMANDS_IN_FLIGHT.dec()
                    if blocked is None:
                        metrics.REALM_PAUSED.labels(realm=realm).set(1)
                        if time.monotonic() - last_paused_log >= PAUSED_LOG_SECONDS:
                            last_paused_log = time.monotonic()
                            log.warning("realm=%s dispatch paused: %s; commands wait unacknowledged and go when a "
                                        "token comes (asked every few seconds)", realm, paused)
                        await pause(PAUSED_RECHECK_SECONDS, stopping)
                        continue
                    metrics.REALM_BLOCKED.labels(realm=realm).set(1)
                    if time.monotonic() - last_blocked_log >= BLOCKED_RECHECK_SECONDS:
                        last_blocked_log = time.monotonic()
                        log.error("realm=%s dispatch stopped: %s. Give the realm a new refresh token: `magqb connect` "
                                  "(or `magqb token set`); nothing is acknowledged, "
                                  "retrying every %.0fs", realm, blocked, BLOCKED_RECHECK_SECONDS)
                    await pause(BLOCKED_RECHECK_SECONDS, stopping)

            async def settle(event: Any) -> None:
                try:
                    cmd = decode_command(event.value or b"")
                except ValidationError as exc:
                    metrics.BAD_EVENTS.labels(topic=event.message.topic).inc()
                    await ctx.ownership.held()
                    failed = failure_for_its_order(event.value, realm, str(exc))
                    if failed is not None:
                        # The order waits for this command: tell it, and it parks with its order event.
                        await retry_transient(lambda: ctx.results.send(key=failed.order_id.encode(),
                                                                      value=encode_result(failed),
                                                                      headers=written_by_me()),
                                              stopping, log, "reporting an unreadable command", every_error=True)
                        log.error("order_id=%s unreadable command at %s[%s]@%s: %s", failed.order_id,
                                  event.message.topic, event.message.partition, event.message.offset,
                                  str(exc).splitlines()[0])
                        return
                    letter = unreadable_letter(event, realm, str(exc))
                    await retry_transient(lambda: letters.write(letter), stopping, log, "dead-lettering a command",
                                          every_error=True)
                    log.error("unreadable command at %s[%s]@%s dead-lettered as %s: %s", event.message.topic,
                              event.message.partition, event.message.offset, letter.id, str(exc).splitlines()[0])
                    return
                # A lookup before a create only pays when an earlier attempt may have reached QuickBooks: a
                # retry from a rung, or a record written before this worker took the partition over.
                msg = event.message
                verify = attempts_of(_headers(event)) > 1 or ctx.ownership.maybe_handled_before(msg.tp, msg.offset)
                outcome = await dispatch(cmd, msg.tp, verify)
                await retry_transient(lambda: record(cmd, event, outcome), stopping, log,
                                      f"order_id={cmd.order_id} recording {cmd.type}", every_error=True)

            async def work(event: Any, slot: Slot[Any]) -> None:
                CURRENT_TP.set(event.message.tp)  # this task's own: every effect below fences on it
                try:
                    await settle(event)
                except Abandoned:
                    return  # stopping or revoked: never acknowledged, the next owner repeats it
                except Exception:  # cannot happen by construction; if it does, say so loudly
                    log.exception("command at %s[%d]@%d could not be settled; left unacknowledged",
                                  event.message.topic, event.message.partition, event.message.offset)
                    return
                finally:
                    room.release()
                try:
                    await ctx.ownership.held(stopping=stopping)
                except Abandoned:
                    return
                for done in frontier.finish(event.message.tp, slot):
                    await acknowledge(stream, done)

            try:
                async for event in stream.events():
                    while not await _acquire(room, 0.25):
                        if stopping():
                            return
                    tp = event.message.tp
                    slot = frontier.track(tp, event)
                    task = asyncio.create_task(work(event, slot))
                    tasks.add(task)
                    tasks_by_tp.setdefault(tp, set()).add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(partial(_forget_task, tasks_by_tp, tp))
            finally:
                try:
                    await wind_down(tasks, STOP_GRACE_SECONDS)
                finally:
                    usage_task.cancel()
                    await asyncio.gather(usage_task, return_exceptions=True)

    for rung in ladder:
        register_rung(ctx, rung, rung_topics[rung.label])


def _forget_task(tasks_by_tp: dict[Any, set[asyncio.Task[None]]], tp: Any, task: asyncio.Task[None]) -> None:
    tasks_by_tp.get(tp, set()).discard(task)


async def _acquire(sem: asyncio.Semaphore, timeout: float) -> bool:
    try:
        await asyncio.wait_for(sem.acquire(), timeout)
    except TimeoutError:
        return False
    return True


def register_rung(ctx: WorkerContext, rung: Rung, topic: faust.TopicT) -> None:
    """The agent of one delay topic: hold the head record until it is due, then back to dispatch.
    A stop while it waits leaves the record unacknowledged: the next owner waits for the same due time."""

    @ctx.app.agent(topic, name=f"retry-{rung.label}")
    async def rung_agent(stream: faust.StreamT[Any]) -> None:
        stream = manual_acks(stream)

        def stopping() -> bool:
            return bool(stream.should_stop or ctx.app.should_stop)

        async def forward(event: Any, headers: dict[str, bytes]) -> None:
            await ctx.ownership.held(event.message.tp, stopping)
            fut = await ctx.commands.send(key=event.key, value=event.value, headers=written_by_me(headers))
            await fut

        async for event in stream.events():
            headers = _headers(event)
            tp = event.message.tp

            def gone(tp: Any = tp) -> bool:
                return stopping() or not ctx.ownership.owns(tp)

            try:
                await pause(max(0.0, due_of(headers) - time.time()), gone)
                await retry_transient(partial(forward, event, headers), gone, log, f"returning from {rung.topic}",
                                      every_error=True)
                await ctx.ownership.held(tp, stopping)  # the acknowledgement is an effect too
            except Abandoned:
                if stopping():
                    return
                continue  # revoked: the new owner holds it until due
            await acknowledge(stream, event)
            log.info("command back from %s to dispatch (attempt %s)", rung.topic,
                     headers.get(ladder_mod.H_ATTEMPTS, b"?").decode(errors="replace"))
