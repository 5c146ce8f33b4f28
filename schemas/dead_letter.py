"""What `qbo.dead-letter` holds: a command QuickBooks refused for good, with every attempt.

Records are keyed by order id. `magqb dlq` lists, shows, retries and purges them;
a retry or a purge is itself a record (`action`), so the topic stays the history.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.redact import scrub


class Attempt(BaseModel):
    model_config = ConfigDict(frozen=True)
    at: datetime
    error_class: str
    message: str
    fault: dict[str, Any] | None = None

    @field_validator("message")
    @classmethod
    def _no_secrets(cls, v: str) -> str:
        return scrub(v)


class EventSource(BaseModel):
    """Where the event a letter stands for was read: `dlq retry` puts it back there."""

    model_config = ConfigDict(frozen=True)
    topic: str
    partition: int
    offset: int
    key: str | None = None


def letter_id(*parts: object) -> str:
    """A dead letter's id from what it is about: writing the same letter twice (a retried Kafka
    send, a redelivered event) gives the same id, and `magqb dlq` shows it once."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:12]


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
    # permanent | retries_exhausted | internal | unreadable | reconciliation | mapping | docnumber_taken
    reason: str
    attempts: list[Attempt]
    dead_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Parked by the orders agent before dispatch (reconciliation, mapping): the order event itself.
    # `dlq retry` sends it back to magento.orders, so it is mapped again with the current mapping file.
    order_event: dict[str, Any] | None = None
    # An event that could not be read or handled (reason unreadable/internal): where it was and its
    # exact bytes (base64), so `dlq retry` can put it back once a worker can handle it.
    source: EventSource | None = None
    raw_value: str | None = None
    # What was left out to keep the letter under the producer's size limit, if anything.
    omitted: list[str] = Field(default_factory=list)

    @staticmethod
    def encode_raw(raw: bytes | None) -> str | None:
        return base64.b64encode(raw).decode() if raw is not None else None

    def raw_bytes(self) -> bytes | None:
        return base64.b64decode(self.raw_value) if self.raw_value is not None else None

    def why_not_retriable(self) -> str | None:
        """None when `dlq retry` can put this letter back (its order, its event or its command)."""
        if self.order_event is not None or (self.raw_value is not None and self.source is not None):
            return None
        if self.command and self.command.get("type"):
            return None
        return "it carries neither its order, nor its event, nor a command (see `magqb dlq show`)"

    def shrunk(self, max_bytes: int) -> DeadLetter:
        """The letter within `max_bytes`: the command (which mapping the order event again rebuilds),
        then the raw copy of a readable event, then all but the last attempt are left out, each
        named in `omitted`."""
        letter = self
        steps: list[tuple[str, dict[str, Any]]] = [
            ("command", {"command": {}}),
            ("raw_value", {"raw_value": None} if self.order_event is not None else {}),
            ("attempts", {"attempts": self.attempts[-1:]}),
            # Last resort: an unreadable event too large to keep (nothing magqb wrote is that large).
            ("raw_value (too large to keep)", {"raw_value": None} if self.raw_value is not None else {}),
        ]
        for name, update in steps:
            if len(letter.model_dump_json()) <= max_bytes:
                break
            if update and any(getattr(letter, k) != v for k, v in update.items()):
                letter = letter.model_copy(update={**update, "omitted": [*letter.omitted, name]})
        return letter


class DeadLetterAction(BaseModel):
    """A later decision about dead letters: retried (sent back to dispatch) or purged."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    action: Literal["retried", "purged"]
    ids: list[str]
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
