"""What `qbo.dead-letter` holds: a command QuickBooks refused for good, with every attempt.

Records are keyed by order id. `magqb dlq` lists, shows, retries and purges them;
a retry or a purge is itself a record (`action`), so the topic stays the history.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Attempt(BaseModel):
    model_config = ConfigDict(frozen=True)
    at: datetime
    error_class: str
    message: str
    fault: dict[str, Any] | None = None


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    action: Literal["dead"] = "dead"
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    order_id: str
    order_ref: str
    realm_id: str
    command_type: str
    command: dict[str, Any]  # the command as it was dispatched (or, if parked before dispatch, would have been)
    reason: str  # permanent | retries_exhausted | internal | reconciliation | mapping
    attempts: list[Attempt]
    dead_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Parked by the orders agent before dispatch (reconciliation, mapping): the order event itself.
    # `dlq retry` sends it back to magento.orders, so it is mapped again with the current mapping file.
    order_event: dict[str, Any] | None = None


class DeadLetterAction(BaseModel):
    """A later decision about dead letters: retried (sent back to dispatch) or purged."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    action: Literal["retried", "purged"]
    ids: list[str]
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
