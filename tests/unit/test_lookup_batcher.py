"""Many lookups, one read (app.adapters.lookup_batcher), and the month's read projection."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime

import pytest

from app.adapters.lookup_batcher import LookupBatcher
from app.domain.read_budget import projected_reads


def test_lookups_asked_together_go_out_as_one_query() -> None:
    calls: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, int]:
        calls.append(sorted(keys))
        return {k: len(k) for k in keys if k != "missing"}

    async def run() -> list[int | None]:
        batcher = LookupBatcher(fetch, window=0.01, max_keys=100)
        return await asyncio.gather(*(batcher.get(k) for k in ["a", "bb", "a", "missing", "ccc"]))

    assert asyncio.run(run()) == [1, 2, 1, None, 3]
    assert calls == [["a", "bb", "ccc", "missing"]]  # one query; the repeated key asked once


def test_a_full_batch_goes_at_once_and_the_rest_follow() -> None:
    calls: list[int] = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        calls.append(len(keys))
        return {k: k for k in keys}

    async def run() -> list[int | None]:
        batcher = LookupBatcher(fetch, window=10.0, max_keys=100)  # a long window: only fullness flushes …
        first = [asyncio.ensure_future(batcher.get(k)) for k in range(100)]
        results = await asyncio.gather(*first)
        batcher.window = 0.01  # … and then the window, for the stragglers
        return [*results, *await asyncio.gather(*(batcher.get(k) for k in range(100, 150)))]

    assert asyncio.run(run()) == list(range(150))
    assert calls == [100, 50]


def test_a_failed_query_fails_every_caller_of_it() -> None:
    async def fetch(keys: list[str]) -> dict[str, int]:
        raise TimeoutError("QBO did not answer")

    async def run() -> list[object]:
        batcher = LookupBatcher(fetch, window=0.01)
        return await asyncio.gather(batcher.get("a"), batcher.get("b"), return_exceptions=True)

    assert [type(r) for r in asyncio.run(run())] == [TimeoutError, TimeoutError]


@pytest.mark.parametrize(("reads", "now", "projected"), [
    (15_000, datetime(2026, 11, 16, tzinfo=UTC), 30_000),  # half of November gone
    (100, datetime(2026, 11, 1, 0, 5, tzinfo=UTC), 3_000),  # five minutes in: the pace is taken over a day
    (0, datetime(2026, 2, 20, tzinfo=UTC), 0),
])
def test_the_months_reads_are_projected_to_its_end(reads: int, now: datetime, projected: int) -> None:
    assert projected_reads(reads, now) == pytest.approx(projected)


def test_the_read_budget_persists_projects_and_warns(tmp_path, caplog) -> None:
    from app.adapters.read_budget import ReadBudget

    now = [datetime(2026, 11, 16, tzinfo=UTC).timestamp()]  # half of November gone

    async def run() -> tuple[int, float, int]:
        budget = ReadBudget(tmp_path / "usage.sqlite3", "r1", budget=1000, clock=lambda: now[0])
        await budget.load()
        for _ in range(600):
            budget.read()
        await budget.flush()  # 600 by mid-month → 1,200 by its end: over the 1,000 allowed
        again = ReadBudget(tmp_path / "usage.sqlite3", "r1", budget=1000, clock=lambda: now[0])
        await again.load()  # a restarted worker keeps counting where it was
        now[0] = datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp()
        again.read()  # December: a new allowance
        return budget.reads, budget.projected(), again.reads

    with caplog.at_level("WARNING", logger="magqb.dispatcher"):
        reads, projected, december = asyncio.run(run())
    assert (reads, december) == (600, 1)
    assert "projected 1200 by the month's end — over the 1000 allowed" in caplog.text
    assert oct(os.stat(tmp_path / "usage.sqlite3").st_mode & 0o777) == "0o600"
