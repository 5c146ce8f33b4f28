"""The follower's paging against Magento's search semantics (the stand-in's, no network): rows share
seconds, pages are small, rows change while a pass reads them — and nothing is skipped or published
twice for the same change."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.follow import ORDERS, StreamPass, first_cursor, params, shift
from app.domain.order_search import magento_time
from tests.magento_standin import Standin

T0 = datetime(2031, 5, 1, 12, 0, 0)


def at(second: int) -> str:
    return magento_time(T0 + timedelta(seconds=second))


def run_pass(standin: Standin, cursor: Any, page_size: int, changes: dict[int, list[tuple[int, int]]] | None = None,
             published: list[str] | None = None) -> Any:
    """One pass; `changes[n]` = rows (entity_id, new second) updated in Magento after the n-th page."""
    out = published if published is not None else []
    step = StreamPass.start(ORDERS, cursor, 5, page_size)
    pages = 0
    while not step.done:
        query = dict(step.next_params())
        fresh = step.take(standin.search("orders", query)["items"])
        out += [f"{r['entity_id']}@{r['updated_at']}" for r in fresh]
        for entity_id, second in (changes or {}).get(pages, []):
            standin.put("orders", [{"entity_id": entity_id, "updated_at": at(second)}])
        pages += 1
        assert pages < 500, "the pass does not end"
    return step.cursor(5), out


# A change: (row, (seconds Magento's clock moves on, commit lag below the overlap)).
CHANGE = st.tuples(st.integers(0, 39), st.tuples(st.integers(0, 2), st.integers(0, 4)))


@settings(max_examples=150, deadline=None)
@given(seconds=st.lists(st.integers(0, 6), min_size=0, max_size=40), page_size=st.integers(1, 6),
       changes=st.dictionaries(st.integers(0, 8), st.lists(CHANGE, max_size=3), max_size=4))
def test_every_version_of_every_row_is_published_once(seconds: list[int], page_size: int,
                                                      changes: dict[int, list[tuple[int, tuple[int, int]]]]) -> None:
    rows = [{"entity_id": 1000 + n, "updated_at": at(s)} for n, s in enumerate(seconds)]
    standin = Standin(list(rows))
    # A change is stamped with Magento's clock (never before the newest time written so far) less a
    # commit lag shorter than the follower's overlap, and never before the row's own last time.
    now = dict(enumerate(seconds))
    clock = max(seconds, default=0)
    moves: dict[int, list[tuple[int, int]]] = {}
    for page, moved in sorted(changes.items()):
        for n, (tick, lag) in moved:
            if n in now:
                clock += tick
                now[n] = max(now[n], clock - lag)
                moves.setdefault(page, []).append((1000 + n, now[n]))
    changes = moves
    published: list[str] = []
    cursor, _ = run_pass(standin, first_cursor(T0 - timedelta(minutes=1)), page_size, changes, published)
    # A row changed during the pass to a time the pass had passed is found by the next one.
    cursor, _ = run_pass(standin, cursor, page_size, published=published)
    final = {f"{r['entity_id']}@{r['updated_at']}" for r in standin.rows["orders"]}
    assert final <= set(published)  # nothing skipped: every row as Magento has it now
    assert len(published) == len(set(published))  # no version published twice
    # Another pass with nothing changed publishes nothing.
    _, again = run_pass(standin, cursor, page_size)
    assert again == []


def test_a_second_with_more_rows_than_a_page_is_read_by_entity_id() -> None:
    standin = Standin([{"entity_id": n, "updated_at": at(1)} for n in range(1, 8)] + [{"entity_id": 50, "updated_at": at(2)}])
    cursor, published = run_pass(standin, first_cursor(T0), page_size=3)
    assert published == [f"{n}@{at(1)}" for n in range(1, 8)] + [f"50@{at(2)}"]
    assert cursor.at == at(2)
    # The next pass starts 5 s before the newest row and remembers what it took there.
    assert {k.split("#")[0] for k in cursor.seen} == {f"{n}@{at(1)}" for n in range(1, 8)} | {f"50@{at(2)}"}


def test_a_second_version_of_a_row_within_the_same_second_is_published_too() -> None:
    """Placed and cancelled within one second: the follower read the first, the second is not the same row."""
    standin = Standin([{"entity_id": 5, "updated_at": at(1), "state": "new"}])
    cursor, first = run_pass(standin, first_cursor(T0), page_size=10)
    standin.put("orders", [{"entity_id": 5, "updated_at": at(1), "state": "canceled"}])
    cursor, second = run_pass(standin, cursor, page_size=10)
    assert first == second == [f"5@{at(1)}"]  # each version once
    assert run_pass(standin, cursor, page_size=10)[1] == []


def test_a_row_stamped_in_the_future_does_not_carry_the_cursor_past_now() -> None:
    standin = Standin([{"entity_id": 1, "updated_at": at(1)}, {"entity_id": 2, "updated_at": at(7200)}])
    step = StreamPass.start(ORDERS, first_cursor(T0), 5, 10)
    step.take(standin.search("orders", dict(step.next_params()))["items"])
    assert step.cursor(5, ceiling=at(300)).at == at(300)  # an order placed at +2 min is still ahead of it
    assert step.cursor(5).at == at(7200)


def test_the_cursor_keeps_at_most_max_seen_keys() -> None:
    from app.domain.follow import MAX_SEEN

    standin = Standin([{"entity_id": n, "updated_at": at(1)} for n in range(1, MAX_SEEN + 51)])
    cursor, published = run_pass(standin, first_cursor(T0), page_size=300)
    assert len(published) == MAX_SEEN + 50 and len(cursor.seen) == MAX_SEEN


def test_the_searches_are_keyset_pages_sorted_by_time_then_id() -> None:
    query = dict(params(ORDERS, at(3), 300))
    assert query["searchCriteria[filter_groups][0][filters][0][field]"] == "updated_at"
    assert query["searchCriteria[filter_groups][0][filters][0][condition_type]"] == "gteq"
    assert (query["searchCriteria[sortOrders][0][field]"], query["searchCriteria[sortOrders][1][field]"]) == \
        ("updated_at", "entity_id")
    assert query["searchCriteria[currentPage]"] == "1" and query["searchCriteria[pageSize]"] == "300"
    assert dict(params(ORDERS, at(3), 1000))["searchCriteria[pageSize]"] == "300"  # Magento's cap
    same_second = dict(params(ORDERS, at(3), 50, after_id=77))
    assert same_second["searchCriteria[filter_groups][1][filters][0][value]"] == "77"
    assert shift(at(3), -5) == magento_time(T0 - timedelta(seconds=2))
