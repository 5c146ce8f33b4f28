"""What the console records of each action on the `magqb.console-audit` topic: who, what, when, on which order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["login", "login_refused", "logout", "retry", "purge", "fix", "connect", "reconcile"]


class ConsoleAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    user: str
    role: str
    action: Action
    order_id: str | None = None  # the order it touched, if one: shown on that order's page
    target: str = ""  # a dead letter's id, a reason, a date range
    detail: str = ""
