"""Replaying a log of booked orders: `magqb replay` against a raw aiokafka read of the same topic.

    .venv/bin/python bench/replay.py                  # 100,000 booked orders (a few minutes)
    .venv/bin/python bench/replay.py --orders 5000    # a quick look

Its own broker (free ports), sandbox and worker, real processes. The log is seeded directly: N
order events on magento.orders and, for each, a booked row (`synced`, with its QBO id) in the
order-state changelog, with the worker group's offsets committed at the end of the seeded events —
the state a store is in after booking N orders. Then, in one run:

  raw      — a plain aiokafka consumer reads the N events (no decoding): the ceiling;
  dry run  — `app.tools.replay.dry_run` over the same span (decode, look up the state, classify);
  replay   — `magqb replay --from-offset 0` with a worker running: it reads the order states and
             the span, leaves the booked orders out (nothing to do) and says so; timed from the
             command's start (process start included) to its end; QBO calls made are read from
             the sandbox.

Printed: events/s of each, the ratios to the raw read, and QBO calls made (the goal: 0).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from app import jsonutil, topics  # noqa: E402
from app.adapters import kafka_io  # noqa: E402
from tests.conftest import TEST_ENV, blueprint_order, free_port  # noqa: E402
from tests.e2e.harness import MAGQB, Stack, http, poll, start, stop  # noqa: E402

PARTITIONS = 8


def seed_orders(n: int) -> list[tuple[str, bytes, bytes]]:
    """(key, order event, booked state row) for n orders."""
    base = blueprint_order()
    out = []
    now = time.time()
    for k in range(n):
        entity = 5_000_000 + k
        order = copy.deepcopy(base)
        order.update({"entity_id": entity, "increment_id": f"{entity:09d}", "customer_email": f"b{k % 500}@example.com"})
        event = {"schema_version": 1, "event_id": uuid.uuid4().hex, "received_at": "2026-11-01T10:00:00+00:00",
                 "source": "magento-webhook", "order": order}
        state = {"schema_version": 1, "status": "synced", "order_ref": order["increment_id"],
                 "event_id": event["event_id"], "doc_type": "SalesReceipt", "doc_number": f"MAG-{entity:09d}",
                 "qbo_id": str(1000 + k), "total_amt": "53.60", "updated_at": now}
        out.append((str(entity), jsonutil.dumps(event), jsonutil.dumps(state)))
    return out


async def seed(bootstrap: str, app_id: str, rows: list[tuple[str, bytes, bytes]]) -> None:
    producer = kafka_io.producer(bootstrap, "bench-seed", 4 << 20)
    await producer.start()
    try:
        futures = []
        for key, event, state in rows:
            futures.append(await producer.send(topics.ORDERS, event, key=key.encode()))
            skey = json.dumps(key).encode()
            # faust writes a row to the partition of the event that changed it: the order's own
            futures.append(await producer.send(f"{app_id}-order_state-changelog", state, key=skey,
                                               partition=kafka_io.partition_of(key.encode(), PARTITIONS)))
            if len(futures) > 20000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await kafka_io.close(producer)
    # The workers have handled every seeded event: their group's offsets are at the end.
    await commit_at_end(bootstrap, app_id)


async def commit_at_end(bootstrap: str, group: str) -> None:
    """The worker group's offsets at the end of magento.orders: every event there handled (no member may
    be in the group meanwhile)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topics.ORDERS, p) for p in range(PARTITIONS)]
        c.assign(tps)
        ends = await c.end_offsets(tps)
        await c.commit({tp: ends[tp] for tp in tps})
    finally:
        await kafka_io.close(c)


async def raw_read(bootstrap: str, n: int) -> float:
    c = kafka_io.consumer(bootstrap, "bench-raw")
    await c.start()
    try:
        tps = await kafka_io.partitions(c, topics.ORDERS)
        ends = await c.end_offsets(tps)
        started = time.perf_counter()
        count = 0
        async for batch in kafka_io.read_spans(c, [kafka_io.Span(tp, 0, ends[tp]) for tp in tps]):
            count += len(batch)
        elapsed = time.perf_counter() - started
    finally:
        await kafka_io.close(c)
    assert count == n, (count, n)
    return n / elapsed


async def dry_run_unbooked_rate(bootstrap: str, n: int) -> tuple[float, dict[str, int]]:
    """The dry run's worst case: no order booked, every one mapped (a pool of one process per core)."""
    from app.domain.mapping import MappingConfig
    from app.tools.replay import Selection, dry_run

    c = kafka_io.consumer(bootstrap, "bench-dry-unbooked")
    await c.start()
    try:
        started = time.perf_counter()
        counts = await dry_run(c, Selection(from_offset=0), {}, MappingConfig(), TEST_ENV["QUICKBOOKS_REALM_ID"],
                               lambda v: None)
        elapsed = time.perf_counter() - started
    finally:
        await kafka_io.close(c)
    return n / elapsed, counts


async def dry_run_rate(bootstrap: str, app_id: str, n: int) -> tuple[float, float, dict[str, int]]:
    from app.domain.mapping import MappingConfig
    from app.tools import order_log
    from app.tools.replay import Selection, dry_run

    started = time.perf_counter()
    states = await order_log.read_states(bootstrap, app_id)
    states_s = time.perf_counter() - started
    c = kafka_io.consumer(bootstrap, "bench-dry")
    await c.start()
    try:
        started = time.perf_counter()
        counts = await dry_run(c, Selection(from_offset=0), states, MappingConfig(), TEST_ENV["QUICKBOOKS_REALM_ID"],
                               lambda v: None)
        elapsed = time.perf_counter() - started
    finally:
        await kafka_io.close(c)
    return n / elapsed, states_s, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    args = parser.parse_args()
    n = args.orders
    work = Path(tempfile.mkdtemp(prefix="magqb-bench-replay-"))
    port, controller = free_port(), free_port()
    kafka_env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
                 "KAFKA_DATA_DIR": str(work / "kafka")}
    bootstrap = f"127.0.0.1:{port}"
    app_id = f"magqb-bench-{uuid.uuid4().hex[:6]}"
    sandbox_port, web_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_", "KAFKA_"))},
           **TEST_ENV, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MAGQB_APP_ID": app_id,
           "MAGQB_PARTITIONS": str(PARTITIONS), "MAGQB_DATA_DIR": str(work / "data"),
           "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
           "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer"}
    stack = Stack(env, "", f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{web_port}", work)
    subprocess.run([str(REPO / "ops/kafka/start")], env=kafka_env, check=True, capture_output=True, timeout=180)
    try:
        from app.adapters.kafka_admin import ensure_topics
        from app.domain.retry_ladder import parse_ladder

        ladder = tuple(r.topic for r in parse_ladder("30s,5m,30m,2h"))
        asyncio.run(ensure_topics(bootstrap, topics.worker_topics(app_id, PARTITIONS, 1, ladder)))
        print(f"seeding {n:,} booked orders …", flush=True)
        started = time.perf_counter()
        asyncio.run(seed(bootstrap, app_id, seed_orders(n)))
        print(f"  seeded in {time.perf_counter() - started:.1f}s", flush=True)

        raw = asyncio.run(raw_read(bootstrap, n))
        dry, states_s, counts = asyncio.run(dry_run_rate(bootstrap, app_id, n))
        unbooked, unbooked_counts = asyncio.run(dry_run_unbooked_rate(bootstrap, n))
        status_s = {}
        for label, ref in (("newest", f"{5_000_000 + n - 1:09d}"), ("oldest", f"{5_000_000:09d}")):
            t0 = time.perf_counter()
            found = subprocess.run([MAGQB, "status", ref], env=env, cwd=work, capture_output=True, text=True,
                                   timeout=600)
            status_s[label] = (time.perf_counter() - t0, found.returncode)

        start(stack, "sandbox", "sandbox", "--port", str(sandbox_port), "--quota-per-second", "0",
              "--quota-per-minute", "0")
        started = time.perf_counter()
        start(stack, "worker", "worker", "--web-port", str(web_port))
        poll(lambda: "worker ready" in stack.log_tail("worker", 400), 600, "the worker (recovering its table)")
        recovery_s = time.perf_counter() - started
        poll(lambda: http("GET", f"{stack.sandbox_url}/_sandbox/stats")[0] == 200, 60, "the sandbox")
        before = stack.sandbox_stats()["requests_total"]
        started = time.perf_counter()
        done = subprocess.run([MAGQB, "replay", "--from-offset", "0", "--wait-timeout", "1800"], env=env, cwd=work,
                              capture_output=True, text=True, timeout=3600)
        replay_s = time.perf_counter() - started
        calls = stack.sandbox_stats()["requests_total"] - before
        if done.returncode != 0:
            print(done.stdout, done.stderr)
        replayed = n / replay_s

        print(f"\nreplay of {n:,} booked orders (8 partitions, one worker, 2-core machine)")
        print(f"  raw aiokafka read           : {raw:10,.0f} events/s")
        print(f"  dry run (decode, state,     : {dry:10,.0f} events/s  = {dry / raw:.2f}x raw  "
              f"(+{states_s:.1f}s reading {n:,} order states)")
        print(f"            classify)           verdicts: {counts}")
        print(f"  dry run, none booked        : {unbooked:10,.0f} events/s  = {unbooked / raw:.2f}x raw  "
              f"(every order mapped; verdicts: {unbooked_counts})")
        print(f"  magqb replay                : {replayed:10,.0f} events/s  = {replayed / raw:.2f}x raw  "
              f"({replay_s:.1f}s, process start included)")
        print(f"            {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]}")
        print(f"  QBO calls made by the replay: {calls}")
        print(f"  worker start (table of {n:,} rows recovered): {recovery_s:.1f}s")
        for label, (secs, rc) in status_s.items():
            print(f"  `magqb status` of the {label} order: {secs:.2f}s (process start included; exit {rc})")
    finally:
        for proc in reversed(list(stack.procs.values())):
            stop(proc)
        subprocess.run([str(REPO / "ops/kafka/stop")], env=kafka_env, capture_output=True, timeout=90)
        import shutil

        shutil.rmtree(work / "kafka", ignore_errors=True)


if __name__ == "__main__":
    main()
