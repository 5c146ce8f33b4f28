"""What a decision of the orders agent is: the order's new state, the commands to send, what to park.

Shared by `order_flow` (the order's own document) and `order_life` (its later events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.domain.mapping import MappedDocument
from schemas.commands import AnyCommand
from schemas.dead_letter import Attempt
from schemas.state import OrderState

Command = AnyCommand


@dataclass(frozen=True)
class Parked:
    """Why an order is not booked; it goes to the dead-letter topic with the order itself."""

    reason: str  # reconciliation | mapping | permanent | retries_exhausted | internal | docnumber_taken | …
    message: str
    command_type: str = "map_order"
    command: dict[str, Any] | None = None  # what was (or would have been) sent, for the operator to see
    attempts: tuple[Attempt, ...] = ()
    # A later event's own (a credit memo, an invoice, the cancellation): `dlq retry` re-sends this
    # event (an OrderEnvelope as JSON), not the order. None: the order's state holds what to re-send.
    retry_event: dict[str, Any] | None = None


@dataclass(frozen=True)
class Decision:
    state: OrderState | None  # None: leave the table as it is
    commands: list[Command] = field(default_factory=list)
    outcome: str = ""  # for logs and metrics: requested, waiting, duplicate, synced, failed, ignored, parked
    mapped: MappedDocument | None = None
    parked: Parked | None = None
    more_parked: tuple[Parked, ...] = ()  # later events parked in the same step (several were waiting)
    # Table keys whose cached QBO ids QBO refused: the agent deletes them before sending the commands.
    forget_customers: tuple[str, ...] = ()
    forget_items: tuple[str, ...] = ()
