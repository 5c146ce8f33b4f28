"""The orders agent's loop without Kafka: decide, send the commands to a QBO (the sandbox through the real
dispatcher, or a stand-in), feed the answers back — for tests of an order's whole life."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from app.domain.decision import Command, Decision
from app.domain.mapping import MappingConfig
from app.domain.order_flow import on_order, on_result
from app.domain.order_life import on_creditmemo, on_invoice
from schemas.events import CommandFailed, CustomerResolved, ItemResolved
from schemas.magento import MagentoCreditMemo, MagentoInvoice, MagentoOrder
from schemas.state import CustomerEntry, ItemEntry, OrderState

Answer = Callable[[Command], Awaitable[Any]]


@dataclass
class Books:
    """One worker's tables, and what it parked."""

    cfg: MappingConfig
    realm: str
    answer: Answer
    states: dict[str, OrderState] = field(default_factory=dict)
    customers: dict[str, CustomerEntry] = field(default_factory=dict)
    items: dict[str, ItemEntry] = field(default_factory=dict)
    parked: list[tuple[str, str]] = field(default_factory=list)  # (order key, reason)
    sent: list[Command] = field(default_factory=list)

    def customer(self, key: str) -> CustomerEntry | None:
        return self.customers.get(key)

    def item(self, name: str) -> ItemEntry | None:
        return self.items.get(name.lower())

    async def _apply(self, key: str, d: Decision) -> None:
        if d.state is not None:
            self.states[key] = d.state
        for p in (d.parked, *d.more_parked):
            if p is not None:
                self.parked.append((key, p.reason))
        for cmd in d.commands:
            self.sent.append(cmd)
            result = await self.answer(cmd)
            if isinstance(result, CustomerResolved):
                self.customers[result.key or result.email] = CustomerEntry(customer_id=result.customer_id,
                                                                           display_name=result.display_name)
            elif isinstance(result, ItemResolved):
                self.items[result.name.lower()] = ItemEntry(item_id=result.item_id)
            elif not hasattr(result, "order_id"):  # RetryLater / GiveUp from the dispatcher
                result = CommandFailed(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=self.realm,
                                       request_id=cmd.request_id, command_type=cmd.type,
                                       error_class=str(getattr(result, "error_class", "?")),
                                       message=str(getattr(result, "message", result)), reason="permanent")
            await self._apply(key, on_result(self.states.get(key), result, self.customer, self.item, self.cfg,
                                             self.realm))

    async def order(self, raw: dict[str, Any], event_id: str = "ev", retry_of: str | None = None) -> None:
        order = MagentoOrder.model_validate(raw)
        await self._apply(order.key, on_order(self.states.get(order.key), order, raw, event_id, self.customer,
                                              self.item, self.cfg, self.realm, retry_of=retry_of))

    async def creditmemo(self, raw: dict[str, Any], event_id: str = "cm") -> None:
        memo = MagentoCreditMemo.model_validate(raw)
        await self._apply(memo.key, on_creditmemo(self.states.get(memo.key), memo, raw, event_id, self.item,
                                                  self.cfg, self.realm))

    async def invoice(self, raw: dict[str, Any], event_id: str = "inv") -> None:
        invoice = MagentoInvoice.model_validate(raw)
        await self._apply(invoice.key, on_invoice(self.states.get(invoice.key), invoice, raw, event_id, self.cfg,
                                                  self.realm))
