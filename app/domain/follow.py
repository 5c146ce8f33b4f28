"""The REST follower's paging, pure: which search to ask next and which rows are new.

Magento's `updated_at` has one-second resolution and rows move while we read (an order updated
mid-pass jumps to the end of the sort). Pages are therefore taken by key, never by number:
`time >= T` sorted by (time, entity_id), always page 1, T moving to the last row taken; a page all
of one second switches to `time = T and entity_id > X` until that second is exhausted. Each pass
starts `overlap` seconds before the cursor (a row can commit a little after the time it carries)
and skips rows already taken (`entity_id@time`), so a row is published once per change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.domain.order_search import int_field, magento_time, search_criteria
from schemas.follow import StreamCursor

MAX_PAGE_SIZE = 300  # Magento caps searches at 300 rows a page


@dataclass(frozen=True)
class Stream:
    """One search the follower keeps up with, and what its rows become on `magento.orders`."""

    name: str  # orders | creditmemos | invoices: the REST resource and the cursor's field
    time_field: str
    kind: str  # the envelope kind: order | creditmemo | invoice
    filters: tuple[tuple[str, str, str], ...] = ()


ORDERS = Stream("orders", "updated_at", "order")
CREDITMEMOS = Stream("creditmemos", "created_at", "creditmemo")
INVOICES = Stream("invoices", "updated_at", "invoice", (("state", "2", "eq"),))  # paid invoices
STREAMS = (ORDERS, CREDITMEMOS, INVOICES)


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")


def shift(value: str, seconds: float) -> str:
    return magento_time(parse_time(value) + timedelta(seconds=seconds))


def params(stream: Stream, since: str, page_size: int, after_id: int | None = None) -> list[tuple[str, str]]:
    """`time >= since` by (time, entity_id); with `after_id`: the rest of second `since` by entity_id."""
    groups = [[f] for f in stream.filters]
    if after_id is None:
        groups.append([(stream.time_field, since, "gteq")])
        sorts = [(stream.time_field, "ASC"), ("entity_id", "ASC")]
    else:
        groups += [[(stream.time_field, since, "eq")], [("entity_id", str(after_id), "gt")]]
        sorts = [("entity_id", "ASC")]
    return search_criteria(groups, sorts, min(page_size, MAX_PAGE_SIZE))


def row_time(row: dict[str, Any], stream: Stream) -> str | None:
    value = row.get(stream.time_field)
    if not isinstance(value, str):
        return None
    try:
        return magento_time(parse_time(value.strip()[:19]))
    except ValueError:
        return None


row_id = int_field


def row_key(row: dict[str, Any], stream: Stream) -> str:
    """`entity_id@time#digest`: the digest tells two versions of a row written in the same second apart
    (an order placed and cancelled within one second), so neither is taken for the other."""
    digest = hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{row_id(row)}@{row_time(row, stream)}#{digest}"


def key_time(key: str) -> str:
    return key.split("@", 1)[1].split("#", 1)[0]


# Keys a cursor keeps (≈45 bytes each, three streams in one record well under a Kafka message): past it
# the oldest are dropped, and read and published again next pass (harmless: the agent books once).
MAX_SEEN = 3_000


@dataclass
class StreamPass:
    """One pass over one stream: where the next page starts, what was taken, when it is done."""

    stream: Stream
    page_size: int
    since: str
    seen: set[str]
    after_id: int | None = None  # set while exhausting one second
    newest: str = ""
    done: bool = False

    @classmethod
    def start(cls, stream: Stream, cursor: StreamCursor, overlap_seconds: float, page_size: int) -> StreamPass:
        return cls(stream, min(page_size, MAX_PAGE_SIZE), shift(cursor.at, -overlap_seconds), set(cursor.seen),
                   newest=cursor.at)

    def next_params(self) -> list[tuple[str, str]]:
        return params(self.stream, self.since, self.page_size, self.after_id)

    def take(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The page's rows not taken before; moves the keyset past the page."""
        fresh = []
        for row in items:
            when, rid = row_time(row, self.stream), row_id(row)
            if when is None or rid is None:
                continue  # a row without id or time cannot be placed: it is not ours to guess
            key = row_key(row, self.stream)
            if key not in self.seen:
                self.seen.add(key)
                fresh.append(row)
            self.newest = max(self.newest, when)
        full = len(items) >= self.page_size
        if self.after_id is not None:  # exhausting second `since`
            ids = [i for i in (row_id(r) for r in items) if i is not None]
            if full and ids:
                self.after_id = max(ids)
            else:
                self.since, self.after_id = shift(self.since, 1), None
            return fresh
        if not full:
            self.done = True
            return fresh
        times = [t for t in (row_time(r, self.stream) for r in items) if t is not None]
        last = max(times) if times else self.since
        if last == self.since:  # a whole page of one second: take that second by entity_id
            ids = [i for i in (row_id(r) for r in items) if i is not None]
            self.after_id = max(ids) if ids else 0
        else:
            self.since = last
        return fresh

    def cursor(self, overlap_seconds: float, ceiling: str | None = None) -> StreamCursor:
        """What the next pass needs: the newest time taken (never past `ceiling`: a row stamped in the
        future must not make the cursor jump over the orders before it), and the keys it will read again."""
        at = min(self.newest, ceiling) if ceiling else self.newest
        floor = shift(at, -overlap_seconds)
        keep = sorted((k for k in self.seen if key_time(k) >= floor), key=key_time)[-MAX_SEEN:]
        return StreamCursor(at=at, seen=sorted(keep))


def first_cursor(since: datetime) -> StreamCursor:
    return StreamCursor(at=magento_time(since))
