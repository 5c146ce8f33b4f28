"""The order state machine over random interleavings of QBO's answers (hypothesis).

Whatever order results arrive in, duplicated or failing: an order that is resolving or
requested always has a command out; a failed one always has a dead letter; once QuickBooks
behaves and the operator retries what was parked, every order ends booked — exactly once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.mapping import MappingConfig
from app.domain.order_flow import Decision, on_order, on_result
from schemas.commands import CreateDocument, EnsureCustomer, EnsureItem
from schemas.events import CommandFailed, CustomerResolved, DocumentCreated, ItemResolved
from schemas.magento import MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState
from tests.conftest import blueprint_order

CFG = MappingConfig()
REALM = "123"
RAW = blueprint_order()
ORDER = MagentoOrder.model_validate(RAW)
REASONS = ("permanent", "retries_exhausted", "internal", "docnumber_taken", "stale_reference")


class World:
    """The dispatcher and the tables as the orders agent sees them: commands out, results back."""

    def __init__(self, known_customer: bool, known_items: set[str]) -> None:
        self.customers: dict[str, CustomerEntry] = (
            {"jane.doe@example.com": CustomerEntry(customer_id="9", display_name="Jane Doe")} if known_customer else {})
        self.items = {n: ItemEntry(item_id=f"i-{n}") for n in known_items}
        self.out: list[Any] = []  # commands sent, not answered
        self.answered: list[Any] = []  # results delivered (for duplicates)
        self.state: OrderState | None = None
        self.letters = 0
        self.letters_since_failed = 0
        self.documents = 0

    def apply(self, d: Decision) -> None:
        if self.state is not None and self.state.status == "synced":
            assert not d.commands and d.parked is None, "a booked order asked for more"
        for key in d.forget_customers:
            self.customers.pop(key, None)
        for key in d.forget_items:
            self.items.pop(key, None)
        self.out.extend(d.commands)
        if d.parked is not None:
            self.letters += 1
            self.letters_since_failed += 1
        if d.state is not None:
            if d.state.status != "failed":
                self.letters_since_failed = 0
            self.state = d.state

    def deliver(self, result: Any) -> None:
        if isinstance(result, CustomerResolved):
            self.customers[result.key or result.email] = CustomerEntry(customer_id=result.customer_id,
                                                                       display_name=result.display_name)
        elif isinstance(result, ItemResolved):
            self.items[result.name.lower()] = ItemEntry(item_id=result.item_id)
        self.answered.append(result)
        self.apply(on_result(self.state, result, self.customers.get, lambda n: self.items.get(n.lower()), CFG,
                             REALM))

    def answer(self, cmd: Any, ok: bool, reason: str) -> Any:
        common = {"order_id": cmd.order_id, "order_ref": cmd.order_ref, "realm_id": REALM,
                  "request_id": cmd.request_id}
        if not ok:
            return CommandFailed(**common, command_type=cmd.type, error_class=reason, message=reason, reason=reason)
        if isinstance(cmd, EnsureCustomer):
            return CustomerResolved(**common, email=cmd.email, key=cmd.key, customer_id="9",
                                    display_name="Jane Doe", created=False)
        if isinstance(cmd, EnsureItem):
            return ItemResolved(**common, name=cmd.name, item_id=f"i-{cmd.name.lower()}", created=False)
        assert isinstance(cmd, CreateDocument)
        # QBO's requestid + the DocNumber guard: the second create of an order finds the first document.
        created = self.documents == 0
        self.documents += created
        return DocumentCreated(**common, doc_type=cmd.doc_type, doc_number=cmd.document.DocNumber, qbo_id="77",
                               total_amt=Decimal("53.60"), created=created)

    def check(self) -> None:
        s = self.state
        assert s is not None
        if s.status in ("resolving", "requested"):
            assert s.outstanding, f"{s.status} with nothing outstanding"
            out_ids = [c.request_id for c in self.out]
            assert all(r in out_ids for r in s.outstanding), "waiting on a command that is not out"
        if s.status == "failed":
            assert self.letters_since_failed >= 1, "failed without a dead letter"


step = st.tuples(st.sampled_from(["answer", "duplicate", "redeliver", "retry"]), st.integers(0, 10**6),
                 st.booleans(), st.sampled_from(REASONS))


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.sets(st.sampled_from(["prod001", "prod002", "shipping"])), st.lists(step, max_size=40))
def test_no_order_waits_on_nothing_and_every_order_ends_booked_once(known_customer: bool, known_items: set[str],
                                                                    steps: list[tuple[str, int, bool, str]]) -> None:
    w = World(known_customer, known_items)
    w.apply(on_order(None, ORDER, RAW, "ev1", w.customers.get, lambda n: w.items.get(n.lower()), CFG, REALM))
    w.check()
    retries = 0
    for kind, pick, ok, reason in steps:
        if kind == "answer" and w.out:
            cmd = w.out.pop(pick % len(w.out))
            w.deliver(w.answer(cmd, ok or reason == "retries_exhausted" and pick % 2 == 0, reason))
        elif kind == "duplicate" and w.answered:
            w.deliver(w.answered[pick % len(w.answered)])
        elif kind == "redeliver":  # the order event again: a Magento re-send, a replay, a rebalance
            w.apply(on_order(w.state, ORDER, RAW, "ev1", w.customers.get, lambda n: w.items.get(n.lower()), CFG,
                             REALM))
        elif kind == "retry" and w.state is not None and w.state.status == "failed":
            retries += 1
            w.apply(on_order(w.state, ORDER, RAW, "ev1", w.customers.get, lambda n: w.items.get(n.lower()), CFG,
                             REALM, retry_of=f"letter{retries}"))
        w.check()
    # QuickBooks behaves from now on; the operator retries whatever is parked.
    for _ in range(50):
        if w.state is not None and w.state.status == "synced":
            break
        if w.out:
            w.deliver(w.answer(w.out.pop(0), True, ""))
        elif w.state is not None and w.state.status == "failed":
            retries += 1
            w.apply(on_order(w.state, ORDER, RAW, "ev1", w.customers.get, lambda n: w.items.get(n.lower()), CFG,
                             REALM, retry_of=f"letter{retries}"))
        w.check()
    assert w.state is not None and w.state.status == "synced"
    # More steps after the booking (late duplicates, re-sent webhooks) ask for nothing: see World.apply.
    for result in list(w.answered):
        w.deliver(result)
    w.apply(on_order(w.state, ORDER, RAW, "ev1", w.customers.get, lambda n: w.items.get(n.lower()), CFG, REALM))
    assert w.state.status == "synced"
