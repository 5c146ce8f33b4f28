"""`magqb reconcile`: the orders of the log against the documents in QuickBooks, for a date range.

The log side is every order event of `magento.orders` (the latest event of each order) and its credit
memos, with the order-state table beside it; the QuickBooks side is every SalesReceipt and Invoice dated
in the range (a day of slack each side: TxnDate is the store's calendar day, created_at is UTC) and every
RefundReceipt and CreditMemo dated from its start on (a refund comes after its sale), read in pages of
1,000 — a handful of reads for a month. Each order must net, in QuickBooks, to Magento's grand_total less
its credit memos (0 once cancelled: its document voided). `compare` is pure; the rest is IO.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError

from app import jsonutil, topics
from app.adapters import kafka_io
from app.adapters.qbo_client import QboClient
from app.domain.mapping import MappingConfig, doc_number, number_for
from app.domain.money import to_cents
from app.domain.naming import qbo_quote
from app.domain.order_search import int_field
from schemas.magento import MagentoCreditMemo, MagentoOrder
from schemas.state import OrderState

DOC_TYPES = ("SalesReceipt", "Invoice")
REFUND_TYPES = ("RefundReceipt", "CreditMemo")
PAGE = 1000


@dataclass
class LogOrder:
    order_id: str
    order_ref: str
    created_at: datetime | None
    grand_total: Decimal | None
    doc_number: str
    cancelled: bool  # cancelled in Magento (nothing is booked for it unless it was booked before)
    state: OrderState | None = None
    refunds: dict[str, Decimal] = field(default_factory=dict)  # its credit memos: DocNumber → grand_total

    @property
    def magento_net(self) -> Decimal | None:
        if self.cancelled:
            return Decimal(0)
        if self.grand_total is None:
            return None
        return self.grand_total - sum(self.refunds.values(), Decimal(0))


@dataclass(frozen=True)
class QboDoc:
    doc_type: str
    qbo_id: str
    doc_number: str
    total: Decimal
    txn_date: str | None = None


@dataclass
class Finding:
    kind: str  # missing | booked_twice | total_differs | not_voided | refund_missing | unknown
    order_id: str = ""
    order_ref: str = ""
    doc_number: str = ""
    magento_total: Decimal | None = None
    qbo_total: Decimal | None = None
    qbo_ids: list[str] = field(default_factory=list)
    detail: str = ""

    def row(self) -> dict[str, Any]:
        return {"kind": self.kind, "order_id": self.order_id, "order_ref": self.order_ref,
                "doc_number": self.doc_number,
                "magento_total": str(self.magento_total) if self.magento_total is not None else "",
                "qbo_total": str(self.qbo_total) if self.qbo_total is not None else "",
                "qbo_ids": ",".join(self.qbo_ids), "detail": self.detail}


COLUMNS = ("kind", "order_id", "order_ref", "doc_number", "magento_total", "qbo_total", "qbo_ids", "detail")


def _why_missing(o: LogOrder) -> str:
    s = o.state
    if s is None:
        return "never handled by a worker (replay books it)"
    if s.status == "synced":
        return f"booked as {s.doc_type} Id={s.qbo_id}, but QuickBooks has no document with its DocNumber"
    if s.status == "failed":
        return f"parked: {(s.error or '?')[:200]} (see `magqb dlq list`)"
    if s.status in ("resolving", "requested"):
        return f"in progress ({s.status}): commands are out"
    return s.status


def _sale_findings(o: LogOrder, found: list[QboDoc]) -> list[Finding]:
    if not found:
        if o.cancelled or (o.state is not None and o.state.status == "skipped"):
            return []  # cancelled in Magento: nothing belongs in the books (a booked one's document removed)
        return [Finding("missing", o.order_id, o.order_ref, o.doc_number, o.grand_total, None, [], _why_missing(o))]
    if len(found) > 1:
        return [Finding("booked_twice", o.order_id, o.order_ref, o.doc_number, o.grand_total,
                        sum((d.total for d in found), Decimal(0)), [f"{d.doc_type}:{d.qbo_id}" for d in found],
                        f"{len(found)} documents carry its DocNumber")]
    d = found[0]
    if o.cancelled:
        if d.total != 0:
            return [Finding("not_voided", o.order_id, o.order_ref, o.doc_number, Decimal(0), d.total,
                            [f"{d.doc_type}:{d.qbo_id}"], "cancelled in Magento, its document not voided")]
        return []
    if o.grand_total is not None and d.total != o.grand_total:
        return [Finding("total_differs", o.order_id, o.order_ref, o.doc_number, o.grand_total, d.total,
                        [f"{d.doc_type}:{d.qbo_id}"], f"difference {d.total - o.grand_total}")]
    return []


def compare(in_range: list[LogOrder], known_numbers: set[str], docs: list[QboDoc],
            prefixes: str | tuple[str, ...]) -> list[Finding]:
    """The differences between the orders of the range and QuickBooks' documents. `known_numbers` is
    every DocNumber of every order in the log (in the range or not): a document is unknown only when
    no order anywhere in the log would have it."""
    ours = tuple(p for p in ((prefixes,) if isinstance(prefixes, str) else prefixes) if p)
    by_number: dict[str, list[QboDoc]] = defaultdict(list)
    for d in docs:
        by_number[d.doc_number].append(d)
    out: list[Finding] = []
    for o in in_range:
        mine = _sale_findings(o, by_number.get(o.doc_number, []))
        for number, amount in sorted(o.refunds.items()):
            refunds = by_number.get(number, [])
            if not refunds:
                mine.append(Finding("refund_missing", o.order_id, o.order_ref, number, amount, None, [],
                                    "a credit memo of the order without its RefundReceipt/CreditMemo"))
            elif len(refunds) > 1:
                mine.append(Finding("booked_twice", o.order_id, o.order_ref, number, amount,
                                    sum((d.total for d in refunds), Decimal(0)),
                                    [f"{d.doc_type}:{d.qbo_id}" for d in refunds], f"{len(refunds)} refund documents"))
            elif refunds[0].total != amount:
                d = refunds[0]
                mine.append(Finding("total_differs", o.order_id, o.order_ref, number, amount, d.total,
                                    [f"{d.doc_type}:{d.qbo_id}"], f"refund difference {d.total - amount}"))
        net = o.magento_net
        sale = by_number.get(o.doc_number, [])
        qbo_net = sum((d.total for d in sale), Decimal(0)) - sum(
            (d.total for n in o.refunds for d in by_number.get(n, [])), Decimal(0))
        if net is not None and qbo_net != net:
            # Each finding says what it does to the order's net (the sum tells the books' error).
            for f in mine:
                f.detail += f"; the order nets {qbo_net} in QuickBooks, {net} in Magento (grand_total less credit memos)"
        out += mine
    for number, found in sorted(by_number.items()):
        if ours and number.startswith(ours) and number not in known_numbers:  # no prefix: ours are not told
            for d in found:
                out.append(Finding("unknown", "", "", number, None, d.total, [f"{d.doc_type}:{d.qbo_id}"],
                                   f"a {d.doc_type} dated {d.txn_date or '?'} with our prefix; no order in the log "
                                   "has this DocNumber"))
    return out


def used_prefixes(states: dict[str, OrderState]) -> tuple[str, ...]:
    """Every DocNumber prefix the installation's orders and refunds went out under, read off the numbers
    the states keep (an order keeps its number for life): after a prefix changes, documents under the
    old one are still ours, and reconcile tells them."""
    found: dict[str, None] = {}

    def add(number: str | None, *refs: str) -> None:
        for ref in refs:
            if number and ref and number.endswith(ref) and len(number) > len(ref):
                prefix = number[:-len(ref)]
                if not prefix.isdigit():  # digits alone are no prefix (a number QuickBooks gave, an id's head)
                    found[prefix] = None
                return

    for key, st in states.items():
        add(st.doc_number, st.order_ref, key)
        for fu in st.follow_ups:
            if fu.kind == "refund":
                add(fu.doc_number, fu.ref)
    return tuple(found)


def _money(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def _refund_number(state: OrderState | None, memo: MagentoCreditMemo, cfg: MappingConfig) -> str:
    """The number the credit memo went out under (kept for life), else the one the configuration gives it."""
    fu = next((f for f in state.follow_ups if f.kind == "refund" and f.key == str(memo.entity_id)), None) \
        if state is not None else None
    return fu.doc_number if fu is not None and fu.doc_number else number_for(memo.refund_ref,
                                                                             cfg.refund_prefix(memo.store_id))


async def read_log_orders(c: Any, states: dict[str, OrderState], cfg: MappingConfig, since: datetime,
                          until: datetime | None,
                          on_batch: Callable[[int, int], None] = lambda d, t: None) -> tuple[list[LogOrder], set[str]]:
    """(the orders created in [since, until), every DocNumber the log's orders have)."""
    spans = await kafka_io.whole(c, topics.ORDERS)
    total = sum(s.size for s in spans)
    latest: dict[str, dict[str, Any]] = {}
    memos: dict[str, dict[str, tuple[str, Decimal]]] = defaultdict(dict)  # order → memo id → (DocNumber, total)
    done = 0
    async for batch in kafka_io.read_spans(c, spans):
        for r in batch:
            try:
                data = jsonutil.loads(r.value or b"")
                order = data.get("order") if isinstance(data, dict) else None
                memo = data.get("creditmemo") if isinstance(data, dict) else None
            except ValueError:
                order = memo = None
            if isinstance(order, dict) and r.key:
                latest[r.key.decode(errors="replace")] = order
            elif isinstance(memo, dict) and r.key:
                try:
                    m = MagentoCreditMemo.model_validate(memo)
                except ValidationError:
                    continue  # its dead letter tells
                memos[m.key][str(m.entity_id)] = (_refund_number(states.get(m.key), m, cfg), to_cents(m.grand_total))
        done += len(batch)
        on_batch(done, total)
    known: set[str] = set()
    in_range: list[LogOrder] = []
    for key, raw in latest.items():
        state = states.get(key)
        ref = str(raw.get("increment_id") or key)
        number = (state.doc_number if state is not None and state.doc_number else
                  doc_number(SimpleNamespace(order_ref=ref), cfg.doc_prefix(int_field(raw, "store_id"))))  # type: ignore[arg-type]
        known.add(number)
        refunds = {n: total for n, total in memos.get(key, {}).values()}
        known.update(refunds)
        try:
            order = MagentoOrder.model_validate(raw)
        except ValidationError:
            continue  # never bookable; its dead letter tells
        created = order.created_at.replace(tzinfo=UTC) if order.created_at else None
        if created is None or created < since or (until is not None and created >= until):
            continue
        in_range.append(LogOrder(key, order.order_ref, created, to_cents(order.grand_total), number,
                                 (order.state or "").lower() == "canceled", state, refunds))
    return in_range, known


async def read_documents(client: QboClient, since: date, until: date,
                         on_page: Callable[[int], None] = lambda n: None) -> tuple[list[QboDoc], int]:
    """Every SalesReceipt and Invoice with TxnDate in [since, until], and every RefundReceipt and CreditMemo
    from `since` on, 1,000 a page: (documents, reads)."""
    docs: list[QboDoc] = []
    reads = 0
    for entity in (*DOC_TYPES, *REFUND_TYPES):
        upto = f" AND TxnDate <= {qbo_quote(until.isoformat())}" if entity in DOC_TYPES else ""
        select = f"SELECT * FROM {entity} WHERE TxnDate >= {qbo_quote(since.isoformat())}{upto} ORDERBY Id"
        async for rows in client.pages(entity, select, PAGE):
            reads += 1
            for row in rows:
                total = _money(row.get("TotalAmt"))
                if row.get("DocNumber") and total is not None:
                    docs.append(QboDoc(entity, str(row.get("Id")), str(row["DocNumber"]), total, row.get("TxnDate")))
            on_page(len(docs))
    return docs, reads


def qbo_window(since: datetime, until: datetime | None) -> tuple[date, date]:
    """TxnDate is the store's day: a day of slack each side of the UTC range."""
    end = until or datetime.now(UTC)
    return (since.astimezone(UTC) - timedelta(days=1)).date(), (end.astimezone(UTC) + timedelta(days=1)).date()


ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class Reconciliation:
    findings: list[Finding]
    summary: dict[str, Any]

    @property
    def missing(self) -> list[str]:
        return [f.order_id for f in self.findings if f.kind == "missing"]


async def run_reconcile(settings: Any, cfg: MappingConfig, since: datetime, until: datetime | None,
                        on_progress: ProgressFn = lambda what, done, total: None) -> Reconciliation:
    """The orders the log holds for the range against the documents QuickBooks holds: what `magqb reconcile` and
    the console's Reconcile page show. Raises TokenRefreshError or QboError when QuickBooks cannot be read."""
    from app.adapters.qbo_access import qbo_client
    from app.tools import order_log

    states = await order_log.read_states(settings.kafka_bootstrap_servers, settings.app_id,
                                         lambda d, t: on_progress("reading order states", d, t))
    c = kafka_io.consumer(settings.kafka_bootstrap_servers, "magqb-reconcile")
    await c.start()
    try:
        in_range, known = await read_log_orders(c, states, cfg, since, until,
                                                lambda d, t: on_progress("reading the order log", d, t))
    finally:
        await kafka_io.close(c)
    lo, hi = qbo_window(since, until)
    async with qbo_client(settings) as client:
        docs, reads = await read_documents(client, lo, hi)
    # Every prefix in use now and every one an order or refund went out under before (numbers are for life).
    findings = compare(in_range, known, docs, (*cfg.doc_prefixes, *used_prefixes(states)))
    kinds = {k: sum(1 for f in findings if f.kind == k) for k in ("missing", "booked_twice", "total_differs",
                                                                    "not_voided", "refund_missing", "unknown")}
    rng = f"{since.isoformat()} .. {until.isoformat() if until else 'now'}"
    return Reconciliation(findings, {"range": rng, "orders": len(in_range), "documents": len(docs),
                                     "qbo_reads": reads, "findings": len(findings), **kinds})


async def fix_missing(settings: Any, order_ids: list[str]) -> Any:
    """Re-drive missing orders through a replay that looks each one up in QuickBooks before creating it (never a
    duplicate). Returns the replay's progress (its id, how many were re-driven)."""
    from app.tools import order_log
    from app.tools.replay import ReplayCheckpoint, Selection, run_replay

    sel = Selection(from_offset=0, orders=frozenset(order_ids))
    statuses = await order_log.order_statuses(settings.kafka_bootstrap_servers, settings.app_id)
    c = kafka_io.consumer(settings.kafka_bootstrap_servers, "magqb-reconcile-fix")
    producer = kafka_io.producer(settings.kafka_bootstrap_servers, "magqb-reconcile-fix", settings.max_event_bytes)
    await c.start()
    await producer.start()
    try:
        checkpoint = ReplayCheckpoint(settings.data_dir, sel, recheck=True,
                                      where=f"{settings.kafka_bootstrap_servers}|{settings.app_id}")
        return await run_replay(c, producer, sel, checkpoint, resume=False, recheck=True, statuses=statuses)
    finally:
        await kafka_io.close(producer)
        await kafka_io.close(c)
