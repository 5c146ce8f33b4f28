"""When an order on its way to QuickBooks is stuck: pure, for the monitor and `magqb replay --stuck`.

An order waiting for its customer, items or document (`resolving`, `requested`) changes state when an
answer comes: a result, or a failure after the whole retry ladder. One that has not changed for longer
than the ladder takes, and then some, waits for a command that is gone (deleted with an expired topic,
lost to a bug): nothing will ever move it but an operator (`magqb replay --stuck`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.retry_ladder import Rung

IN_PROGRESS = ("resolving", "requested")
MARGIN = timedelta(hours=1)  # a command that went through every rung is answered well within this


def stuck_after(ladder: tuple[Rung, ...], minutes: float | None = None) -> timedelta:
    """`MAGQB_STUCK_AFTER_MINUTES`, else the whole retry ladder and an hour."""
    if minutes is not None:
        return timedelta(minutes=minutes)
    return timedelta(seconds=sum(r.seconds for r in ladder)) + MARGIN


def is_stuck(status: Any, updated_at: Any, now: datetime, after: timedelta) -> bool:
    """A row (its status and its updated_at, as stored: ISO text or a datetime) waiting longer than `after`."""
    if status not in IN_PROGRESS:
        return False
    when = as_datetime(updated_at)
    return when is not None and now - when > after


def as_datetime(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
