"""What the orders agent decides about an order's later events, as pure functions.

A credit memo, a paid invoice or the cancellation of an order is a *follow-up* of the order
(`schemas.state.FollowUp`), kept in the order's state under its Magento id, so a duplicate is a
no-op and an event that comes early waits:

    (none) --credit memo | invoice--> pending (the follow-up waits for its order)
    order not booked yet             --> follow-up waiting; booked → it goes on
    waiting --order booked--> resolving (its items) | requested (its command out) | failed (parked)
    resolving --ItemResolved--> requested
    requested --DocumentCreated | PaymentReceived | DocumentVoided--> done
    requested | resolving --CommandFailed--> failed (parked: a dead letter holding this event)
    failed --`dlq retry` or a new delivery--> as if it came now

A cancellation of a booked order voids its document, unless a refund or payment is linked to it:
then it is parked with both facts, for a person. Invariant (property-tested with the order's):
resolving and requested always have a command outstanding; failed always has a dead letter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from app import jsonutil
from app.domain import request_ids
from app.domain.decision import Command, Decision, Parked
from app.domain.follow_up_mapping import map_creditmemo, map_payment, refund_item_needs
from app.domain.mapping import MappingConfig, MappingError
from app.domain.money import ZERO, to_cents
from app.domain.state_size import MAX_FOLLOW_UPS
from schemas.commands import CreateDocument, EnsureItem, ReceivePayment, VoidDocument
from schemas.dead_letter import Attempt
from schemas.events import AnyResult, CommandFailed, DocumentCreated, DocumentVoided, PaymentReceived
from schemas.magento import MagentoCreditMemo, MagentoInvoice
from schemas.state import FollowUp, ItemEntry, OrderState, SaleFacts

ItemLookup = Callable[[str], ItemEntry | None]
FollowUpResult = AnyResult

VOID_KEY = "void"
STALE_REFERENCE = "stale_reference"  # as app.domain.order_flow's
LIVE = ("resolving", "requested", "done")  # a follow-up that is, or will be, in QuickBooks


# Why a sent command may have been given up although QuickBooks made the document (its answer lost).
# A refusal (a validation fault, docnumber_taken, document_differs, stale_reference) proves nothing was made.
AMBIGUOUS = ("retries_exhausted", "internal")
# Failures of a create that prove QuickBooks made nothing under its DocNumber (as order_flow's).
REFUSED = ("docnumber_taken", "permanent", "mapping", "reconciliation", "over_refund", "over_payment")


def may_be_in_quickbooks(fu: FollowUp) -> bool:
    """Live, or parked after its command went out with no answer (it may exist)."""
    if fu.status in LIVE:
        return True
    return fu.status == "failed" and fu.doc_type is not None and (fu.error or "").split(":")[0] in AMBIGUOUS


def find(state: OrderState | None, kind: str, key: str) -> FollowUp | None:
    if state is None:
        return None
    return next((f for f in state.follow_ups if f.kind == kind and f.key == key), None)


def put(state: OrderState, fu: FollowUp) -> OrderState:
    """`state` with `fu` in place of the follow-up of the same kind and key (or added last)."""
    rest = [f for f in state.follow_ups if not (f.kind == fu.kind and f.key == fu.key)]
    at = next((i for i, f in enumerate(state.follow_ups) if f.kind == fu.kind and f.key == fu.key), len(rest))
    return state.model_copy(update={"follow_ups": [*rest[:at], fu, *rest[at:]]})


def envelope_of(fu: FollowUp) -> dict[str, Any] | None:
    """The event `dlq retry` re-sends for a parked follow-up."""
    if fu.body is None:
        return None
    kind = {"refund": "creditmemo", "payment": "invoice", "void": "order"}[fu.kind]
    return {"schema_version": 1, "event_id": fu.event_id, "source": "parked", "kind": kind, kind: fu.body}


def voided(state: OrderState) -> bool:
    fu = find(state, "void", VOID_KEY)
    return fu is not None and fu.status in ("requested", "done")


# ---------------------------------------------------------------- arrivals


def _arrive(state: OrderState | None, fu: FollowUp, order_key: str, retry_of: str | None, replay_id: str | None,
            advance: Callable[[OrderState, FollowUp], Decision]) -> Decision:
    """A later event arrived: a duplicate is a no-op; an early one waits for its order; else it goes on."""
    fu = fu.model_copy(update={"salt": request_ids.attempt_salt(retry_of, replay_id)})
    existing = find(state, fu.kind, fu.key)
    if existing is not None and state is not None and (existing.status != "failed" or (not retry_of and replay_id)):
        if replay_id:
            return Decision(state=None, outcome="duplicate")
        return Decision(state=state.model_copy(update={"duplicates_seen": state.duplicates_seen + 1}),
                        outcome="duplicate")
    if existing is not None and state is not None and not fu.salt and existing.body == fu.body:
        # The very body it was parked with, again: nothing new, no QuickBooks call (`magqb dlq retry` tries again).
        return Decision(state=state.model_copy(update={"duplicates_seen": state.duplicates_seen + 1}),
                        outcome="duplicate")
    if existing is not None and not fu.salt:
        # A new delivery of a parked one: an earlier attempt may have landed, so ids of its own and a
        # lookup first (as `dlq retry` gets).
        fu = fu.model_copy(update={"salt": f"again:{fu.event_id}"})
    if existing is not None and existing.doc_number and existing.kind in ("refund", "payment") and (
            (existing.error or "").split(":")[0] not in REFUSED):
        # Its number while QuickBooks may hold it under that one (see order_flow: a refusal numbers it afresh).
        fu = fu.model_copy(update={"doc_number": existing.doc_number, "unnumbered": existing.unnumbered})
    if existing is None and state is not None and len(state.follow_ups) >= MAX_FOLLOW_UPS:
        # No real order has this many credit memos and invoices: a person looks (the row must stay one record).
        parked = Parked("too_many_later_events", f"order {state.order_ref} has {len(state.follow_ups)} credit memos, "
                        f"invoices and cancellations already (at most {MAX_FOLLOW_UPS}): {fu.kind} {fu.ref} is not "
                        "booked; book it by hand in QuickBooks, then `magqb dlq purge` this letter",
                        f"map_{fu.kind}", None, retry_event=envelope_of(fu))
        return Decision(state=None, outcome="parked", parked=parked)
    if state is None:
        pending = OrderState(status="pending", order_ref=order_key, event_id=fu.event_id, follow_ups=[fu])
        return Decision(state=pending, outcome="waiting_for_order")
    if state.status != "synced":
        return Decision(state=put(state, fu), outcome="waiting_for_order")
    return advance(state, fu)


def on_creditmemo(state: OrderState | None, memo: MagentoCreditMemo, raw: dict[str, Any], event_id: str,
                  items: ItemLookup, cfg: MappingConfig, realm_id: str, retry_of: str | None = None,
                  replay_id: str | None = None) -> Decision:
    fu = FollowUp(kind="refund", key=str(memo.entity_id), ref=memo.refund_ref, status="waiting", event_id=event_id,
                  body=raw)
    return _arrive(state, fu, memo.key, retry_of, replay_id,
                   lambda s, f: _advance_refund(s, f, items, cfg, realm_id))


def on_invoice(state: OrderState | None, invoice: MagentoInvoice, raw: dict[str, Any], event_id: str,
               cfg: MappingConfig, realm_id: str, retry_of: str | None = None,
               replay_id: str | None = None) -> Decision:
    if not invoice.paid:  # an open or cancelled invoice moves no money
        return Decision(state=state, outcome="ignored")
    fu = FollowUp(kind="payment", key=str(invoice.entity_id), ref=invoice.invoice_ref, status="waiting",
                  event_id=event_id, body=raw)
    return _arrive(state, fu, invoice.key, retry_of, replay_id,
                   lambda s, f: _advance_payment(s, f, cfg, realm_id))


def on_cancel(state: OrderState, raw_order: dict[str, Any], event_id: str, cfg: MappingConfig, realm_id: str,
              retry_of: str | None = None, replay_id: str | None = None) -> Decision:
    """Magento cancelled an order that is booked or on its way (one never booked is skipped by on_order)."""
    fu = FollowUp(kind="void", key=VOID_KEY, ref="cancellation", status="waiting", event_id=event_id, body=raw_order)
    return _arrive(state, fu, "", retry_of, replay_id, lambda s, f: _advance_void(s, f, realm_id))


def parked_with_document(state: OrderState) -> bool:
    """Parked after its create went out (it has a DocNumber): QuickBooks may hold its document. Or
    cancelled so already, its lookup-and-void parked in turn (a `dlq retry` of that goes again)."""
    if not state.doc_number or state.doc_type not in ("SalesReceipt", "Invoice"):
        return False
    if state.status == "skipped":
        return find(state, "void", VOID_KEY) is not None
    return state.status == "failed"  # a refused create forgets its number (order_flow._on_failure)


def on_cancel_parked(state: OrderState, raw_order: dict[str, Any], event_id: str, realm_id: str,
                     retry_of: str | None = None, replay_id: str | None = None) -> Decision:
    """Magento cancelled an order whose create was parked (retries exhausted, an internal error, a document
    that differed): the document is looked up by its remembered Id, else its DocNumber, and voided if there.
    The order is final (`skipped`) at once: no delivery of it books it any more."""
    assert state.doc_number is not None and state.doc_type in ("SalesReceipt", "Invoice")
    existing = find(state, "void", VOID_KEY)
    if existing is not None and (existing.status != "failed" or not retry_of):
        if replay_id:
            return Decision(state=None, outcome="duplicate")
        return Decision(state=state.model_copy(update={"duplicates_seen": state.duplicates_seen + 1}),
                        outcome="duplicate")
    salt = request_ids.attempt_salt(retry_of, replay_id)
    fu = FollowUp(kind="void", key=VOID_KEY, ref="cancellation", status="requested", event_id=event_id,
                  body=raw_order, salt=salt, doc_type=state.doc_type, doc_number=state.doc_number,
                  qbo_id=state.qbo_id, total_amt=state.total_amt)
    command = VoidDocument(order_id=_order_key(state, fu), order_ref=state.order_ref, realm_id=realm_id,
                           request_id=request_ids.request_id(realm_id, "void-parked",
                                                             f"{state.doc_type}:{state.doc_number}", salt),
                           doc_type=state.doc_type, qbo_id=state.qbo_id, doc_number=state.doc_number,
                           sync_token=state.sync_token if state.qbo_id else None,
                           customer_id=state.sale.customer_id if state.sale is not None else None,
                           unnumbered=state.unnumbered)
    fu = fu.model_copy(update={"outstanding": [command.request_id]})
    why = state.error if state.status == "failed" else None
    done = put(state, fu).model_copy(update={
        "status": "skipped", "order": None, "outstanding": [],
        "error": f"cancelled in Magento while parked ({(why or 'see its dead letter')[:200]}): its {state.doc_type} "
                 f"{state.doc_number} is looked up and voided if QuickBooks has it"})
    return Decision(state=done, commands=[command], outcome="void_requested")


NO_SALE_FACTS = "no_sale_facts"


def after_booking(state: OrderState, items: ItemLookup, cfg: MappingConfig, realm_id: str,
                  outcome: str = "synced") -> Decision:
    """The order's document exists (or the facts its later documents need came): the follow-ups that
    waited for it go on, in the order they came — and those parked for want of those facts."""
    decision = Decision(state=state, outcome=outcome)
    for fu in state.follow_ups:
        reopen = fu.status == "failed" and (fu.error or "").startswith(NO_SALE_FACTS) and state.sale is not None
        if fu.status != "waiting" and not reopen:
            continue
        if reopen:
            fu = fu.model_copy(update={"status": "waiting", "error": None})
        current = decision.state
        assert current is not None
        fu = find(current, fu.kind, fu.key) or fu
        step = _advance(current, fu, items, cfg, realm_id)
        parked = [p for p in (decision.parked, *decision.more_parked, step.parked, *step.more_parked) if p]
        decision = Decision(state=step.state or current, commands=[*decision.commands, *step.commands],
                            outcome=outcome, parked=parked[0] if parked else None, more_parked=tuple(parked[1:]))
    return decision


def _advance(state: OrderState, fu: FollowUp, items: ItemLookup, cfg: MappingConfig, realm_id: str) -> Decision:
    if fu.kind == "refund":
        return _advance_refund(state, fu, items, cfg, realm_id)
    if fu.kind == "payment":
        return _advance_payment(state, fu, cfg, realm_id)
    return _advance_void(state, fu, realm_id)


def _park(state: OrderState, fu: FollowUp, reason: str, message: str, command: Command | None = None) -> Decision:
    failed = fu.model_copy(update={"status": "failed", "outstanding": [], "error": f"{reason}: {message}"[:1000]})
    parked = Parked(reason, message, command.type if command else f"map_{fu.kind}",
                    command.model_dump(mode="json") if command else None,
                    retry_event=envelope_of(fu))
    return Decision(state=put(state, failed), outcome="parked", parked=parked)


def _booked_facts(state: OrderState, fu: FollowUp) -> Decision | SaleFacts:
    if state.sale is None or state.qbo_id is None or state.doc_type not in ("SalesReceipt", "Invoice"):
        return _park(state, fu, NO_SALE_FACTS, f"order {state.order_ref} was booked by a magqb that kept no sale "
                     f"facts: `magqb replay --order {state.order_ref}` re-delivers the order, which fills them in and "
                     f"books this (then `magqb dlq purge` this letter)")
    if voided(state):
        return _park(state, fu, "order_voided", f"order {state.order_ref} was cancelled and its {state.doc_type} "
                     f"Id={state.qbo_id} voided: a {fu.kind} of it cannot be booked")
    return state.sale


# ---------------------------------------------------------------- refunds


def _in_quickbooks(state: OrderState, fu: FollowUp) -> Decimal:
    """What the order's other refunds (or payments) in QuickBooks come to, counting those that may be there
    (`fu` itself, coming back after it was parked, is not one of them)."""
    return sum((f.total_amt or ZERO for f in state.follow_ups
                if f.kind == fu.kind and f.key != fu.key and f.status != "resolving" and may_be_in_quickbooks(f)),
               ZERO)


def _advance_refund(state: OrderState, fu: FollowUp, items: ItemLookup, cfg: MappingConfig,
                    realm_id: str, fresh: bool = False) -> Decision:
    sale = _booked_facts(state, fu)
    if isinstance(sale, Decision):
        return sale
    assert fu.body is not None and state.doc_type is not None
    memo = MagentoCreditMemo.model_validate(fu.body)
    refunded, amount = _in_quickbooks(state, fu), to_cents(memo.grand_total)
    if state.total_amt is not None and refunded + amount > state.total_amt:
        # Checked before any QBO call: Magento never refunds more than was paid; a memo that would is wrong.
        return _park(state, fu, "over_refund", f"credit memo {memo.refund_ref} refunds {amount}; with the {refunded} "
                     f"refunded before, that is more than the {state.total_amt} order {state.order_ref} booked")
    try:
        needs = refund_item_needs(memo, sale, cfg)
    except MappingError as exc:
        return _park(state, fu, "mapping", str(exc))
    known = {n.name: items(n.name) for n in needs}
    missing = [n for n in needs if known[n.name] is None]
    common = {"order_id": memo.key, "order_ref": state.order_ref, "realm_id": realm_id}
    if missing:
        if fu.outstanding:
            return Decision(state=put(state, fu.model_copy(update={"status": "resolving"})), outcome="waiting")
        commands: list[Command] = [EnsureItem(
            **common, request_id=request_ids.item_request_id(realm_id, n.name, fu.salt), fresh=fresh, name=n.name,
            sku=n.sku,
            description=n.description, item_type=n.item_type, income_account_id=cfg.income_account_id,
        ) for n in missing]
        resolving = fu.model_copy(update={"status": "resolving", "outstanding": [c.request_id for c in commands]})
        return Decision(state=put(state, resolving), commands=commands, outcome="waiting")
    ids = {name: entry.item_id for name, entry in known.items() if entry is not None}
    try:
        paid = any(f.kind == "payment" and may_be_in_quickbooks(f) for f in state.follow_ups)
        mapped = map_creditmemo(memo, state.order_ref, state.doc_type, sale, ids, cfg, paid=paid, number=fu.doc_number)
    except MappingError as exc:
        return _park(state, fu, "mapping", str(exc))
    body = jsonutil.dumps(mapped.document.to_qbo())
    command = CreateDocument(
        **common, request_id=request_ids.document_request_id(realm_id, mapped.doc_type, mapped.document.DocNumber,
                                                             body, fu.salt),
        doc_type=mapped.doc_type, document=mapped.document, magento_grand_total=memo.grand_total, verify=bool(fu.salt),
        find_by_note=fu.unnumbered,
    )
    total = mapped.document.computed_total()
    if mapped.mismatch is not None:
        return _park(state, fu, "reconciliation", f"credit memo {memo.refund_ref}: document total {total} vs Magento "
                     f"grand_total {mapped.mismatch.magento_grand_total} (difference {mapped.mismatch.difference}, "
                     f"beyond the adjustment tolerance {cfg.adjustment_tolerance})", command)
    requested = fu.model_copy(update={"status": "requested", "outstanding": [command.request_id],
                                      "doc_type": mapped.doc_type, "doc_number": mapped.document.DocNumber,
                                      "total_amt": total, "error": None})
    return Decision(state=put(state, requested), commands=[command], outcome="refund_requested")


# ---------------------------------------------------------------- payments


def _advance_payment(state: OrderState, fu: FollowUp, cfg: MappingConfig, realm_id: str) -> Decision:
    if state.doc_type == "SalesReceipt":
        # Magento invoices every order it captures; a SalesReceipt was paid at checkout: nothing to book.
        done = fu.model_copy(update={"status": "done", "body": None, "outstanding": [],
                                     "error": "paid at checkout (booked as a SalesReceipt): nothing to book"})
        return Decision(state=put(state, done), outcome="ignored")
    sale = _booked_facts(state, fu)
    if isinstance(sale, Decision):
        return sale
    assert fu.body is not None and state.qbo_id is not None
    invoice = MagentoInvoice.model_validate(fu.body)
    try:
        payment = map_payment(invoice, state.order_ref, sale, state.qbo_id, cfg, number=fu.doc_number)
    except MappingError as exc:
        return _park(state, fu, "mapping", str(exc))
    command = ReceivePayment(
        order_id=invoice.key, order_ref=state.order_ref, realm_id=realm_id,
        request_id=request_ids.request_id(realm_id, "pay", f"{payment.PaymentRefNum}:{payment.TotalAmt}", fu.salt),
        invoice_ref=invoice.invoice_ref, payment=payment, verify=bool(fu.salt),
    )
    # The Invoice's open balance is its total less its payments (a CreditMemo is the customer's credit,
    # not applied to the Invoice by itself).
    paid = _in_quickbooks(state, fu)
    if state.total_amt is not None and paid + payment.TotalAmt > state.total_amt:
        return _park(state, fu, "over_payment", f"invoice {invoice.invoice_ref} pays {payment.TotalAmt}; Invoice "
                     f"Id={state.qbo_id} of order {state.order_ref} is {state.total_amt} with {paid} paid before: "
                     f"that is more than it is open for", command)
    requested = fu.model_copy(update={"status": "requested", "outstanding": [command.request_id], "doc_type": "Payment",
                                      "doc_number": payment.PaymentRefNum, "total_amt": payment.TotalAmt, "error": None})
    return Decision(state=put(state, requested), commands=[command], outcome="payment_requested")


# ---------------------------------------------------------------- cancellation


def _advance_void(state: OrderState, fu: FollowUp, realm_id: str) -> Decision:
    if state.qbo_id is None or state.doc_type not in ("SalesReceipt", "Invoice"):
        return _park(state, fu, "no_document", f"order {state.order_ref} was cancelled but its document is unknown")
    linked = [f for f in state.follow_ups if f.kind in ("refund", "payment") and may_be_in_quickbooks(f)
              and f.doc_type is not None]
    if linked:
        facts = "; ".join(f"{f.doc_type} {f.doc_number or ''} Id={f.qbo_id or '(on its way)'} {f.total_amt} "
                          f"(Magento {'credit memo' if f.kind == 'refund' else 'invoice'} {f.ref})" for f in linked)
        return _park(state, fu, "cancel_with_linked",
                     f"order {state.order_ref} was cancelled in Magento, but its {state.doc_type} {state.doc_number} "
                     f"Id={state.qbo_id} ({state.total_amt}) has {facts} linked in QuickBooks: decide by hand in "
                     f"QuickBooks (void the sale and what is linked to it, or leave the books as they are), then "
                     f"`magqb dlq purge` this letter — a retry would find the same facts")
    assert state.doc_number is not None
    command = VoidDocument(order_id=_order_key(state, fu), order_ref=state.order_ref, realm_id=realm_id,
                           request_id=request_ids.request_id(realm_id, "void", f"{state.doc_type}:{state.qbo_id}",
                                                             fu.salt),
                           doc_type=state.doc_type, qbo_id=state.qbo_id, doc_number=state.doc_number,
                           sync_token=state.sync_token)
    requested = fu.model_copy(update={"status": "requested", "outstanding": [command.request_id],
                                      "doc_type": state.doc_type, "doc_number": state.doc_number,
                                      "qbo_id": state.qbo_id, "total_amt": state.total_amt, "error": None})
    return Decision(state=put(state, requested), commands=[command], outcome="void_requested")


def _order_key(state: OrderState, fu: FollowUp) -> str:
    body = fu.body or {}
    return str(body.get("entity_id") or state.order_ref)


# ---------------------------------------------------------------- results


def follow_up_of(state: OrderState | None, result: FollowUpResult) -> FollowUp | None:
    """The follow-up waiting for this result, if any."""
    if state is None:
        return None
    return next((f for f in state.follow_ups if result.request_id in f.outstanding), None)


def repeated(state: OrderState | None, result: FollowUpResult) -> str:
    """"duplicate" for an answer already recorded; "conflict" when QuickBooks answered with another document
    than the one recorded for the same credit memo or invoice (a second one: a person must look)."""
    number = getattr(result, "doc_number", None) or getattr(result, "ref_num", None)
    qbo_id = getattr(result, "qbo_id", None)
    for f in state.follow_ups if state is not None else []:
        if f.status == "done" and f.doc_number == number and f.qbo_id and f.qbo_id != qbo_id and f.kind != "void":
            return "conflict"
    return "duplicate"


def on_follow_up_result(state: OrderState, fu: FollowUp, result: FollowUpResult, items: ItemLookup,
                        cfg: MappingConfig, realm_id: str) -> Decision:
    outstanding = [r for r in fu.outstanding if r != result.request_id]
    if isinstance(result, DocumentCreated | PaymentReceived | DocumentVoided):
        update: dict[str, Any] = {"status": "done", "outstanding": [], "body": None, "error": None,
                                  "qbo_id": result.qbo_id}
        if isinstance(result, DocumentVoided) and result.absent:
            update |= {"error": "QuickBooks has no document of the order: nothing to void"}
            return Decision(state=put(state, fu.model_copy(update=update)), outcome="nothing_to_void")
        if isinstance(result, DocumentCreated):
            update |= {"doc_type": result.doc_type, "doc_number": result.doc_number, "total_amt": result.total_amt}
        elif isinstance(result, PaymentReceived):
            update |= {"doc_number": result.ref_num, "total_amt": result.amount}
        outcome = {"refund": "refunded", "payment": "paid", "void": "voided"}[fu.kind]
        return Decision(state=put(state, fu.model_copy(update=update)), outcome=outcome)
    if isinstance(result, CommandFailed) and result.reason == STALE_REFERENCE and fu.kind == "refund" \
            and not fu.refs_refreshed and fu.body is not None and state.sale is not None:
        # QBO refused a cached item id (made inactive, merged): forget the memo's items and resolve them
        # again, once, under request ids of their own — as an order does.
        try:
            names = tuple(n.name.lower() for n in refund_item_needs(MagentoCreditMemo.model_validate(fu.body),
                                                                     state.sale, cfg))
        except MappingError as exc:
            return _park(state, fu, "mapping", str(exc))
        again = fu.model_copy(update={"refs_refreshed": True, "outstanding": [], "status": "waiting",
                                      "salt": f"{fu.salt}|fresh:{result.request_id}"})
        d = _advance_refund(state, again, lambda n: None if n.lower() in names else items(n), cfg, realm_id,
                            fresh=True)
        return dataclasses.replace(d, forget_items=names)
    if isinstance(result, CommandFailed):
        if result.unnumbered:
            fu = fu.model_copy(update={"unnumbered": True})
        parked = _park(state, fu, result.reason or "permanent", result.message)
        assert parked.parked is not None
        letter = dataclasses.replace(parked.parked, command_type=result.command_type, command=result.command,
                                     attempts=tuple(Attempt.model_validate(a) for a in result.attempts))
        return dataclasses.replace(parked, parked=letter, outcome="failed")
    # An item of a refund resolved.
    rest = fu.model_copy(update={"outstanding": outstanding})
    if outstanding or fu.status != "resolving":
        return Decision(state=put(state, rest), outcome="waiting")
    return _advance_refund(state, rest, items, cfg, realm_id)

