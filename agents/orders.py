"""The orders agent, keyed by order id: decode → decide (app.domain.order_flow) → emit.

It reads `magento.orders` (new orders) and `qbo.results` (what QBO did), both
keyed by order id and co-partitioned with the `order_state` table. Customer and
item ids come from global tables fed only by result events.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from pydantic import ValidationError

from app import metrics, topics
from app.domain.order_flow import Decision, on_order, on_result
from schemas.dead_letter import Attempt, DeadLetter
from schemas.envelope import OrderEnvelope
from app.worker_app import WorkerContext
from schemas.commands import encode_command
from schemas.envelope import EnvelopeError, decode_envelope
from schemas.events import CustomerResolved, DocumentCreated, ItemResolved, decode_result
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState

log = logging.getLogger("magqb.orders")


def register_orders_agent(ctx: WorkerContext) -> None:
    realm_id = ctx.settings.quickbooks_realm_id

    def customer(email: str) -> CustomerEntry | None:
        row = ctx.customers.get(email)
        return CustomerEntry.model_validate(row) if row else None

    def item(name: str) -> ItemEntry | None:
        row = ctx.items.get(name.lower())
        return ItemEntry.model_validate(row) if row else None

    def load_state(order_id: str) -> OrderState | None:
        row = ctx.order_state.get(order_id)
        return OrderState.model_validate(row) if row else None

    async def park(order_id: str, decision: Decision) -> None:
        """Not booked: into the dead-letter topic with both totals (or the mapping error) and the order
        event itself, so `magqb dlq retry` maps it again once the mapping file or the data is fixed."""
        parked, state = decision.parked, decision.state
        assert parked is not None and state is not None
        event = OrderEnvelope(event_id=state.event_id, source="parked", order=state.order or {})
        command = parked.command.model_dump(mode="json") if parked.command else {}
        letter = DeadLetter(
            order_id=order_id, order_ref=state.order_ref, realm_id=realm_id,
            command_type=parked.command.type if parked.command else "map_order", command=command,
            reason=parked.reason, attempts=[Attempt(at=state.updated_at, error_class=parked.reason,
                                                    message=parked.message)],
            order_event=event.model_dump(mode="json"),
        )
        fut = await ctx.dead_letter.send(key=order_id.encode(), value=letter.model_dump_json().encode())
        await fut
        metrics.DEAD_LETTERS.labels(reason=parked.reason).inc()
        if parked.reason == "reconciliation":
            metrics.RECONCILE_MISMATCHES.inc()
        log.error("order_id=%s order=%s not booked, dead-lettered as %s (%s): %s", order_id, state.order_ref,
                  letter.id, parked.reason, parked.message)

    async def apply(order_id: str, decision: Decision) -> None:
        if decision.parked is not None:
            await park(order_id, decision)
        # Commands are acknowledged by Kafka before the state that says they were sent is written.
        for cmd in decision.commands:
            # Keyed by realm: one dispatcher at a time spends a realm's quota.
            fut = await ctx.commands.send(key=cmd.realm_id.encode(), value=encode_command(cmd))
            await fut
        if decision.state is not None:
            ctx.order_state[order_id] = decision.state.model_dump(mode="json")
        metrics.ORDERS.labels(outcome=decision.outcome).inc()

    async def handle_order(raw: bytes | None, key: str) -> None:
        try:
            envelope = decode_envelope(raw)
            order = MagentoOrder.model_validate(envelope.order)
        except (EnvelopeError, ValidationError) as exc:
            metrics.BAD_EVENTS.labels(topic=topics.ORDERS).inc()
            log.error("order_id=%s skipped an unreadable event on %s: %s", key or "?", topics.ORDERS,
                      str(exc).splitlines()[0])
            return
        state = load_state(order.key)
        decision = on_order(state, order, envelope.order, envelope.event_id, customer, item, ctx.mapping, realm_id)
        await apply(order.key, decision)
        if decision.outcome == "duplicate":
            log.info("order_id=%s order=%s duplicate delivery (event %s): already %s, nothing to do",
                     order.key, order.order_ref, envelope.event_id, state.status if state else "?")
        elif decision.outcome == "skipped":
            log.info("order_id=%s order=%s cancelled in Magento and never booked: not booked", order.key,
                     order.order_ref)
        elif decision.outcome == "waiting":
            log.info("order_id=%s order=%s resolving %d reference(s) in QuickBooks", order.key, order.order_ref,
                     len(decision.commands))
        _log_requested(order.key, order.order_ref, decision)

    async def handle_result(raw: bytes | None, key: str) -> None:
        try:
            result = decode_result(raw or b"")
        except ValidationError as exc:
            metrics.BAD_EVENTS.labels(topic=topics.RESULTS).inc()
            log.error("order_id=%s skipped an unreadable event on %s: %s", key or "?", topics.RESULTS,
                      str(exc).splitlines()[0])
            return
        # The result feeds the lookup tables first: state is derived from events.
        if isinstance(result, CustomerResolved):
            ctx.customers[result.key or result.email] = CustomerEntry(
                customer_id=result.customer_id, display_name=result.display_name
            ).model_dump()
        elif isinstance(result, ItemResolved):
            ctx.items[result.name.lower()] = ItemEntry(item_id=result.item_id).model_dump()
        decision = on_result(load_state(result.order_id), result, customer, item, ctx.mapping, realm_id)
        await apply(result.order_id, decision)
        if isinstance(result, DocumentCreated) and decision.outcome == "synced":
            log.info("order_id=%s order=%s booked: QBO %s Id=%s DocNumber=%s TotalAmt=%s (%s)", result.order_id,
                     result.order_ref, result.doc_type, result.qbo_id, result.doc_number, result.total_amt,
                     "created" if result.created else "already existed")
        elif decision.outcome == "failed":
            log.error("order_id=%s order=%s failed: %s", result.order_id, result.order_ref,
                      getattr(result, "message", ""))
        _log_requested(result.order_id, result.order_ref, decision)

    @ctx.app.agent(ctx.orders_and_results, name="orders")
    async def orders(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            key = event.key.decode(errors="replace") if isinstance(event.key, bytes) else str(event.key or "")
            try:
                if event.message.topic == topics.ORDERS:
                    await handle_order(event.value, key)
                else:
                    await handle_result(event.value, key)
            except Exception:  # noqa: BLE001 - one bad event must not stop every order behind it
                metrics.BAD_EVENTS.labels(topic=event.message.topic).inc()
                log.exception("order_id=%s unexpected error handling %s offset %s", key, event.message.topic,
                              event.message.offset)


def _log_requested(order_id: str, order_ref: str, decision: Decision) -> None:
    if decision.outcome != "requested" or decision.mapped is None:
        return
    mapped = decision.mapped
    log.info("order_id=%s order=%s requesting %s DocNumber=%s total=%s", order_id, order_ref, mapped.doc_type,
             mapped.document.DocNumber, mapped.document.computed_total())
