"""Magento's order search: the query string, and paging that survives Magento's repeated last page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.domain.order_search import OrderSearch, Pager, SearchPage, SearchResponseError, magento_time, parse_page


def test_params_are_magentos_bracket_notation_with_and_groups_paged_by_entity_id() -> None:
    search = OrderSearch(since=datetime(2026, 10, 1, tzinfo=UTC), until=datetime(2026, 11, 1, tzinfo=UTC),
                         statuses=("complete", "processing"), store_id=2, page_size=50)
    params = dict(search.params(after_id=1234))
    assert params["searchCriteria[filter_groups][0][filters][0][field]"] == "created_at"
    assert params["searchCriteria[filter_groups][0][filters][0][value]"] == "2026-10-01 00:00:00"
    assert params["searchCriteria[filter_groups][0][filters][0][condition_type]"] == "gteq"
    assert params["searchCriteria[filter_groups][1][filters][0][condition_type]"] == "lt"
    assert params["searchCriteria[filter_groups][2][filters][0][value]"] == "complete,processing"
    assert params["searchCriteria[filter_groups][2][filters][0][condition_type]"] == "in"
    assert params["searchCriteria[filter_groups][3][filters][0][value]"] == "2"
    assert [params[f"searchCriteria[filter_groups][4][filters][0][{k}]"] for k in ("field", "value", "condition_type")] \
        == ["entity_id", "1234", "gt"]
    assert params["searchCriteria[sortOrders][0][field]"] == "entity_id"
    # always the first page of what is left: Magento's repeated last page never comes up
    assert (params["searchCriteria[pageSize]"], params["searchCriteria[currentPage]"]) == ("50", "1")
    assert "searchCriteria[filter_groups][4][filters][0][field]" not in dict(search.params())


def test_times_are_sent_in_utc_without_an_offset() -> None:
    paris = timezone(timedelta(hours=2))
    assert magento_time(datetime(2026, 10, 1, 2, 30, tzinfo=paris)) == "2026-10-01 00:30:00"


def test_the_fingerprint_names_the_range() -> None:
    a = OrderSearch(since=datetime(2026, 10, 1, tzinfo=UTC))
    assert a.fingerprint() == OrderSearch(since=datetime(2026, 10, 1, tzinfo=UTC)).fingerprint()
    assert a.fingerprint() != OrderSearch(since=datetime(2026, 10, 2, tzinfo=UTC)).fingerprint()


def _page(ids: list[int], total: int) -> SearchPage:
    return SearchPage(items=[{"entity_id": i} for i in ids], total_count=total)


def test_paging_moves_by_key_and_ends_on_a_short_page() -> None:
    pager = Pager(page_size=2)
    assert [o["entity_id"] for o in pager.take(_page([1, 2], 5))] == [1, 2] and pager.after_id == 2
    assert not pager.done() and pager.total == 5
    pager.take(_page([3, 4], 3))  # what is left after 2: the range's size is the first page's count
    assert pager.total == 5 and not pager.done()
    assert [o["entity_id"] for o in pager.take(_page([5], 1))] == [5] and pager.done()


def test_rows_at_or_below_the_last_key_are_never_taken_twice() -> None:
    pager = Pager(page_size=2, after_id=4)
    # a server that ignores the key filter and answers the same rows again: nothing new, paging over
    assert pager.take(_page([3, 4], 2)) == [] and pager.done()
    assert Pager(page_size=2).take(_page([], 0)) == []


def test_a_search_page_must_look_like_one() -> None:
    assert parse_page({"items": [{"entity_id": 1}], "total_count": 1}).total_count == 1
    assert parse_page({"total_count": 0}).items == []  # Magento leaves items out of an empty result
    for bad in ([], {"items": "x", "total_count": 1}, {"items": [], "total_count": -1},
                {"items": [], "total_count": True}, {"items": [1], "total_count": 1}):
        with pytest.raises(SearchResponseError):
            parse_page(bad)
