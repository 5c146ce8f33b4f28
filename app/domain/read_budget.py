"""Intuit meters reads (queries and GETs: "CorePlus" calls) per month: project this month's to its end.

Pure: the adapter (app/adapters/read_budget.py) keeps the count and the clock.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

DAY = 86400.0


def month_key(now: datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


def month_bounds(now: datetime) -> tuple[float, float]:
    """Start and end of `now`'s calendar month (UTC), as epoch seconds."""
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    return start.timestamp(), start.timestamp() + days * DAY


def projected_reads(reads_so_far: int, now: datetime) -> float:
    """Reads by the month's end at the pace so far. The pace is taken over at least one day, so the first
    minutes of a month (or of a worker's first run) do not extrapolate a handful of reads thirty-fold."""
    start, end = month_bounds(now)
    elapsed = max(now.timestamp() - start, DAY)
    return reads_so_far * (end - start) / elapsed
