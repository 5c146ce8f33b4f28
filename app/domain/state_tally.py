"""Orders by state, kept as rows change: the monitor's figures without reading a year of rows every round.

A partition's counts start from one scan of its rows (when this worker becomes its owner) and then
follow every row the orders agent writes. The scan may give the event loop back between slices of
keys read in order: a change to a key the scan has passed is applied, one to a key it has yet to read
is left to the scan (which will read the new row). Only rows on their way (resolving, requested) are
kept one by one, for the oldest and the stuck; the rest are counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.domain.stuck import IN_PROGRESS, as_datetime, is_stuck

STATE_NAMES = {"resolving": "waiting", "requested": "requested", "failed": "parked", "synced": "booked",
               "skipped": "cancelled", "pending": "waiting_for_order"}


def state_name(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    status = str(row.get("status"))
    return STATE_NAMES.get(status, status)


@dataclass
class _Partition:
    counts: Counter[str] = field(default_factory=Counter)
    # key -> (status, received, updated) of the rows on their way: bounded by the orders in flight
    open: dict[Any, tuple[str, datetime | None, datetime | None]] = field(default_factory=dict)
    scanned_to: Any = None  # while a scan runs: the last key it has read (keys are read in order)
    complete: bool = False

    def add(self, key: Any, row: Any) -> None:
        name = state_name(row)
        if name is None:
            return
        self.counts[name] += 1
        status = row.get("status")
        if status in IN_PROGRESS:
            self.open[key] = (status, as_datetime(row.get("received_at") or row.get("updated_at")),
                              as_datetime(row.get("updated_at")))

    def remove(self, key: Any, row: Any) -> None:
        name = state_name(row)
        if name is not None and self.counts[name] > 0:
            self.counts[name] -= 1
        self.open.pop(key, None)


@dataclass(frozen=True)
class Report:
    counts: Counter[str]
    stuck: int
    oldest: datetime | None


class StateTally:
    """Per partition: orders by state, and the rows on their way."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def begin(self, partition: int) -> None:
        self._parts[partition] = _Partition()

    def scanned(self, partition: int, rows: Iterable[tuple[Any, Any]], upto: Any = None) -> None:
        """A slice of the scan, in key order; `upto`: the last key the slice read (counted or not)."""
        part = self._parts.get(partition)
        if part is None:
            return
        for key, row in rows:
            part.add(key, row)
            part.scanned_to = key
        if upto is not None:
            part.scanned_to = upto

    def finish(self, partition: int) -> None:
        part = self._parts.get(partition)
        if part is not None:
            part.complete, part.scanned_to = True, None

    def load(self, partition: int, rows: Iterable[tuple[Any, Any]]) -> None:
        """A whole partition read at once (no change can come between)."""
        self.begin(partition)
        part = self._parts[partition]
        for key, row in rows:
            part.add(key, row)
        self.finish(partition)

    def change(self, partition: int, key: Any, old: Any, new: Any) -> None:
        part = self._parts.get(partition)
        if part is None:
            return  # not counted here (yet): the scan when it starts reads the row as it is then
        if not part.complete and (part.scanned_to is None or key > part.scanned_to):
            return  # the scan has yet to read this key: it will read the new row
        part.remove(key, old)
        part.add(key, new)

    def drop(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def complete(self) -> set[int]:
        return {p for p, part in self._parts.items() if part.complete}

    def known(self) -> set[int]:
        return set(self._parts)

    def report(self, partitions: Iterable[int], now: datetime, stuck_after: timedelta | None) -> Report:
        counts: Counter[str] = Counter({name: 0 for name in STATE_NAMES.values()})
        stuck, oldest = 0, None
        for p in partitions:
            part = self._parts.get(p)
            if part is None or not part.complete:
                continue
            counts.update(part.counts)
            for status, received, updated in part.open.values():
                if stuck_after is not None and is_stuck(status, updated, now, stuck_after):
                    stuck += 1
                if received is not None and (oldest is None or received < oldest):
                    oldest = received
        return Report(counts, stuck, oldest)
