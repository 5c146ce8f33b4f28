"""Magento's `GET /V1/orders` search: the query string of one page, and when paging is done.

Facts (reference/magento.md §4): filters in one `filter_groups` entry are OR'ed, groups are AND'ed;
dates compare against UTC database values written `YYYY-MM-DD HH:MM:SS`; a `currentPage` past the
end answers the *last page again*; `sortOrders` must be explicit.

So pages are taken by key, not by number: always `currentPage=1` of `entity_id > <the last id
taken>`, sorted by `entity_id`. Orders that enter or leave the range while the import runs (a
status filter, new orders) cannot shift rows onto a page already read, the repeated last page
never comes up, and the checkpoint is one id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PAGE_SIZE = 100


class SearchResponseError(ValueError):
    """A page that is not a Magento search result (`{"items": [...], "total_count": n}`)."""


@dataclass(frozen=True)
class OrderSearch:
    since: datetime
    until: datetime | None = None
    statuses: tuple[str, ...] = ()
    store_id: int | None = None
    page_size: int = PAGE_SIZE

    def params(self, after_id: int = 0) -> list[tuple[str, str]]:
        """The searchCriteria of the page after `after_id`, in Magento's bracket notation."""
        groups: list[list[tuple[str, str, str]]] = [[("created_at", magento_time(self.since), "gteq")]]
        if self.until is not None:
            groups.append([("created_at", magento_time(self.until), "lt")])
        if self.statuses:
            groups.append([("status", ",".join(self.statuses), "in")])
        if self.store_id is not None:
            groups.append([("store_id", str(self.store_id), "eq")])
        if after_id:
            groups.append([("entity_id", str(after_id), "gt")])
        return search_criteria(groups, [("entity_id", "ASC")], self.page_size)

    def fingerprint(self) -> str:
        """Names the range in the checkpoint: the same command resumes, another one starts afresh."""
        key = json.dumps([magento_time(self.since), magento_time(self.until) if self.until else None,
                          sorted(self.statuses), self.store_id, self.page_size])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def describe(self) -> str:
        parts = [f"created_at >= {magento_time(self.since)}"]
        if self.until is not None:
            parts.append(f"< {magento_time(self.until)}")
        if self.statuses:
            parts.append(f"status in {','.join(self.statuses)}")
        if self.store_id is not None:
            parts.append(f"store {self.store_id}")
        return " ".join(parts) + " (UTC)"


Filter = tuple[str, str, str]  # (field, value, condition_type)


def search_criteria(groups: list[list[Filter]], sorts: list[tuple[str, str]], page_size: int) -> list[tuple[str, str]]:
    """Page 1 of a search in Magento's bracket notation: filter groups (AND) of filters (OR), sort orders."""
    out: list[tuple[str, str]] = []
    for g, filters in enumerate(groups):
        for f, (fld, value, condition) in enumerate(filters):
            prefix = f"searchCriteria[filter_groups][{g}][filters][{f}]"
            out += [(f"{prefix}[field]", fld), (f"{prefix}[value]", value), (f"{prefix}[condition_type]", condition)]
    for n, (fld, direction) in enumerate(sorts):
        out += [(f"searchCriteria[sortOrders][{n}][field]", fld), (f"searchCriteria[sortOrders][{n}][direction]", direction)]
    return out + [("searchCriteria[pageSize]", str(page_size)), ("searchCriteria[currentPage]", "1")]


def magento_time(value: datetime) -> str:
    """Magento compares dates with its UTC database values: `YYYY-MM-DD HH:MM:SS`, no offset."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class SearchPage:
    items: list[dict[str, Any]]
    total_count: int


def parse_page(data: Any) -> SearchPage:
    if not isinstance(data, dict):
        raise SearchResponseError("the answer is not a JSON object")
    items, total = data.get("items"), data.get("total_count")
    if items is None:
        items = []  # Magento leaves `items` out of an empty result
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise SearchResponseError("`items` is not a list of orders")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise SearchResponseError(f"`total_count` is not a count: {total!r}")
    return SearchPage(items=items, total_count=total)


@dataclass
class Pager:
    """Where paging stands: the last `entity_id` taken, and whether the range is exhausted (a short
    page). Rows at or below the last id (a server that repeats itself) are dropped, never re-published."""

    page_size: int
    after_id: int = 0
    seen: int = 0
    total: int | None = None  # the range's size, from the first page's total_count
    finished: bool = False

    def done(self) -> bool:
        return self.finished

    def take(self, page: SearchPage) -> list[dict[str, Any]]:
        """The page's orders not taken before; moves past them."""
        if self.total is None:
            self.total = page.total_count
        fresh = [item for item in page.items if int_field(item) is None or (int_field(item) or 0) > self.after_id]
        ids = [i for i in (int_field(item) for item in fresh) if i is not None]
        self.seen += len(page.items)
        if ids:
            self.after_id = max(ids)
        if len(page.items) < self.page_size or not ids:
            self.finished = True  # a short page is the last; a page with no new id would repeat forever
        return fresh


def int_field(item: dict[str, Any], name: str = "entity_id") -> int | None:
    """A row's id field as a number (Magento sends numbers or numeric strings), None when it has none."""
    value = item.get(name)
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
