"""The console's order lists: what the overview counts and what a search finds, from the order states. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from schemas.state import OrderState

WAITING = ("resolving", "requested", "pending")
PAGE = 200


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    order_ref: str
    status: str  # the state, or "cancelled" for a booked order voided since
    email: str
    doc_type: str | None
    doc_number: str | None
    total: Decimal | None
    received_at: datetime | None
    booked_at: datetime | None
    updated_at: datetime


def booked_at(st: OrderState) -> datetime | None:
    """When the order's document was booked: the result that brought its QuickBooks Id."""
    if not st.qbo_id:
        return None
    for h in st.history:
        if h.what == "result" and f"Id={st.qbo_id}" in h.detail:
            return _aware(h.at)
    return _aware(st.updated_at) if st.status == "synced" else None


def cancelled(st: OrderState) -> bool:
    return any(f.kind == "void" and f.status == "done" for f in st.follow_ups)


def row(order_id: str, st: OrderState, emails: dict[str, str] | None = None) -> OrderRow:
    """`emails`: QuickBooks customer id → e-mail, for a booked order (its row keeps the customer, not the body)."""
    email = ""
    if isinstance(st.order, dict):
        email = str(st.order.get("customer_email") or "")
    if not email and st.sale is not None and emails:
        email = emails.get(st.sale.customer_id, "")
    return OrderRow(order_id, st.order_ref, "cancelled" if cancelled(st) else st.status, email, st.doc_type,
                    st.doc_number, st.total_amt, _aware(st.received_at) if st.received_at else None, booked_at(st),
                    _aware(st.updated_at))


@dataclass(frozen=True)
class Summary:
    booked_today: int
    booked_this_week: int
    waiting: int
    parked: int
    cancelled: int
    total: int
    by_state: dict[str, int]
    oldest_unbooked: OrderRow | None


def summarize(states: dict[str, OrderState], now: datetime) -> Summary:
    today = now.astimezone(UTC).date()
    week = today - timedelta(days=today.weekday())  # since Monday
    rows = [row(k, st) for k, st in states.items()]
    booked = [r.booked_at.date() for r in rows if r.booked_at is not None]
    unbooked = [r for r in rows if r.status in WAITING]
    oldest = min(unbooked, key=lambda r: r.received_at or r.updated_at, default=None)
    return Summary(
        booked_today=sum(1 for d in booked if d == today), booked_this_week=sum(1 for d in booked if d >= week),
        waiting=len(unbooked), parked=sum(1 for r in rows if r.status == "failed"),
        cancelled=sum(1 for r in rows if r.status == "cancelled"), total=len(rows),
        by_state=dict(Counter(r.status for r in rows)), oldest_unbooked=oldest)


def search(states: dict[str, OrderState], text: str = "", status: str = "", since: date | None = None,
           until: date | None = None, limit: int = PAGE, emails: dict[str, str] | None = None) -> list[OrderRow]:
    """Orders matching all that is given: an increment id, entity id or e-mail (or a part of one), a state, and
    a range of days the order came in (inclusive). Newest first."""
    text = text.strip().lower()
    out = []
    for order_id, st in states.items():
        r = row(order_id, st, emails)
        if text and not (text in r.order_ref.lower() or text == order_id or (r.email and text in r.email.lower())):
            continue
        if status and r.status != status:
            continue
        day = (r.received_at or r.updated_at).date()
        if (since and day < since) or (until and day > until):
            continue
        out.append(r)
    out.sort(key=lambda r: r.received_at or r.updated_at, reverse=True)
    return out[:limit]


def exact(states: dict[str, OrderState], text: str) -> str | None:
    """The one order an id names exactly (increment id or entity id), for a search that goes straight to it."""
    text = text.strip()
    if text in states:
        return text
    hits = [k for k, st in states.items() if st.order_ref == text]
    return hits[0] if len(hits) == 1 else None


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)
