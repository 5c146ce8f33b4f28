"""A year of orders on one worker: its memory, a restart and a takeover with 1,000,000 booked orders.

    .venv/bin/python bench/scale.py                   # 1,000,000 booked orders (about ten minutes)
    .venv/bin/python bench/scale.py --orders 20000    # a quick look
    .venv/bin/python bench/scale.py --store memory    # the same with the table in memory, to compare

How the orders get there: by writing what the agents would write, not by booking them. The orders
agent's own decisions (on_order, then on_result of its SalesReceipt, each step added to the story as
the agent adds it) make one booked row; each order gets a copy with its own ids, written to the
order-state changelog in the order's partition, its order event to magento.orders, and the worker
group's offsets at the end of those events. Booking a million orders through QuickBooks would take
33 hours at its quota and measure the quota, not the state.

Then real processes on a broker of their own (a worker is a `magqb worker`, booking into the sandbox):

  first start — worker A, empty data dir: its table brought from the changelog onto its disk (the
                warm-up before it joins, then faust's recovery of the rest); seconds until an order
                published then is booked.
  restart     — A stopped (SIGTERM) and started again: seconds from the start to an order booked.
  join        — worker B (its own data dir) starts: seconds until it owns half the partitions and has
                booked an order in one of them.
  failover    — A SIGKILLed: seconds until B (holding standby copies of A's partitions) books an order
                in one of A's.
  RSS         — each worker's resident memory after each step, and the peak.
  tools       — `magqb status` of the oldest order and `magqb replay --dry-run --from-offset 0`.

Printed, nothing asserted (tests/e2e/test_scale.py runs it small and checks the memory slope).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from app import jsonutil, topics  # noqa: E402
from app.adapters import kafka_io  # noqa: E402
from bench.replay import PARTITIONS, commit_at_end  # noqa: E402
from tests.conftest import TEST_ENV, blueprint_order, free_port  # noqa: E402
from tests.e2e.harness import MAGQB, Stack, http, poll, start, stop  # noqa: E402

FIRST_ID = 20_000_000


def booked_row() -> dict[str, Any]:
    """The row the orders agent keeps for a booked SalesReceipt, made by its own decisions."""
    from agents.orders import add_story
    from app.domain.mapping import MappingConfig
    from app.domain.order_flow import on_order, on_result
    from schemas.commands import CreateDocument
    from schemas.dead_letter import EventSource
    from schemas.events import DocumentCreated
    from schemas.magento import MagentoOrder
    from schemas.state import ItemEntry

    raw = blueprint_order()
    order = MagentoOrder.model_validate(raw)
    items = {"prod001": ItemEntry(item_id="1"), "prod002": ItemEntry(item_id="2"), "shipping": ItemEntry(item_id="3")}
    realm = TEST_ENV["QUICKBOOKS_REALM_ID"]

    def customers(key: str) -> Any:
        from schemas.state import CustomerEntry

        return CustomerEntry(customer_id="9", display_name="Jane Doe")

    cfg = MappingConfig()
    d = on_order(None, order, raw, uuid.uuid4().hex, customers, lambda n: items.get(n.lower()), cfg, realm)
    d = add_story(d, "order event", "webhook: requested", EventSource(topic=topics.ORDERS, partition=3, offset=1234567))
    [cmd] = d.commands
    assert d.state is not None and isinstance(cmd, CreateDocument)
    result = DocumentCreated(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=realm,
                             request_id=cmd.request_id, doc_type="SalesReceipt", doc_number=cmd.document.DocNumber,
                             qbo_id="123456", total_amt=cmd.document.computed_total(), created=True)
    b = on_result(d.state, result, customers, lambda n: items.get(n.lower()), cfg, realm)
    b = add_story(b, "result", "SalesReceipt Id=123456 created", EventSource(topic=topics.RESULTS, partition=3, offset=1234567))
    assert b.state is not None and b.state.status == "synced"
    return b.state.model_dump(mode="json")


def order_event(entity: int, email: str = "") -> tuple[str, bytes]:
    order = blueprint_order()
    order.update({"entity_id": entity, "increment_id": f"{entity:09d}",
                  "customer_email": email or f"scale{entity % 997}@example.com",
                  "created_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")})
    for item in order.get("items", []):
        item["order_id"] = entity
    event = {"schema_version": 1, "event_id": uuid.uuid4().hex, "received_at": datetime.now(UTC).isoformat(),
             "source": "magento-webhook", "order": order}
    return str(entity), jsonutil.dumps(event)


def seeded(first: int, n: int) -> Iterator[tuple[str, bytes, bytes]]:
    row = booked_row()
    event_template = json.loads(order_event(first)[1])
    for k in range(first, first + n):
        state = copy.copy(row)
        ref = f"{k:09d}"
        state.update(order_ref=ref, event_id=uuid.uuid4().hex, doc_number=f"MAG-{ref}", qbo_id=str(k))
        event = copy.copy(event_template)
        event["order"] = {**event_template["order"], "entity_id": k, "increment_id": ref}
        event["event_id"] = state["event_id"]
        yield str(k), jsonutil.dumps(event), jsonutil.dumps(state)


async def seed(bootstrap: str, app_id: str, first: int, n: int, progress: Callable[[int], None]) -> None:
    """n booked orders after `first`, and the group's offsets at the end of magento.orders."""
    producer = kafka_io.producer(bootstrap, "bench-scale-seed", 4 << 20)
    await producer.start()
    try:
        futures = []
        for done, (key, event, state) in enumerate(seeded(first, n), 1):
            part = kafka_io.partition_of(key.encode(), PARTITIONS)
            futures.append(await producer.send(topics.ORDERS, event, key=key.encode(), partition=part))
            futures.append(await producer.send(f"{app_id}-order_state-changelog", state,
                                               key=json.dumps(key).encode(), partition=part))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures = []
                progress(done)
        await asyncio.gather(*futures)
        progress(n)
    finally:
        await kafka_io.close(producer)
    await commit_at_end(bootstrap, app_id)


def _status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS: resident now, VmHWM: its peak), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS")


def hwm_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM")


READY = re.compile(r"worker ready: \S+ partition\(s\) ([\d,]*|none) assigned")


@dataclass
class Run:
    """One broker, sandbox and the workers of a scale run."""

    work: Path
    orders: int
    store: str = "rocksdb"
    bootstrap: str = ""
    app_id: str = ""
    stack: Stack | None = None
    kafka_env: dict[str, str] = field(default_factory=dict)
    next_id: int = 0
    web_ports: dict[str, int] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)  # a worker process's peak RSS (VmHWM), MB

    def __post_init__(self) -> None:
        port, controller = free_port(), free_port()
        self.kafka_env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
                          "KAFKA_DATA_DIR": str(self.work / "kafka")}
        self.bootstrap = f"127.0.0.1:{port}"
        self.app_id = f"magqb-scale-{uuid.uuid4().hex[:6]}"
        sandbox_port = free_port()
        env = {**{k: v for k, v in os.environ.items()
                  if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_", "KAFKA_"))},
               **TEST_ENV, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "MAGQB_APP_ID": self.app_id,
               "MAGQB_PARTITIONS": str(PARTITIONS), "MAGQB_TABLE_STORE": self.store, "MAGQB_MONITOR_SECONDS": "5",
               "MAGQB_QBO_REQUESTS_PER_MINUTE": "0", "MAGQB_QBO_REQUESTS_PER_SECOND": "0",
               "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
               "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer"}
        self.stack = Stack(env, "", f"http://127.0.0.1:{sandbox_port}", "", self.work)
        self.next_id = FIRST_ID + 10_000_000

    # ---- the parts
    def up(self) -> None:
        assert self.stack is not None
        subprocess.run([str(REPO / "ops/kafka/start")], env=self.kafka_env, check=True, capture_output=True,
                       timeout=180)
        from app.adapters.kafka_admin import ensure_topics
        from app.domain.retry_ladder import parse_ladder

        ladder = tuple(r.topic for r in parse_ladder("30s,5m,30m,2h"))
        asyncio.run(ensure_topics(self.bootstrap, topics.worker_topics(self.app_id, PARTITIONS, 1, ladder)))
        port = self.stack.sandbox_url.rsplit(":", 1)[1]
        start(self.stack, "sandbox", "sandbox", "--port", port, "--quota-per-second", "0", "--quota-per-minute", "0")
        poll(lambda: http("GET", f"{self.stack.sandbox_url}/_sandbox/stats")[0] == 200 if self.stack else None, 60,
             "the sandbox")

    def down(self) -> None:
        if self.stack is not None:
            for proc in reversed(list(self.stack.procs.values())):
                stop(proc)
        subprocess.run([str(REPO / "ops/kafka/stop")], env=self.kafka_env, capture_output=True, timeout=90)
        shutil.rmtree(self.work / "kafka", ignore_errors=True)

    def seed(self, first: int, n: int, quiet: bool = False) -> float:
        started = time.perf_counter()

        def progress(done: int) -> None:
            if not quiet:
                print(f"\r  seeded {done:,} / {n:,}", end="", flush=True)

        asyncio.run(seed(self.bootstrap, self.app_id, first, n, progress))
        if not quiet:
            print()
        return time.perf_counter() - started

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        assert self.stack is not None
        (self.work / f"{name}.log").unlink(missing_ok=True)
        self.web_ports[name] = free_port()
        return start(self.stack, name, "worker", "--web-port", str(self.web_ports[name]),
                     env={"MAGQB_DATA_DIR": str(self.work / f"data-{name}")})

    def orders_counted(self, name: str, state: str = "booked") -> int:
        """The worker's magqb_orders{state} (what its monitor counts in the partitions it owns)."""
        assert self.stack is not None
        self.stack.worker_url = f"http://127.0.0.1:{self.web_ports[name]}"
        return int(self.stack.metric("magqb_orders", state=state))

    def partitions_of(self, name: str) -> set[int] | None:
        """The partitions the worker's newest 'worker ready' line names (None before the first)."""
        assert self.stack is not None
        found = READY.findall(self.stack.log_tail(name, 4000))
        if not found:
            return None
        last = found[-1]
        return set() if last in ("", "none") else {int(p) for p in last.split(",")}

    def order_in(self, partitions: set[int]) -> str:
        """A new order id that hashes to one of `partitions`."""
        while True:
            self.next_id += 1
            if kafka_io.partition_of(str(self.next_id).encode(), PARTITIONS) in partitions:
                return str(self.next_id)

    def publish(self, key: str) -> None:
        async def send() -> None:
            producer = kafka_io.producer(self.bootstrap, "bench-scale-order", 1 << 20)
            await producer.start()
            try:
                k, event = order_event(int(key))
                await producer.send_and_wait(topics.ORDERS, event, key=k.encode(),
                                             partition=kafka_io.partition_of(k.encode(), PARTITIONS))
            finally:
                await kafka_io.close(producer)

        asyncio.run(send())

    def booked(self, key: str) -> bool:
        assert self.stack is not None
        return self.stack.count("SalesReceipt", f"DocNumber = 'MAG-{int(key):09d}'") == 1

    def book_one(self, partitions: set[int], timeout: float = 900) -> float:
        """Publish an order in one of `partitions`; seconds until it is booked."""
        key = self.order_in(partitions)
        t0 = time.perf_counter()
        self.publish(key)
        poll(lambda: self.booked(key), timeout, f"order {key} booked", interval=0.1)
        return time.perf_counter() - t0

    def wait_ready(self, name: str, want: Callable[[set[int]], bool], timeout: float = 1800) -> set[int]:
        def ready() -> set[int] | None:
            assert self.stack is not None
            if self.stack.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.stack.log_tail(name)}")
            parts = self.partitions_of(name)
            return parts if parts is not None and want(parts) else None

        return poll(ready, timeout, f"{name} ready", interval=0.1)

    def rss(self, name: str) -> float:
        assert self.stack is not None
        return rss_mb(self.stack.procs[name].pid)

    def settle_rss(self, name: str, seconds: float = 20) -> float:
        """RSS once the worker has had time to count its rows (the monitor's first rounds)."""
        assert self.stack is not None
        deadline = time.monotonic() + seconds
        samples = []
        while time.monotonic() < deadline:
            samples.append(self.rss(name))
            time.sleep(1)
        return max(samples)


def first_start(run: Run) -> tuple[float, float]:
    """Worker A from an empty data dir: (seconds to the first order booked, RSS)."""
    assert run.stack is not None
    t0 = time.perf_counter()
    run.start_worker("a")
    parts = run.wait_ready("a", lambda p: len(p) == PARTITIONS)
    took = (time.perf_counter() - t0) + run.book_one(parts)
    return took, run.settle_rss("a")


def restart(run: Run) -> tuple[float, float]:
    assert run.stack is not None
    run.peaks["a (first start)"] = hwm_mb(run.stack.procs["a"].pid)
    stop(run.stack.procs["a"])
    t0 = time.perf_counter()
    run.start_worker("a")
    parts = run.wait_ready("a", lambda p: len(p) == PARTITIONS)
    took = (time.perf_counter() - t0) + run.book_one(parts)
    return took, run.settle_rss("a")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000, help="booked orders to load (1,000,000)")
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb",
                        help="MAGQB_TABLE_STORE of the workers (rocksdb)")
    parser.add_argument("--no-tools", action="store_true", help="skip the `magqb status` and dry-run timings")
    args = parser.parse_args()
    n = args.orders
    run = Run(Path(tempfile.mkdtemp(prefix="magqb-bench-scale-")), n, args.store)
    assert run.stack is not None
    try:
        run.up()
        print(f"loading {n:,} booked orders (rows as the orders agent writes them) …", flush=True)
        seeded_s = run.seed(FIRST_ID, n)
        row = len(jsonutil.dumps(booked_row()))
        print(f"  {seeded_s:.0f}s; a booked row is {row:,} bytes of JSON")

        first_s, rss_first = first_start(run)
        print(f"first start (table built from the changelog) to an order booked: {first_s:.1f}s; "
              f"RSS {rss_first:.0f} MB", flush=True)
        restart_s, rss_restart = restart(run)
        print(f"restart to an order booked: {restart_s:.1f}s; RSS {rss_restart:.0f} MB", flush=True)
        t0 = time.perf_counter()
        counted = poll(lambda: run.orders_counted("a") >= n + 2 and run.orders_counted("a"), 1800,
                       "the monitor's count of booked orders")
        counted_s = time.perf_counter() - t0
        print(f"the monitor counts {counted:,} booked orders ({counted_s:.0f}s after the order)", flush=True)

        t0 = time.perf_counter()
        run.start_worker("b")
        parts_b = run.wait_ready("b", lambda p: len(p) == PARTITIONS // 2)
        run.wait_ready("a", lambda p: len(p) == PARTITIONS // 2)
        join_s = (time.perf_counter() - t0) + run.book_one(parts_b)
        rss_b = run.settle_rss("b", 10)
        print(f"a second worker to take half the partitions and book in one: {join_s:.1f}s; "
              f"RSS A {run.rss('a'):.0f} MB, B {rss_b:.0f} MB", flush=True)

        parts_a = run.partitions_of("a") or set()
        time.sleep(5)  # bench pacing, not a test wait: B's standby copies catch up with A's last writes
        run.peaks["a (restarted)"] = hwm_mb(run.stack.procs["a"].pid)
        run.stack.procs["a"].send_signal(signal.SIGKILL)
        run.stack.procs["a"].wait(30)
        t0 = time.perf_counter()
        run.wait_ready("b", lambda p: len(p) == PARTITIONS, timeout=300)
        failover_s = (time.perf_counter() - t0) + run.book_one(parts_a)
        rss_b2 = run.settle_rss("b", 10)
        run.peaks["b"] = hwm_mb(run.stack.procs["b"].pid)
        print(f"A killed; B takes its partitions and books in one: {failover_s:.1f}s (the session timeout "
              f"included); RSS B {rss_b2:.0f} MB", flush=True)

        tools: dict[str, float] = {}
        if not args.no_tools:
            env = run.stack.env
            for label, cmd in (("status", [MAGQB, "status", f"{FIRST_ID:09d}"]),
                               ("replay --dry-run", [MAGQB, "replay", "--dry-run", "--from-offset", "0"])):
                t0 = time.perf_counter()
                done = subprocess.run(cmd, env=env, cwd=run.work, capture_output=True, text=True, timeout=7200)
                tools[label] = time.perf_counter() - t0
                if done.returncode != 0:
                    print(f"  `magqb {label}` exit {done.returncode}: {(done.stderr or done.stdout)[-300:]}")

        print(f"\n{n:,} booked orders, {PARTITIONS} partitions, table store {args.store}, 2-core machine")
        print(f"  worker RSS after first start : {rss_first:8.0f} MB")
        print(f"  worker RSS after restart     : {rss_restart:8.0f} MB")
        print(f"  second worker RSS (half)     : {rss_b:8.0f} MB   (all, after failover: {rss_b2:.0f} MB)")
        print("  peak RSS                     : " + ", ".join(f"{k} {v:.0f} MB" for k, v in run.peaks.items()))
        print(f"  booked orders the monitor counts: {counted:,} (of {n + 2:,}), {counted_s:.0f} s after the restart's order")
        print(f"  first start → order booked   : {first_s:8.1f} s")
        print(f"  restart → order booked       : {restart_s:8.1f} s   (goal < 30 s)")
        print(f"  join, half the partitions    : {join_s:8.1f} s   (goal < 30 s)")
        print(f"  failover, A killed           : {failover_s:8.1f} s   (goal < 30 s)")
        for label, secs in tools.items():
            print(f"  magqb {label:<22}: {secs:8.1f} s   (process start included)")
    finally:
        run.down()
        shutil.rmtree(run.work, ignore_errors=True)


if __name__ == "__main__":
    main()
