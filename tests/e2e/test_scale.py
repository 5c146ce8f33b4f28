"""A worker's memory does not grow with the orders it has booked (bench/scale.py, small): the slope of
its resident memory between 4,000 and 20,000 booked orders, each measured after a restart, with the
monitor counting every one of them (so the rows are really there)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.scale import FIRST_ID, PARTITIONS, Run, restart
from tests.e2e.harness import poll, stop

pytestmark = pytest.mark.kafka
# The table in memory grows by about 6 KB a booked order (this test with Run(..., "memory")); on disk the
# worker's memory is capped (MAGQB_TABLE_MEMORY_MB) and what is left of the slope is noise.
MAX_KB_PER_ORDER = 1.0


def test_memory_stays_flat_as_booked_orders_accumulate() -> None:
    run = Run(Path(tempfile.mkdtemp(prefix="magqb-test-scale-")), 20_000)
    assert run.stack is not None
    try:
        run.up()
        rss: dict[int, float] = {}
        loaded = 0
        for total in (4_000, 20_000):
            if "a" in run.stack.procs:
                stop(run.stack.procs["a"])  # the seed commits the group's offsets: no member may hold them
            run.seed(FIRST_ID + loaded, total - loaded, quiet=True)
            loaded = total
            run.start_worker("a")
            run.wait_ready("a", lambda p: len(p) == PARTITIONS, timeout=300)
            restart(run)  # measured after a restart: what a worker holds once its table is on disk
            want = total + len(rss) + 1  # each round's restart books one order
            poll(lambda w=want: run.orders_counted("a") == w, 120,
                 lambda w=want: f"the monitor to count {w} booked orders (counts {run.orders_counted('a')})")
            rss[total] = run.settle_rss("a", 10)
        slope_kb = (rss[20_000] - rss[4_000]) * 1024 / 16_000
        print(f"RSS {rss[4_000]:.0f} MB at 4,000 orders, {rss[20_000]:.0f} MB at 20,000: {slope_kb:.2f} KB an order")
        assert slope_kb < MAX_KB_PER_ORDER, rss
    finally:
        run.down()
