"""What the orders agent decides, as pure functions of (state, event, lookups).

The agent does the IO (tables, topics); this module says which commands to emit
and what the order's new state is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.domain import request_ids
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
from schemas.events import CommandFailed, CustomerResolved, DocumentCreated, ItemResolved
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState, TotalMismatchRecord

Command = EnsureCustomer | EnsureItem | CreateDocument
Result = CustomerResolved | ItemResolved | DocumentCreated | CommandFailed
CustomerLookup = Callable[[str], CustomerEntry | None]
ItemLookup = Callable[[str], ItemEntry | None]


@dataclass(frozen=True)
class Decision:
    state: OrderState | None  # None: leave the table as it is
    commands: list[Command] = field(default_factory=list)
    outcome: str = ""  # for logs and metrics: requested, waiting, duplicate, synced, failed, ignored, parked
    mapped: MappedDocument | None = None
    # outcome "parked": why the order is not booked (it goes to the dead-letter topic instead)
    parked: Parked | None = None


@dataclass(frozen=True)
class Parked:
    reason: str  # reconciliation | mapping
    message: str
    command: CreateDocument | None = None  # the document that was not sent, for the operator to see


def _advance(
    order: MagentoOrder,
    base: OrderState,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
    ensure_missing: bool,
) -> Decision:
    """Map and request the document if every reference is known; else ask for what is missing."""
    try:
        cust = customer_need(order, cfg)
        needs = item_needs(order, cfg)
    except MappingError as exc:
        return _park(base, "mapping", str(exc))
    customer = customers(cust.key)
    known = {n.name: items(n.name) for n in needs}
    missing_items = [n for n in needs if known[n.name] is None]

    if customer is None or missing_items:
        commands: list[Command] = []
        if ensure_missing:
            common = {"order_id": order.key, "order_ref": order.order_ref, "realm_id": realm_id}
            if customer is None:
                commands.append(
                    EnsureCustomer(
                        **common,
                        request_id=request_ids.customer_request_id(realm_id, cust.key),
                        email=cust.email,
                        key=cust.key,
                        currency=cust.currency,
                        display_name=cust.display_name,
                        given_name=cust.given_name,
                        family_name=cust.family_name,
                        company_name=cust.company_name,
                    )
                )
            for need in missing_items:
                commands.append(
                    EnsureItem(
                        **common,
                        request_id=request_ids.item_request_id(realm_id, need.name),
                        name=need.name,
                        sku=need.sku,
                        description=need.description,
                        item_type=need.item_type,
                        income_account_id=cfg.income_account_id,
                    )
                )
        return Decision(state=base.model_copy(update={"status": "resolving"}), commands=commands, outcome="waiting")

    refs = ResolvedRefs(
        customer_id=customer.customer_id,
        customer_name=customer.display_name,
        item_ids={name: entry.item_id for name, entry in known.items() if entry is not None},
    )
    try:
        mapped = map_order(order, refs, cfg)
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
    command = CreateDocument(
        order_id=order.key,
        order_ref=order.order_ref,
        realm_id=realm_id,
        request_id=request_ids.document_request_id(realm_id, mapped.doc_type, mapped.document.DocNumber),
        doc_type=mapped.doc_type,
        document=mapped.document,
        magento_grand_total=order.grand_total,
    )
    if mapped.mismatch is not None:
        m = mapped.mismatch
        return _park(base, "reconciliation",
                     f"document total {m.document_total} vs Magento grand_total {m.magento_grand_total} "
                     f"(difference {m.difference}, beyond the adjustment tolerance {cfg.adjustment_tolerance})",
                     command, mapped, mismatch)
    state = base.model_copy(
        update={
            "status": "requested",
            "doc_type": mapped.doc_type,
            "doc_number": mapped.document.DocNumber,
            "mismatch": mismatch,
            "order": None,
        }
    )
    return Decision(state=state, commands=[command], outcome="requested", mapped=mapped)


def _park(base: OrderState, reason: str, message: str, command: CreateDocument | None = None,
          mapped: MappedDocument | None = None, mismatch: TotalMismatchRecord | None = None) -> Decision:
    """Not booked: the order waits in the dead-letter topic (a new delivery or `dlq retry` maps it again)."""
    state = base.model_copy(update={"status": "failed", "error": f"{reason}: {message}", "mismatch": mismatch})
    return Decision(state=state, outcome="parked", mapped=mapped, parked=Parked(reason, message, command))


def on_order(
    state: OrderState | None,
    order: MagentoOrder,
    raw_order: dict,
    event_id: str,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
) -> Decision:
    """A Magento order event arrived (first delivery, duplicate webhook or replay)."""
    if state is not None and state.status not in ("failed", "skipped"):
        # Already in progress or booked: a duplicate delivery or a replay books nothing.
        return Decision(
            state=state.model_copy(update={"duplicates_seen": state.duplicates_seen + 1}), outcome="duplicate"
        )
    if (order.state or "").lower() == "canceled" and (state is None or state.status in ("failed", "skipped")):
        # Never booked and already cancelled (e.g. the original of an edited order): nothing to book.
        return Decision(state=OrderState(status="skipped", order_ref=order.order_ref, event_id=event_id,
                                         error="cancelled in Magento before it was booked"), outcome="skipped")
    base = OrderState(status="resolving", order_ref=order.order_ref, event_id=event_id, order=raw_order)
    return _advance(order, base, customers, items, cfg, realm_id, ensure_missing=True)


def on_result(
    state: OrderState | None,
    result: Result,
    customers: CustomerLookup,
    items: ItemLookup,
    cfg: MappingConfig,
    realm_id: str,
) -> Decision:
    """A QBO result for this order arrived; the caller has already fed it into the tables."""
    if state is None:
        return Decision(state=None, outcome="ignored")
    if isinstance(result, DocumentCreated):
        if state.status == "synced":
            return Decision(state=None, outcome="duplicate")
        return Decision(
            state=state.model_copy(update={"status": "synced", "qbo_id": result.qbo_id, "order": None, "error": None}),
            outcome="synced",
        )
    if isinstance(result, CommandFailed):
        if state.status == "synced":
            return Decision(state=None, outcome="ignored")
        return Decision(state=state.model_copy(update={"status": "failed", "error": result.message}), outcome="failed")
    # CustomerResolved / ItemResolved — also after a failure, when a dead letter was retried.
    if state.status not in ("resolving", "failed") or state.order is None:
        return Decision(state=None, outcome="ignored")
    order = MagentoOrder.model_validate(state.order)
    return _advance(order, state, customers, items, cfg, realm_id, ensure_missing=False)
