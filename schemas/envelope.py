"""The event the ingress writes to `magento.orders`: the source of truth for every order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app import jsonutil

ENVELOPE_VERSION: Literal[1] = 1
# What the event carries. Events from before credit memos and invoices existed have no kind: orders.
# A notice books nothing: a source told us something of an order worth its story (put on hold, a
# notification whose order Magento's REST API does not know).
EventKind = Literal["order", "creditmemo", "invoice", "notice"]


class EnvelopeError(ValueError):
    """An event on `magento.orders` that cannot be read (not JSON, unknown version, bad fields)."""


class Notice(BaseModel):
    """What a `notice` event says of an order: a line for its story, nothing to book."""

    model_config = ConfigDict(frozen=True)

    order_id: str = Field(pattern=r"^[1-9][0-9]{0,18}$")
    what: str = Field(min_length=1, max_length=80)
    detail: str = Field("", max_length=500)


class OrderEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = ENVELOPE_VERSION
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1)
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str = Field(min_length=1, description="who produced it: webhook, replay, backfill …")
    kind: EventKind = "order"
    # The verified order (a new or cancelled one), credit memo or invoice exactly as Magento sent it:
    # later schema versions re-read the log. The one the kind names is there, the others are not.
    order: dict[str, Any] | None = None
    creditmemo: dict[str, Any] | None = None
    invoice: dict[str, Any] | None = None
    notice: dict[str, Any] | None = None  # {"order_id": "…", "what": "…", "detail": "…"}
    # Set by `magqb dlq retry`: the dead letter this delivery retries (it salts the request ids).
    retry_of: str | None = None
    # Set by `magqb replay`, `reconcile --fix` and `magqb import`: the run that (re-)fed this event, and
    # the event it copies (replays). A replayed event of a booked order changes nothing; a missing or parked one is booked
    # under request ids of the run, with a DocNumber lookup first (an earlier attempt may have landed).
    replay_id: str | None = None
    replay_of: str | None = None
    # Set by a replay: the source the event it copies first came from (a change feed's events are
    # judged as that feed's, see order_flow.unseen_and_old).
    origin: str | None = None
    # `reconcile --fix`: the order is booked but QuickBooks lacks its document: look it up by DocNumber
    # and create it only if it is really not there.
    recheck: bool = False
    # `magqb replay --stuck`: the order waits (resolving, requested) with nothing in flight for it: send its
    # commands again under ids of their own, looking first. Ignored once the order has moved on.
    stuck: bool = False

    @model_validator(mode="after")
    def _carries_its_kind(self) -> OrderEnvelope:
        if getattr(self, self.kind) is None:
            raise ValueError(f"a {self.kind} event without its {self.kind}")
        return self

    @property
    def body(self) -> dict[str, Any]:
        """The order, credit memo or invoice the event carries."""
        body = getattr(self, self.kind)
        assert isinstance(body, dict)
        return body


def envelope_bytes(order: dict[str, Any], source: str, kind: EventKind = "order", event_id: str | None = None,
                   **extra: Any) -> tuple[str, bytes]:
    """(event id, serialized OrderEnvelope) for a verified order (or credit memo, invoice), without a
    model round-trip: the ingress's hot path. `decode_envelope` reads it back as an OrderEnvelope.
    `event_id`: the sender's own id of the event, where it has one that is the same on every retry."""
    event_id = event_id or uuid.uuid4().hex
    body = {
        "schema_version": ENVELOPE_VERSION,
        "event_id": event_id,
        "received_at": datetime.now(UTC).isoformat(),
        "source": source,
        **({"kind": kind} if kind != "order" else {}),
        kind: order,
        **extra,
    }
    return event_id, jsonutil.dumps(body)


def decode_envelope(raw: bytes | None) -> OrderEnvelope:
    if not raw:
        raise EnvelopeError("empty event")
    try:
        data = jsonutil.loads(raw)
    except ValueError as exc:
        raise EnvelopeError(f"event is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EnvelopeError("event is not a JSON object")
    version = data.get("schema_version", ENVELOPE_VERSION)
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope schema_version {version!r} (this worker reads {ENVELOPE_VERSION})")
    try:
        return OrderEnvelope.model_validate(data)
    except ValidationError as exc:
        raise EnvelopeError(f"bad envelope: {exc.error_count()} error(s): {exc.errors()[0]['msg']}") from None
