"""The orders agent, keyed by order id: decode → decide (app.domain.order_flow) → emit.

It reads `magento.orders` (new orders) and `qbo.results` (what QBO did), both
keyed by order id and co-partitioned with the `order_state` table. Customer and
item ids come from global tables fed only by result events.

An event is acknowledged only after everything it caused is durable (commands,
dead letters and the table row are written before the ack). A Kafka write that
fails is retried without acknowledging; an event that cannot be read, or whose
handling raises, becomes a dead letter (`magqb dlq`) and the events behind it flow
on. A stop leaves the current event unacknowledged for the next owner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import faust
from pydantic import ValidationError

from agents.context import WorkerContext, written_by_me
from app import jsonutil, metrics, topics
from app.adapters.acks import acknowledge, manual_acks
from app.adapters.dead_letter_writer import DeadLetterWriter
from app.adapters.log_reader import LogReader
from app.adapters.ownership import CURRENT_TP
from app.adapters.table_rows import tally_key
from app.adapters.transient import Abandoned, retry_transient
from app.domain import state_size
from app.domain.order_flow import Decision, on_order, on_result, unseen_and_old
from app.domain.order_life import on_creditmemo, on_invoice
from app.redact import scrub
from schemas.commands import CreateDocument, ReceivePayment, VoidDocument, encode_command
from schemas.dead_letter import Attempt, DeadLetter, EventSource, letter_id
from schemas.envelope import EnvelopeError, Notice, OrderEnvelope, decode_envelope
from schemas.events import (
    CommandFailed,
    CustomerResolved,
    DocumentCreated,
    DocumentVoided,
    ItemResolved,
    PaymentReceived,
    decode_result,
)
from schemas.magento import MagentoCreditMemo, MagentoInvoice, MagentoOrder
from schemas.state import CustomerEntry, HistoryEntry, ItemEntry, LogRef, OrderState, with_history

log = logging.getLogger("magqb.orders")
REVOKE_WAIT_SECONDS = 5.0


class UnreadableEvent(Exception):
    """The event's bytes are not an event this worker reads."""


def _key(event: Any) -> str:
    key = event.key
    return key.decode(errors="replace") if isinstance(key, bytes) else str(key or "")


def _source(event: Any) -> EventSource:
    msg = event.message
    return EventSource(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=_key(event) or None)


def register_orders_agent(ctx: WorkerContext) -> None:
    max_age = timedelta(hours=ctx.settings.unseen_order_max_age_hours)
    realm_id = ctx.settings.quickbooks_realm_id
    letters = DeadLetterWriter(ctx.dead_letter, ctx.settings.max_event_bytes)

    def customer(email: str) -> CustomerEntry | None:
        row = ctx.customers.get(email)
        return CustomerEntry.model_validate(row) if row else None

    def item(name: str) -> ItemEntry | None:
        row = ctx.items.get(name.lower())
        return ItemEntry.model_validate(row) if row else None

    reader = LogReader(ctx.settings.kafka_bootstrap_servers, f"{ctx.settings.app_id}-bodies")

    def load_state(order_id: str) -> OrderState | None:
        row = ctx.order_state.get(order_id)
        return OrderState.model_validate(row) if row else None

    async def load_whole(order_id: str) -> OrderState | None:
        """The order's state with every body a decision may need (those the row left out read back from the log)."""
        state = load_state(order_id)
        if state is None:
            return None
        wanted = state_size.missing_bodies(state)
        if not wanted:
            return state
        bodies = {state_size.key(at): await reader.body(at) for at in wanted}
        return state_size.with_bodies(state, bodies)

    async def park(order_id: str, order_ref: str, decision: Decision, source: EventSource) -> None:
        """Not booked: into the dead-letter topic with the reason, the command (sent or not) and the
        order event itself (or the credit memo's, invoice's, cancellation's), so `magqb dlq retry` maps
        it again once the cause is fixed."""
        assert decision.parked is not None
        for n, parked in enumerate((decision.parked, *decision.more_parked)):
            await park_one(order_id, order_ref, parked, decision.state, source, n)

    async def park_one(order_id: str, order_ref: str, parked: Any, state: OrderState | None, source: EventSource,
                       n: int) -> None:
        order_event = parked.retry_event
        if order_event is None and state is not None and state.order is not None:
            order_event = OrderEnvelope(event_id=state.event_id, source="parked", order=state.order).model_dump(
                mode="json")
        attempts = list(parked.attempts) or [Attempt(at=datetime.now(UTC), error_class=parked.reason,
                                                     message=parked.message[:1000])]
        await ctx.ownership.held()
        letter = await letters.write(DeadLetter(
            # The id says which delivery parked it: written twice it is one letter, parked again after
            # `dlq retry` (a new record) it is a new one.
            id=letter_id("parked", source.topic, source.partition, source.offset, parked.reason, *([n] if n else [])),
            order_id=order_id, order_ref=order_ref, realm_id=realm_id, command_type=parked.command_type,
            command=parked.command or {}, reason=parked.reason, attempts=attempts, order_event=order_event,
        ))
        if parked.reason == "reconciliation":
            metrics.RECONCILE_MISMATCHES.inc()
        log.error("order_id=%s order=%s not booked, dead-lettered as %s (%s): %s", order_id, order_ref,
                  letter.id, parked.reason, parked.message)

    async def apply(order_id: str, order_ref: str, decision: Decision, source: EventSource,
                    event_id: str | None = None) -> None:
        await ctx.ownership.held()  # a worker that lost the partition (revoked, or frozen past its lease) stops here
        if decision.parked is not None:
            await park(order_id, order_ref, decision, source)
        for table, keys in ((ctx.customers, decision.forget_customers), (ctx.items, decision.forget_items)):
            for key in keys:
                await forget_ref(table, key)
        if decision.forget_customers or decision.forget_items:
            log.warning("order_id=%s order=%s QuickBooks refused a cached customer/item id (inactive or deleted): "
                        "resolving %s again", order_id, order_ref,
                        ", ".join([*decision.forget_customers, *decision.forget_items]))
        # Commands are acknowledged by Kafka before the state that says they were sent is written.
        for cmd in decision.commands:
            # Keyed by realm: one dispatcher at a time spends a realm's quota.
            await ctx.ownership.held()
            fut = await ctx.commands.send(key=cmd.realm_id.encode(), value=encode_command(cmd), headers=written_by_me())
            await fut
        if decision.state is not None:
            state = decision.state
            if event_id is not None:  # bodies this event brought: where they are, should the row leave them out
                state = state_size.placed(state, event_id, LogRef(topic=source.topic, partition=source.partition,
                                                                  offset=source.offset))
            await save_state(order_id, state)
        metrics.ORDERS.labels(outcome=decision.outcome).inc()

    async def remember_ref(table: Any, key: str, value: dict[str, Any]) -> None:
        """A customer's or item's QuickBooks id, in the one changelog partition its key hashes to (faust would write
        it to the partition of the event at hand: the same key in several partitions, and a tombstone in one
        of them leaving the others to come back at the next start)."""
        await ctx.ownership.held()
        fut = table.send_changelog(None, key, value)  # None: the producer's partitioner, by the key
        table.data[key] = value
        await fut

    async def forget_ref(table: Any, key: str) -> None:
        """An id QuickBooks refused (inactive, merged): a tombstone in every partition, so no copy of it — ours, or
        one an older version wrote to another partition — comes back at a restart."""
        await ctx.ownership.held()
        futures = [table.send_changelog(p, key, None, value_serializer="raw")  # a real tombstone, not "null"
                   for p in range(ctx.settings.kafka_partitions)]
        table.data.pop(key, None)
        for fut in futures:
            await fut

    async def save_state(order_id: str, state: OrderState) -> None:
        """The order's row, acknowledged by Kafka before the event is: faust's own table writes are
        buffered, and its commit can pass them (its flush gives up after 0.1 s).

        Kept here only once Kafka has it, and the offset a restart reads the changelog from moves only
        after that: a worker killed in between finds the row again in the changelog, never a row on its
        disk that Kafka does not have (faust's own order: row, then send, then offset at the ack)."""
        await ctx.ownership.held()
        table: Any = ctx.order_state  # the Collection: TableT declares neither its serializers nor its store's offsets
        value = state_size.fit(state, ctx.settings.max_event_bytes).model_dump(mode="json")
        partition = table.partition_for_key(order_id)
        old = table.data.get(order_id)
        epoch = ctx.ownership.epoch
        sent = await table.changelog_topic.send_soon(
            key=order_id, value=value, partition=partition, key_serializer=table.key_serializer,
            value_serializer=table.value_serializer, eager_partitioning=True)
        event_tp = CURRENT_TP.get()
        if event_tp is not None and (not ctx.ownership.owns(event_tp) or ctx.ownership.epoch != epoch):
            # A rebalance while Kafka took it: another owner may have had the partition and written after our
            # row, and recovery may have brought that here. Ours is not written, nor the offset moved; the
            # event is delivered again and decided from what the changelog says.
            raise Abandoned
        tp = sent.topic_partition
        persisted = table.data.persisted_offset(tp)  # None from the memory store: it keeps no offsets
        table.data[order_id] = value
        if persisted is None or sent.offset == persisted + 1:
            table.data.set_persisted_offset(tp, sent.offset)
        else:  # someone else wrote between (cannot be while we own it): a restart reads from our last own row
            log.warning("order_id=%s the changelog of partition %d moved from offset %d to %d under this worker: "
                        "its disk copy is read again from the changelog at the next start", order_id,
                        tp.partition, persisted, sent.offset)
        ctx.tally.change(tp.partition, tally_key(table, order_id), old, value)

    def read_order(raw: bytes | None) -> tuple[OrderEnvelope, MagentoOrder | MagentoCreditMemo | MagentoInvoice | Notice]:
        try:
            envelope = decode_envelope(raw)
            if envelope.kind == "notice":
                return envelope, Notice.model_validate(envelope.body)
            if envelope.kind == "creditmemo":
                return envelope, MagentoCreditMemo.model_validate(envelope.body)
            if envelope.kind == "invoice":
                return envelope, MagentoInvoice.model_validate(envelope.body)
            return envelope, MagentoOrder.model_validate(envelope.body)
        except (EnvelopeError, ValidationError) as exc:
            raise UnreadableEvent(str(exc).splitlines()[0]) from None

    async def handle_order(raw: bytes | None, source: EventSource) -> None:
        envelope, body = read_order(raw)
        if isinstance(body, Notice):
            await handle_notice(envelope, body, source)
            return
        if not isinstance(body, MagentoOrder):
            await handle_later(envelope, body, source)
            return
        order = body
        state = await load_whole(order.key)
        if unseen_and_old(state, order, envelope.source, envelope.received_at, max_age, envelope.replay_id,
                          envelope.retry_of, envelope.origin):
            metrics.ORDERS.labels(outcome="before_magqb").inc()
            log.warning("order_id=%s order=%s placed %s, %s reports a change of it and magqb never booked it: an order of "
                     "before magqb, not booked (`magqb import` books it on purpose)", order.key, order.order_ref,
                     order.created_at, envelope.source)
            return
        decision = on_order(state, order, envelope.body, envelope.event_id, customer, item, ctx.mapping, realm_id,
                            retry_of=envelope.retry_of, replay_id=envelope.replay_id, recheck=envelope.recheck,
                            received_at=envelope.received_at, stuck=envelope.stuck)
        how = f"{envelope.source} event {envelope.event_id}"
        if envelope.replay_of:
            how += f" (replay {envelope.replay_id} of {envelope.replay_of})"
        if envelope.retry_of:
            how += f" (retry of dead letter {envelope.retry_of})"
        decision = add_story(decision, "order event", f"{how}: {decision.outcome}", source)
        await apply(order.key, order.order_ref, decision, source, envelope.event_id)
        if decision.outcome == "duplicate":
            log.info("order_id=%s order=%s duplicate delivery (event %s): already %s, nothing to do",
                     order.key, order.order_ref, envelope.event_id, state.status if state else "?")
        elif decision.outcome == "facts_filled":
            log.info("order_id=%s order=%s booked by an older magqb: its sale facts are filled in, %d later "
                     "document(s) go on", order.key, order.order_ref, len(decision.commands))
        elif decision.outcome == "stale":
            log.info("order_id=%s order=%s delivery older (updated_at %s) than one already handled: ignored",
                     order.key, order.order_ref, order.updated_at)
        elif decision.outcome == "skipped":
            log.info("order_id=%s order=%s cancelled in Magento and never booked: not booked", order.key,
                     order.order_ref)
        elif decision.outcome == "waiting":
            log.info("order_id=%s order=%s resolving %d reference(s) in QuickBooks", order.key, order.order_ref,
                     len(decision.commands))
        elif decision.outcome.startswith("unstuck_"):
            log.warning("order_id=%s order=%s was stuck (%s, nothing in flight): %d command(s) sent again under new "
                        "request ids, looking first", order.key, order.order_ref, state.status if state else "?",
                        len(decision.commands))
        _log_requested(order.key, order.order_ref, decision)

    async def handle_notice(envelope: OrderEnvelope, notice: Notice, source: EventSource) -> None:
        """A line in the order's story (put on hold; a notification Magento's REST API could not back)."""
        state = load_state(notice.order_id)
        detail = f"{notice.what}: {notice.detail} ({envelope.source} event {envelope.event_id})"
        if state is None:
            log.info("order_id=%s %s: not an order this worker knows yet, nothing to book", notice.order_id, detail)
            return
        entry = HistoryEntry(at=datetime.now(UTC), what="notice", detail=detail[:300], topic=source.topic,
                             partition=source.partition, offset=source.offset)
        await save_state(notice.order_id, with_history(state, entry))
        log.info("order_id=%s order=%s %s", notice.order_id, state.order_ref, detail)

    async def handle_later(envelope: OrderEnvelope, body: MagentoCreditMemo | MagentoInvoice,
                           source: EventSource) -> None:
        """A credit memo or invoice of an order: booked against the order's document, or waiting for it."""
        state = await load_whole(body.key)
        if isinstance(body, MagentoCreditMemo):
            what = f"credit memo {body.refund_ref}"
            decision = on_creditmemo(state, body, envelope.body, envelope.event_id, item, ctx.mapping, realm_id,
                                     retry_of=envelope.retry_of, replay_id=envelope.replay_id)
        else:
            what = f"invoice {body.invoice_ref}"
            decision = on_invoice(state, body, envelope.body, envelope.event_id, ctx.mapping, realm_id,
                                  retry_of=envelope.retry_of, replay_id=envelope.replay_id)
        order_ref = state.order_ref if state is not None else body.key
        how = f"{what}: {envelope.source} event {envelope.event_id}"
        if envelope.retry_of:
            how += f" (retry of dead letter {envelope.retry_of})"
        decision = add_story(decision, "later event", f"{how}: {decision.outcome}", source)
        await apply(body.key, order_ref, decision, source, envelope.event_id)
        if decision.outcome == "waiting_for_order":
            log.info("order_id=%s order=%s %s waits for the order's document", body.key, order_ref, what)
        elif decision.outcome == "duplicate":
            log.info("order_id=%s order=%s %s again (event %s): already handled, nothing to do", body.key, order_ref,
                     what, envelope.event_id)
        elif decision.outcome == "ignored":
            log.info("order_id=%s order=%s %s: nothing to book (%s)", body.key, order_ref, what,
                     "not paid" if isinstance(body, MagentoInvoice) and not body.paid else "paid at checkout")
        _log_later(body.key, order_ref, decision)

    async def handle_result(raw: bytes | None, source: EventSource) -> None:
        try:
            result = decode_result(raw or b"")
        except ValidationError as exc:
            raise UnreadableEvent(str(exc).splitlines()[0]) from None
        # The result feeds the lookup tables first: state is derived from events.
        if isinstance(result, CustomerResolved | ItemResolved):
            await ctx.ownership.held()
        if isinstance(result, CustomerResolved):
            await remember_ref(ctx.customers, result.key or result.email, CustomerEntry(
                customer_id=result.customer_id, display_name=result.display_name).model_dump())
        elif isinstance(result, ItemResolved):
            await remember_ref(ctx.items, result.name.lower(), ItemEntry(item_id=result.item_id).model_dump())
        decision = on_result(await load_whole(result.order_id), result, customer, item, ctx.mapping, realm_id)
        decision = add_story(decision, "result", _describe_result(result), source)
        await apply(result.order_id, result.order_ref, decision, source)
        if isinstance(result, DocumentCreated) and decision.outcome == "synced":
            received = decision.state.received_at if decision.state is not None else None
            if received is not None:
                received = received if received.tzinfo else received.replace(tzinfo=UTC)
                metrics.ORDER_BOOKING_SECONDS.observe(max(0.0, (datetime.now(UTC) - received).total_seconds()))
            log.info("order_id=%s order=%s booked: QBO %s Id=%s DocNumber=%s TotalAmt=%s (%s)", result.order_id,
                     result.order_ref, result.doc_type, result.qbo_id, result.doc_number, result.total_amt,
                     "created" if result.created else "already existed")
        elif decision.outcome == "failed":
            log.error("order_id=%s order=%s failed: %s", result.order_id, result.order_ref,
                      getattr(result, "message", ""))
        elif isinstance(result, DocumentCreated | DocumentVoided | PaymentReceived) and \
                decision.outcome in ("refunded", "voided", "paid"):
            log.info("order_id=%s order=%s %s: QBO %s Id=%s (%s)", result.order_id, result.order_ref, decision.outcome,
                     getattr(result, "doc_type", "Payment"), result.qbo_id, _describe_result(result))
        elif decision.outcome == "conflict" and isinstance(result, PaymentReceived):
            log.error("order_id=%s order=%s a SECOND QuickBooks Payment for a paid Magento invoice: Payment Id=%s "
                      "PaymentRefNum=%s Amount=%s; check and void one", result.order_id, result.order_ref,
                      result.qbo_id, result.ref_num, result.amount)
        elif decision.outcome == "conflict" and isinstance(result, DocumentCreated) and \
                result.doc_type in ("RefundReceipt", "CreditMemo"):
            log.error("order_id=%s order=%s a SECOND QuickBooks %s for one credit memo: Id=%s DocNumber=%s TotalAmt=%s;"
                      " check and void one", result.order_id, result.order_ref, result.doc_type, result.qbo_id,
                      result.doc_number, result.total_amt)
        elif decision.outcome == "conflict" and isinstance(result, DocumentCreated):
            log.error("order_id=%s order=%s a SECOND QuickBooks document for a booked order: %s Id=%s DocNumber=%s "
                      "TotalAmt=%s (the order is booked as Id=%s); check and void one", result.order_id,
                      result.order_ref, result.doc_type, result.qbo_id, result.doc_number, result.total_amt,
                      (load_state(result.order_id) or OrderState(status="synced", order_ref="?", event_id="")).qbo_id)
        _log_requested(result.order_id, result.order_ref, decision)
        _log_later(result.order_id, result.order_ref, decision)

    def replay_of_booked(key: str, raw: bytes | None) -> bool:
        """A replayed event of a booked order: nothing to do, known without validating the order (a
        replay of a year of booked orders runs at the speed of the log, and logs nothing per order)."""
        row = ctx.order_state.get(key) if key else None
        if not isinstance(row, dict) or row.get("status") != "synced" or not raw:
            return False
        if row.get("follow_ups") and not row.get("sale"):
            return False  # booked by an older magqb: the replay brings what its refunds need
        try:
            data = jsonutil.loads(raw)
        except ValueError:
            return False
        if not isinstance(data, dict) or not data.get("replay_id") or data.get("recheck"):
            return False
        # A replayed cancellation still voids (the worker may never have seen it); a replayed credit memo or
        # invoice goes the whole way (its follow-up in the state says whether it was handled).
        order = data.get("order")
        return isinstance(order, dict) and str(order.get("state") or "").lower() != "canceled"

    async def handle(event: Any) -> None:
        if event.message.topic == topics.ORDERS:
            if replay_of_booked(_key(event), event.value):
                metrics.ORDERS.labels(outcome="duplicate").inc()
                return
            await handle_order(event.value, _source(event))
        else:
            await handle_result(event.value, _source(event))

    async def bury(event: Any, exc: Exception) -> None:
        """The event cannot be handled: keep it, exactly, in the dead-letter topic; mark its order failed.
        The letter carries the order itself when there is one to carry (from the event, else from the
        state), so `dlq retry` maps the order again; its raw bytes always go with it."""
        source, key = _source(event), _key(event)
        unreadable = isinstance(exc, UnreadableEvent)
        reason = "unreadable" if unreadable else "internal"
        message = scrub(str(exc) if unreadable else f"{exc.__class__.__name__}: {exc}")
        order_event = None
        order_ref = "?"
        if not unreadable and source.topic == topics.ORDERS:
            envelope, body = read_order(event.value)
            order_event = envelope.model_dump(mode="json", exclude_none=True)
            order_ref = body.order_ref if isinstance(body, MagentoOrder) else "?"
        try:
            state = load_state(key) if key else None
        except ValidationError:
            state = None  # a row this worker cannot read: the letter still tells
        if state is not None:
            order_ref = state.order_ref
            if order_event is None and state.order is not None:
                order_event = OrderEnvelope(event_id=state.event_id, source="parked", order=state.order).model_dump(
                    mode="json")
        await ctx.ownership.held()
        letter = await letters.write(DeadLetter(
            id=letter_id(reason, source.topic, source.partition, source.offset),
            order_id=key or "?", order_ref=order_ref, realm_id=realm_id, command_type=reason, command={},
            reason=reason, attempts=[Attempt(at=datetime.now(UTC), error_class=reason, message=message[:1000])],
            order_event=order_event, source=source, raw_value=DeadLetter.encode_raw(event.value),
        ))
        error = f"{reason}: dead-lettered as {letter.id}: {message}"[:1000]
        if order_event is not None and order_event.get("kind", "order") != "order":
            pass  # a credit memo's or invoice's problem: the order itself stays where it is
        elif state is not None and state.status != "synced":
            await save_state(key, state.model_copy(update={"status": "failed", "error": error,
                                                           "updated_at": datetime.now(UTC)}))
        elif state is None and order_event is not None:
            await save_state(key, OrderState(status="failed", order_ref=order_ref,
                                             event_id=str(order_event.get("event_id", "")),
                                             order=order_event.get("order"), error=error))
        metrics.BAD_EVENTS.labels(topic=source.topic).inc()
        log.error("order_id=%s order=%s %s event at %s[%d]@%d dead-lettered as %s: %s", key or "?", order_ref,
                  reason, source.topic, source.partition, source.offset, letter.id, message[:300])

    idle = asyncio.Event()
    idle.set()

    async def revoked(tps: set[Any]) -> None:
        # The event in hand either finishes or gives up (its partition is no longer owned) before
        # the new owner starts: no row of ours lands after theirs.
        try:
            await asyncio.wait_for(idle.wait(), REVOKE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("partitions revoked while an order event was still in hand after %.0fs",
                        REVOKE_WAIT_SECONDS)

    ctx.ownership.on_revoke(revoked)

    @ctx.app.agent(ctx.orders_and_results, name="orders")
    async def orders(stream: faust.StreamT[Any]) -> None:
        stream = manual_acks(stream)  # acknowledged below, once what the event caused is durable

        def stopping() -> bool:
            return bool(stream.should_stop or ctx.app.should_stop)

        async for event in stream.events():
            what = f"order_id={_key(event) or '?'} {event.message.topic}@{event.message.offset}"
            tp = event.message.tp

            def gone(tp: Any = tp) -> bool:
                return stopping() or not ctx.ownership.owns(tp)

            idle.clear()
            CURRENT_TP.set(tp)  # every effect of this event fences on its partition
            try:
                try:
                    if gone():
                        raise Abandoned
                    await retry_transient(partial(handle, event), gone, log, what)
                except Abandoned:
                    raise
                except Exception as exc:  # this event's problem: it must not stop the others
                    if not isinstance(exc, UnreadableEvent):
                        log.exception("%s: unexpected error", what)
                    try:
                        await retry_transient(partial(bury, event, exc), gone, log, f"{what} dead-lettering")
                    except Abandoned:
                        raise
                    except Exception:  # never acknowledge what is not recorded anywhere
                        log.critical("%s: could not be dead-lettered either; left unacknowledged (it comes back "
                                     "after a restart, and its partition commits no further meanwhile)", what,
                                     exc_info=True)
                        continue
                await ctx.ownership.held(tp, stopping)  # the acknowledgement is an effect too
            except Abandoned:
                if stopping():
                    return  # stopping: this event stays unacknowledged for the next owner
                continue  # revoked: the new owner gets it from the committed offset
            finally:
                idle.set()
            await acknowledge(stream, event)


def add_story(decision: Decision, what: str, detail: str, source: EventSource) -> Decision:
    """The decision with this step (and the commands it sends, or its parking) in the order's story."""
    if decision.state is None:
        return decision
    now = datetime.now(UTC)
    where = {"topic": source.topic, "partition": source.partition, "offset": source.offset}
    entries = [HistoryEntry(at=now, what=what, detail=detail[:300], **where)]
    entries += [HistoryEntry(at=now, what="command", detail=f"{c.type} request {c.request_id}") for c in decision.commands]
    if decision.parked is not None:
        entries.append(HistoryEntry(at=now, what="parked", detail=f"{decision.parked.reason}: "
                                                                   f"{decision.parked.message}"[:300]))
    return dataclasses.replace(decision, state=with_history(decision.state, *entries,
                                                            touch=decision.outcome != "duplicate"))


def _describe_result(result: object) -> str:
    if isinstance(result, DocumentVoided):
        return f"{result.doc_type} Id={result.qbo_id} DocNumber={result.doc_number} voided"
    if isinstance(result, PaymentReceived):
        return (f"Payment Id={result.qbo_id} PaymentRefNum={result.ref_num} Amount={result.amount} "
                f"{'created' if result.created else 'found (already existed)'}")
    if isinstance(result, DocumentCreated):
        return (f"{result.doc_type} Id={result.qbo_id} DocNumber={result.doc_number} TotalAmt={result.total_amt} "
                f"{'created' if result.created else 'found (already existed)'}")
    if isinstance(result, CustomerResolved):
        return f"customer {result.email} is Id={result.customer_id}"
    if isinstance(result, ItemResolved):
        return f"item {result.name} is Id={result.item_id}"
    if isinstance(result, CommandFailed):
        return (f"{result.command_type} failed ({result.reason or 'permanent'}) after {len(result.attempts)} "
                f"attempt(s): {result.message}")
    return type(result).__name__


def _log_requested(order_id: str, order_ref: str, decision: Decision) -> None:
    if not decision.outcome.endswith("requested") or decision.mapped is None:
        return
    mapped = decision.mapped
    log.info("order_id=%s order=%s requesting %s DocNumber=%s total=%s", order_id, order_ref, mapped.doc_type,
             mapped.document.DocNumber, mapped.document.computed_total())


def _log_later(order_id: str, order_ref: str, decision: Decision) -> None:
    """The command a credit memo, invoice or cancellation sent (the order's own is `_log_requested`'s)."""
    for cmd in decision.commands:
        if isinstance(cmd, CreateDocument) and cmd.doc_type in ("RefundReceipt", "CreditMemo"):
            log.info("order_id=%s order=%s requesting %s DocNumber=%s total=%s", order_id, order_ref, cmd.doc_type,
                     cmd.document.DocNumber, cmd.document.computed_total())
        elif isinstance(cmd, VoidDocument):
            log.info("order_id=%s order=%s cancelled in Magento: voiding %s Id=%s DocNumber=%s", order_id, order_ref,
                     cmd.doc_type, cmd.qbo_id, cmd.doc_number)
        elif isinstance(cmd, ReceivePayment):
            log.info("order_id=%s order=%s invoice %s paid: receiving Payment %s of %s against Invoice", order_id,
                     order_ref, cmd.invoice_ref, cmd.payment.PaymentRefNum, cmd.payment.TotalAmt)
