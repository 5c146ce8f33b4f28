"""What the orders agent decides, as pure functions of (state, event, lookups).

The agent does the IO (tables, topics); this module says which commands to emit,
what the order's new state is, and when the order is parked in the dead-letter topic.

The state machine, whole:

    (none | failed | pending) --order event--> resolving (Ensure* out) | requested (CreateDocument out)
                                               | failed (parked: mapping, reconciliation) | skipped (cancelled)
    skipped is final: a delivery of the order from before its cancellation books nothing ("stale");
    a booked order's cancellation, credit memos and paid invoices: app.domain.order_life
    resolving --CustomerResolved/ItemResolved--> resolving | requested
    resolving | requested --CommandFailed--> failed (parked)
                          --CommandFailed(stale_reference), first time--> resolving (ids resolved again)
    requested --DocumentCreated--> synced (final)
    failed --a sibling's result--> failed (the tables learn; the dead letter stays the way back)

Invariant (property-tested): resolving and requested always have a command outstanding;
failed always has a dead letter; nothing waits on nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from app import jsonutil
from app.domain import order_life, request_ids
from app.domain.decision import Command, Decision, Parked
from app.domain.follow_up_mapping import sale_facts
from app.domain.mapping import (
    MappedDocument,
    MappingConfig,
    MappingError,
    ResolvedRefs,
    customer_need,
    item_needs,
    map_order,
)
from schemas.commands import CreateDocument, EnsureCustomer, EnsureItem
from schemas.dead_letter import Attempt
from schemas.events import AnyResult, CommandFailed, DocumentCreated, DocumentVoided, PaymentReceived
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState, TotalMismatchRecord

Result = AnyResult
CustomerLookup = Callable[[str], CustomerEntry | None]
ItemLookup = Callable[[str], ItemEntry | None]

STALE_REFERENCE = "stale_reference"
# Failures of a create that prove QuickBooks made nothing under its DocNumber: held by another document, refused.
REFUSED = ("docnumber_taken", "permanent")


def _advance(
    order: MagentoOrder,
    base: OrderState,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
    fresh: bool = False,
) -> Decision:
    """Map and request the document if every reference is known; else ask for what is missing —
    unless the commands that will answer it are still out."""
    try:
        cust = customer_need(order, cfg)
        needs = item_needs(order, cfg)
    except MappingError as exc:
        return _park(base, "mapping", str(exc))
    customer = customers(cust.key)
    known = {n.name: items(n.name) for n in needs}
    missing_items = [n for n in needs if known[n.name] is None]

    if customer is None or missing_items:
        # An order that will not reconcile is parked before it costs QBO calls for its references:
        # the totals do not depend on the ids, so a draft with the names in their place tells.
        draft = _draft(order, cust.key, cust.display_name, [n.name for n in needs], base, cfg, realm_id)
        if isinstance(draft, Decision):
            return draft
        if base.outstanding:  # the answers are on their way
            return Decision(state=base.model_copy(update={"status": "resolving"}), outcome="waiting")
        common = {"order_id": order.key, "order_ref": order.order_ref, "realm_id": realm_id, "fresh": fresh}
        commands: list[Command] = []
        if customer is None:
            commands.append(EnsureCustomer(
                **common, request_id=request_ids.customer_request_id(realm_id, cust.key, base.salt),
                email=cust.email, key=cust.key, currency=cust.currency, display_name=cust.display_name,
                given_name=cust.given_name, family_name=cust.family_name, company_name=cust.company_name,
            ))
        for need in missing_items:
            commands.append(EnsureItem(
                **common, request_id=request_ids.item_request_id(realm_id, need.name, base.salt), name=need.name,
                sku=need.sku, description=need.description, item_type=need.item_type,
                income_account_id=cfg.income_account_id,
            ))
        state = base.model_copy(update={"status": "resolving", "outstanding": [c.request_id for c in commands]})
        return Decision(state=state, commands=commands, outcome="waiting")

    refs = ResolvedRefs(
        customer_id=customer.customer_id,
        customer_name=customer.display_name,
        item_ids={name: entry.item_id for name, entry in known.items() if entry is not None},
    )
    mapped_or_parked = _map(order, refs, base, cfg, realm_id)
    if isinstance(mapped_or_parked, Decision):
        return mapped_or_parked
    mapped, command = mapped_or_parked
    state = base.model_copy(
        update={
            "status": "requested",
            "doc_type": mapped.doc_type,
            "doc_number": mapped.document.DocNumber,
            "mismatch": None,
            "outstanding": [command.request_id],
            "error": None,
            "sale": sale_facts(order, refs.customer_id, refs.customer_name, cfg),
        }
    )
    return Decision(state=state, commands=[command], outcome="requested", mapped=mapped)


def _draft(order: MagentoOrder, customer_key: str, customer_name: str, item_names: list[str], base: OrderState,
           cfg: MappingConfig, realm_id: str) -> Decision | None:
    """The parking decision if the order cannot be booked whatever its ids turn out to be, else None."""
    refs = ResolvedRefs(customer_id=customer_key, customer_name=customer_name,
                        item_ids={name: name for name in item_names})
    result = _map(order, refs, base, cfg, realm_id)
    return result if isinstance(result, Decision) else None


def _map(order: MagentoOrder, refs: ResolvedRefs, base: OrderState, cfg: MappingConfig,
         realm_id: str) -> Decision | tuple[MappedDocument, CreateDocument]:
    """The document and its command — or the decision to park the order (mapping error, totals)."""
    try:
        mapped = map_order(order, refs, cfg, number=base.doc_number)
    except MappingError as exc:
        return _park(base, "mapping", str(exc))
    mismatch = (
        TotalMismatchRecord(
            document_total=mapped.mismatch.document_total,
            magento_grand_total=mapped.mismatch.magento_grand_total,
            difference=mapped.mismatch.difference,
        )
        if mapped.mismatch
        else None
    )
    body = jsonutil.dumps(mapped.document.to_qbo())
    command = CreateDocument(
        order_id=order.key,
        order_ref=order.order_ref,
        realm_id=realm_id,
        request_id=request_ids.document_request_id(realm_id, mapped.doc_type, mapped.document.DocNumber, body,
                                                   base.salt),
        doc_type=mapped.doc_type,
        document=mapped.document,
        magento_grand_total=order.grand_total,
        store_id=order.store_id,
        verify=bool(base.salt),  # a retry or a re-resolution: an earlier attempt may have reached QuickBooks
        known_id=base.qbo_id,  # set only when a booked order is checked again (`reconcile --fix`)
        find_by_note=base.unnumbered,
    )
    if mapped.mismatch is not None:
        m = mapped.mismatch
        return _park(base, "reconciliation",
                     f"document total {m.document_total} vs Magento grand_total {m.magento_grand_total} "
                     f"(difference {m.difference}, beyond the adjustment tolerance {cfg.adjustment_tolerance})",
                     command, mapped, mismatch)
    return mapped, command


def _park(base: OrderState, reason: str, message: str, command: CreateDocument | None = None,
          mapped: MappedDocument | None = None, mismatch: TotalMismatchRecord | None = None) -> Decision:
    """Not booked: the order waits in the dead-letter topic (a new delivery or `dlq retry` maps it again)."""
    state = base.model_copy(update={"status": "failed", "error": f"{reason}: {message}", "mismatch": mismatch,
                                    "outstanding": []})
    parked = Parked(reason, message, command.type if command else "map_order",
                    command.model_dump(mode="json") if command else None)
    return Decision(state=state, outcome="parked", mapped=mapped, parked=parked)


# Sources that report every change of an order, not only its placing: an order magqb has never seen
# that one of them brings is a new order only if it is recent (see `unseen_and_old`).
CHANGE_FEEDS = ("rest-follow", "adobe-io-events")


def unseen_and_old(state: OrderState | None, order: MagentoOrder, source: str, received_at: datetime | None,
                   max_age: timedelta, replay_id: str | None = None, retry_of: str | None = None,
                   origin: str | None = None) -> bool:
    """An order a change feed brings that magqb never had (no state, or only its credit memos or invoices
    waiting) whose reported change came more than `max_age` after it was placed: an order of before
    magqb (booked by hand or another tool) that changed, not an order whose webhook was lost. It is not
    booked; `magqb import` books such orders on purpose. A replay of such an event (`origin`: the source
    it first came from) is judged the same; a `dlq retry` is an operator's decision and is not judged."""
    feed = origin or source
    if not (feed in CHANGE_FEEDS or (feed.startswith("mageos/") and not feed.endswith(".created"))):
        return False
    if retry_of or (replay_id and origin is None) or order.created_at is None:
        return False
    if state is not None and state.status != "pending":
        return False
    changed = order.updated_at or received_at  # the change reported: an outage does not age a new order
    return changed is not None and _utc(changed) - _utc(order.created_at) > max_age


def _utc(when: datetime) -> datetime:
    """Magento's times are naive UTC; envelopes carry aware ones."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def on_order(
    state: OrderState | None,
    order: MagentoOrder,
    raw_order: dict[str, Any],
    event_id: str,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
    retry_of: str | None = None,
    replay_id: str | None = None,
    recheck: bool = False,
    received_at: datetime | None = None,
    stuck: bool = False,
) -> Decision:
    """A Magento order event arrived (first delivery, duplicate webhook, replay, `dlq retry`, cancellation)."""
    seen = state.order_updated_at if state is not None else None
    cancelled = (order.state or "").lower() == "canceled"
    was_cancelled = state is not None and (state.status == "skipped" or order_life.find(state, "void", order_life.VOID_KEY))
    if seen is not None and order.updated_at is not None and not retry_of and (
            order.updated_at < seen or (order.updated_at == seen and was_cancelled and not cancelled)):
        # Older than a delivery already handled (webhooks race and are retried): it must not undo it,
        # e.g. book an order whose cancellation came first (in the same second, the cancellation wins).
        return Decision(state=None, outcome="stale")
    if was_cancelled and not cancelled and not recheck:
        # Magento's cancellation is final: a delivery of the order as it was before (a retried webhook,
        # `dlq retry` of a letter parked earlier, a replay of an older event) must not book it.
        return Decision(state=None, outcome="stale")
    if stuck and state is not None and state.status in IN_PROGRESS:  # (its cancellation waits in it, if that came)
        decision = _unstick(state, order, raw_order, event_id, customers, items, cfg, realm_id)
    elif stuck:  # it moved on since the operator looked: nothing to re-drive
        return Decision(state=None, outcome="duplicate")
    else:
        decision = _on_order(state, order, raw_order, event_id, customers, items, cfg, realm_id, retry_of, replay_id,
                             recheck, received_at)
    newest = max((t for t in (seen, order.updated_at) if t is not None), default=None)
    if decision.state is not None and newest is not None and decision.state.order_updated_at != newest:
        decision = dataclasses.replace(decision, state=decision.state.model_copy(update={"order_updated_at": newest}))
    return decision


def _on_order(
    state: OrderState | None,
    order: MagentoOrder,
    raw_order: dict[str, Any],
    event_id: str,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
    retry_of: str | None = None,
    replay_id: str | None = None,
    recheck: bool = False,
    received_at: datetime | None = None,
) -> Decision:
    salt = request_ids.attempt_salt(retry_of, replay_id)
    if not salt and state is not None and state.status == "failed" and state.order == raw_order:
        # The very body it was parked with, again (a webhook re-sent, a captured body posted again): nothing
        # new to book, and no QuickBooks call. `magqb dlq retry` is the way to try it again.
        return Decision(state=state.model_copy(update={"duplicates_seen": state.duplicates_seen + 1}),
                        outcome="duplicate")
    if not salt and state is not None and state.status == "failed":
        # A new delivery of a parked order (a source that repeats itself, the follower): an earlier attempt
        # may have landed, so ids of its own and a lookup first, as `dlq retry` gets.
        salt = f"again:{event_id}"
    cancelled = (order.state or "").lower() == "canceled"
    if state is not None and state.status == "synced" and recheck and not cancelled:
        # `reconcile --fix` found no document for a booked order: ask again — its known Id first, then its
        # DocNumber — and create only if neither is there. What it was booked as stays until then.
        base = state.model_copy(update={"status": "resolving", "event_id": event_id, "order": raw_order,
                                        "salt": salt or f"recheck:{event_id}", "outstanding": [], "error": None,
                                        "received_at": received_at})
        return _advance(order, base, customers, items, cfg, realm_id)
    if state is not None and state.status == "pending":
        # Its credit memos or invoices came first: they wait in the state this order now starts.
        later, state = state.follow_ups, None
    else:
        later = state.follow_ups if state is not None else []
    if state is not None and cancelled and state.status in ("resolving", "requested", "synced"):
        # Cancelled after it was sent to QuickBooks: its document is voided (once it exists).
        return order_life.on_cancel(state, raw_order, event_id, cfg, realm_id, retry_of=retry_of, replay_id=replay_id)
    if state is not None and cancelled and order_life.parked_with_document(state):
        # Cancelled while parked after its create went out: QuickBooks may have the document (an answer lost,
        # a total that differed). It is looked up and voided; if there is none, the order is done.
        return order_life.on_cancel_parked(state, raw_order, event_id, realm_id, retry_of=retry_of,
                                           replay_id=replay_id)
    if state is not None and state.status not in ("failed", "skipped"):
        # Already in progress or booked: a duplicate delivery or a replay books nothing. A replayed
        # event does not even count (a replay of 100,000 booked orders writes nothing).
        if state.status == "synced" and state.sale is None and state.follow_ups:
            filled = _sale_facts_of(state, order, customers, cfg)
            if filled is not None:  # booked by a magqb that kept none: its credit memos and invoices go on
                return order_life.after_booking(filled, items, cfg, realm_id, outcome="facts_filled")
        if replay_id:
            return Decision(state=None, outcome="duplicate")
        return Decision(
            state=state.model_copy(update={"duplicates_seen": state.duplicates_seen + 1}), outcome="duplicate"
        )
    if cancelled:
        # Never booked and already cancelled (e.g. the original of an edited order): nothing to book.
        return Decision(state=OrderState(status="skipped", order_ref=order.order_ref, event_id=event_id,
                                         error="cancelled in Magento before it was booked", follow_ups=later,
                                         history=state.history if state is not None else []), outcome="skipped")
    # The number its create went out under stays the order's while QuickBooks may hold a document under it (an
    # answer lost): a lookup finds that attempt even after the prefix changed or the order came back with an
    # increment id it had not. A refused create forgets it (`_on_failure`): nothing was made under it, and the
    # configuration numbers the order afresh, so `dlq retry` after a prefix fix books it.
    kept = state is not None and state.doc_number is not None and state.status in ("failed", "resolving", "requested")
    base = OrderState(status="resolving", order_ref=order.order_ref, event_id=event_id, order=raw_order,
                      salt=salt, history=state.history if state is not None else [], received_at=received_at,
                      follow_ups=later,
                      **({"doc_number": state.doc_number, "doc_type": state.doc_type, "sale": state.sale,
                          "unnumbered": state.unnumbered} if kept and state is not None else {}))
    return _advance(order, base, customers, items, cfg, realm_id)


IN_PROGRESS = ("resolving", "requested")


def _unstick(state: OrderState, order: MagentoOrder, raw_order: dict[str, Any], event_id: str,
             customers: CustomerLookup, items: ItemLookup, cfg: MappingConfig, realm_id: str) -> Decision:
    """`magqb replay --stuck`: the order waits for answers to commands that are gone (deleted with a topic,
    lost to a bug). Its commands go again under request ids of their own; the create looks its DocNumber (the
    one it first went out under) up first, so an earlier attempt that landed is found, never booked twice.
    Answers to the old commands, should they still come, are stale (not outstanding) or find the same document."""
    base = state.model_copy(update={"status": "resolving", "event_id": event_id, "order": state.order or raw_order,
                                    "salt": f"stuck:{event_id}", "outstanding": [], "error": None})
    decision = _advance(MagentoOrder.model_validate(base.order), base, customers, items, cfg, realm_id)
    return dataclasses.replace(decision, outcome=f"unstuck_{decision.outcome}")


def _sale_facts_of(state: OrderState, order: MagentoOrder, customers: CustomerLookup,
                   cfg: MappingConfig) -> OrderState | None:
    """The state with the facts later documents need, from a delivery of the booked order and the customer
    it was booked to (None when the customer is not known here, or the order cannot be read so)."""
    try:
        customer = customers(customer_need(order, cfg).key)
        if customer is None:
            return None
        return state.model_copy(update={"sale": sale_facts(order, customer.customer_id, customer.display_name, cfg)})
    except MappingError:
        return None


def _answered(state: OrderState, result: Result) -> OrderState:
    return state.model_copy(update={"outstanding": [r for r in state.outstanding if r != result.request_id]})


def _is_stale(state: OrderState, result: Result) -> bool:
    """An answer to a command this order no longer waits for (one from before a `dlq retry`).
    States from before `outstanding` existed have none: every answer counts for them."""
    return bool(state.outstanding) and result.request_id not in state.outstanding


def on_result(
    state: OrderState | None,
    result: Result,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
) -> Decision:
    """A QBO result for this order arrived; the caller has already fed it into the tables."""
    later = order_life.follow_up_of(state, result)
    if later is not None and state is not None:  # a refund's, payment's or void's
        return order_life.on_follow_up_result(state, later, result, items, cfg, realm_id)
    if isinstance(result, DocumentVoided | PaymentReceived) or (
            isinstance(result, DocumentCreated) and result.doc_type in ("RefundReceipt", "CreditMemo")):
        # A later document's answer nothing waits for: the same again (a redelivery), or a second one.
        return Decision(state=None, outcome=order_life.repeated(state, result))
    if isinstance(result, DocumentCreated):
        if state is not None and state.status == "synced" and state.qbo_id and result.qbo_id != state.qbo_id:
            # A second document for a booked order: it must not pass as a duplicate (the agent logs it loudly).
            return Decision(state=None, outcome="conflict")
        if state is None or state.status == "synced":
            return Decision(state=None, outcome="duplicate")
        booked = state.model_copy(update={"status": "synced", "qbo_id": result.qbo_id, "order": None, "error": None,
                                          "outstanding": [], "doc_type": result.doc_type,
                                          "doc_number": result.doc_number, "total_amt": result.total_amt,
                                          "sync_token": result.sync_token})
        if booked.sale is not None and result.customer_id and result.customer_id != booked.sale.customer_id:
            # Found, not created (an earlier attempt, or a document someone re-assigned): its later documents
            # go to the customer QuickBooks has it booked to.
            booked = booked.model_copy(update={"sale": booked.sale.model_copy(
                update={"customer_id": result.customer_id})})
        # Credit memos, payments and a cancellation that came while it was on its way go on now.
        return order_life.after_booking(booked, items, cfg, realm_id)
    if isinstance(result, CommandFailed):
        return _on_failure(state, result, customers, items, cfg, realm_id)
    # CustomerResolved / ItemResolved
    if state is None or state.status not in ("resolving", "failed") or state.order is None:
        return Decision(state=None, outcome="ignored")
    if state.status == "failed" or _is_stale(state, result):
        # The tables have learned the id; a parked order waits for its dead letter to be retried.
        return Decision(state=_answered(state, result) if result.request_id in state.outstanding else None,
                        outcome="ignored")
    order = MagentoOrder.model_validate(state.order)
    return _advance(order, _answered(state, result), customers, items, cfg, realm_id)


def _on_failure(
    state: OrderState | None,
    failed: CommandFailed,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
) -> Decision:
    attempts = tuple(Attempt.model_validate(a) for a in failed.attempts)
    reason = failed.reason or "permanent"
    parked = Parked(reason, failed.message, failed.command_type, failed.command, attempts)
    if state is None:  # an order this worker never saw (its state is gone): the letter still tells
        return Decision(state=None, outcome="failed", parked=parked)
    if state.status == "failed":
        # Parked already, by a sibling command's failure: one dead letter per parking is enough —
        # retrying it maps the whole order again, and this command fails again if it must.
        if failed.request_id in state.outstanding:
            return Decision(state=_answered(state, failed), outcome="ignored")
        return Decision(state=None, outcome="ignored")
    if state.status in ("synced", "skipped") or _is_stale(state, failed):
        return Decision(state=None, outcome="ignored")
    if reason == STALE_REFERENCE and not state.refs_refreshed and state.order is not None:
        # QBO refused a customer or item id we had cached (made inactive, merged, deleted): forget
        # this order's ids and resolve them again, once, under request ids of their own.
        order = MagentoOrder.model_validate(state.order)
        try:
            cust = customer_need(order, cfg)
            names = tuple(n.name for n in item_needs(order, cfg))
        except MappingError as exc:
            return _park(state, "mapping", str(exc))
        forget_c, forget_i = (cust.key,), tuple(n.lower() for n in names)
        base = state.model_copy(update={"refs_refreshed": True, "outstanding": [],
                                        "salt": f"{state.salt}|fresh:{failed.request_id}"})
        decision = _advance(order, base, lambda k: None if k in forget_c else customers(k),
                            lambda n: None if n.lower() in forget_i else items(n), cfg, realm_id, fresh=True)
        return Decision(state=decision.state, commands=decision.commands, outcome=decision.outcome,
                        parked=decision.parked, forget_customers=forget_c, forget_items=forget_i)
    # The reason leads the error, as `_park`'s do: whether the document may exist depends on it.
    update: dict[str, Any] = {"status": "failed", "error": f"{reason}: {failed.message}",
                              "unnumbered": state.unnumbered or failed.unnumbered}
    if failed.command_type == "create_document" and reason in REFUSED:
        # QuickBooks refused the create after looking (or a fresh one): nothing of the order is under that number.
        update |= {"doc_number": None, "doc_type": None}
    return Decision(state=_answered(state, failed).model_copy(update=update), outcome="failed", parked=parked)
