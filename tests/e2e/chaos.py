"""A whole magqb stack under fire, for the chaos tests (small) and bench/chaos.py (large).

Each run gets its own Kafka broker (started with ops/kafka/start on free ports), its
own sandbox with the plan's injected faults, an ingress and one or more workers —
all real processes. Orders are posted like Magento does (re-sent on 503), then the
run waits for the bookings and checks QuickBooks' books against what was sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.tools.dead_letters import read_log
from tests.conftest import TEST_ENV, blueprint_order, free_port, free_ports, read_topics
from tests.e2e.harness import Stack, http, poll, start, stop

REPO = Path(__file__).resolve().parents[2]
SHIPPING = Decimal("5.00")


@dataclass
class ChaosPlan:
    orders: int = 30
    customers: int = 10
    skus: int = 8
    fail_rate: float = 0.10
    throttle_rate: float = 0.05
    commit_then_fail_rate: float = 0.02
    latency_ms: int = 0  # > 0: QBO answers this late, so batches are in flight when a worker stops
    hang_rate: float = 0.0
    requestid_forget_rate: float = 0.0  # > 0: QBO does not honour requestid (the lookups alone must hold)
    token_ttl: int = 20
    quota_per_minute: int = 0  # 0 = off; 500 is QBO's real quota
    quota_per_second: int = 0
    retry_delays: str = "1s,2s,4s,8s,16s"
    throttle_backoff: float = 1.0
    workers: int = 1
    partitions: int = 4
    seed: int = 7
    extra_env: dict[str, str] = field(default_factory=dict)  # more settings for ingress and workers
    brokers: int = 1  # > 1: a KRaft cluster of that many nodes (ops/kafka/cluster)
    metrics_ports: bool = False  # workers also serve /metrics on a --metrics-port of their own
    sandbox_args: list[str] = field(default_factory=list)  # more sandbox flags (e.g. --refresh-token-grace 0)


@dataclass
class Report:
    orders: int
    documents: int
    customers_expected: int
    customers: int
    items_expected: int
    items: int
    doc_numbers_twice: int
    wrong_totals: int
    dead_letters: int
    qbo_requests: int
    throttled: int
    injected: dict[str, int]
    seconds: float

    def lines(self) -> list[str]:
        per_1000 = 1000 * self.throttled / self.qbo_requests if self.qbo_requests else 0.0
        return [
            f"documents created vs expected : {self.documents} / {self.orders}",
            f"customers created vs expected : {self.customers} / {self.customers_expected}",
            f"items created vs expected     : {self.items} / {self.items_expected}",
            f"DocNumbers booked twice       : {self.doc_numbers_twice}",
            f"documents with a wrong total  : {self.wrong_totals}",
            f"dead letters                  : {self.dead_letters}",
            f"QBO requests                  : {self.qbo_requests}  (429s: {self.throttled}, {per_1000:.1f} per 1,000)",
            f"injected faults               : {self.injected}",
            f"orders/min achieved           : {self.orders / self.seconds * 60:.0f}  ({self.seconds:.1f} s)",
        ]


@dataclass
class ChaosRun:
    plan: ChaosPlan
    workdir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    kafka_env: dict[str, str] = field(default_factory=dict)
    stack: Stack | None = None
    orders: list[dict[str, Any]] = field(default_factory=list)
    web_ports: dict[str, int] = field(default_factory=dict)
    metrics_urls: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ processes

    def start(self) -> Stack:
        if self.plan.brokers > 1:
            port = free_ports(2 * self.plan.brokers)
            self.kafka_env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_NODES": str(self.plan.brokers),
                              "KAFKA_DATA_DIR": str(self.workdir / "kafka"), "KAFKA_HEAP": "384m"}
            bootstrap = ",".join(f"127.0.0.1:{port + 2 * n}" for n in range(self.plan.brokers))
        else:
            port, controller = free_port(), free_port()
            self.kafka_env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
                              "KAFKA_DATA_DIR": str(self.workdir / "kafka")}
            bootstrap = f"127.0.0.1:{port}"
        started = subprocess.run([str(REPO / "ops/kafka/start")], env=self.kafka_env, capture_output=True,
                                 timeout=240)
        if started.returncode != 0:
            raise AssertionError(f"ops/kafka/start failed ({started.returncode}): "
                                 f"{started.stderr.decode(errors='replace')[-2000:]}")
        sandbox_port, ingress_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_", "KAFKA_"))},
            **TEST_ENV,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
            "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer",
            "MAGQB_APP_ID": f"magqb-chaos-{self.run_id}",
            **{k: v for k, v in os.environ.items() if k in ("DEVLOG", "MAGQB_FRAMEWORK_LOG_LEVEL")},
            "MAGQB_PARTITIONS": str(self.plan.partitions),
            "MAGQB_RETRY_DELAYS": self.plan.retry_delays,
            "MAGQB_THROTTLE_BACKOFF": str(self.plan.throttle_backoff),
            "MAGQB_CIRCUIT_COOLDOWN": "2",
            "MAGQB_PRODUCE_TIMEOUT": "3",
            "QUICKBOOKS_TIMEOUT_SECONDS": "10",
            **self.plan.extra_env,
        }
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.stack = s = Stack(env, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{sandbox_port}", "", logs)
        p = self.plan
        start(s, "sandbox", "sandbox", "--port", str(sandbox_port), "--seed", str(p.seed),
              "--fail-rate", str(p.fail_rate), "--throttle-rate", str(p.throttle_rate),
              "--commit-then-fail-rate", str(p.commit_then_fail_rate), "--token-ttl", str(p.token_ttl),
              "--quota-per-minute", str(p.quota_per_minute), "--quota-per-second", str(p.quota_per_second),
              "--latency-ms", str(p.latency_ms), "--hang-rate", str(p.hang_rate),
              "--requestid-forget-rate", str(p.requestid_forget_rate), *p.sandbox_args)
        start(s, "ingress", "ingress", "--port", str(ingress_port))
        for n in range(p.workers):
            self.start_worker(f"worker{n}")
        poll(lambda: http("GET", f"{s.ingress_url}/readyz")[0] == 200, 90, "the chaos ingress")
        poll(lambda: all("worker ready" in s.log_tail(w, 400) for w in self.web_ports), 120,
             lambda: "the chaos workers:\n" + "\n".join(s.log_tail(w) for w in self.web_ports))
        return s

    def start_worker(self, name: str) -> None:
        assert self.stack is not None
        port = self.web_ports.get(name) or free_port()
        self.web_ports[name] = port
        env = {"MAGQB_DATA_DIR": str(self.workdir / name)}
        args = ["worker", "--web-port", str(port)]
        if self.plan.metrics_ports:
            metrics_port = free_port()
            args += ["--metrics-port", str(metrics_port)]
            self.metrics_urls[name] = f"http://127.0.0.1:{metrics_port}"
        start(self.stack, name, *args, env=env)
        self.stack.worker_url = f"http://127.0.0.1:{port}"

    def kill_worker(self, name: str) -> None:
        assert self.stack is not None
        proc = self.stack.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def term_worker(self, name: str, timeout: float = 60) -> float:
        """SIGTERM, as systemd, Kubernetes, docker and Ctrl-C stop a process; returns seconds to exit."""
        assert self.stack is not None
        proc = self.stack.procs[name]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
        return time.monotonic() - started

    def signal_worker(self, name: str, sig: signal.Signals) -> None:
        """SIGSTOP freezes a worker as a long GC pause or a hung host would; SIGCONT wakes it."""
        assert self.stack is not None
        self.stack.procs[name].send_signal(sig)

    def owner(self, timeout: float = 120) -> str:
        """With one partition per topic: the worker holding it (the others stand by), once the group agrees."""
        assert self.stack is not None
        found: list[str] = []

        def settled() -> bool:
            last = {w: self.last_ready(w) for w in self.web_ports
                    if self.stack is not None and self.stack.procs[w].poll() is None}
            holders = [w for w, line in last.items() if "partition(s) 0 assigned" in line]
            found[:] = holders
            return len(holders) == 1 and all(last.values())

        poll(settled, timeout, "one worker to hold the partition")
        return found[0]

    def last_ready(self, name: str) -> str:
        """The worker's newest "worker ready" line (what it holds after its last rebalance); "" before the first."""
        assert self.stack is not None
        return ([line for line in self.stack.log_tail(name, 2000).splitlines() if "worker ready" in line] or [""])[-1]

    def worker_metric(self, name: str, metric: str) -> float:
        status, raw = http("GET", f"http://127.0.0.1:{self.web_ports[name]}/metrics")
        assert status == 200, status
        return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(metric)}(?:{{[^}}]*}})? ([0-9.e+-]+)$",
                                                            raw.decode(), re.M))

    def node(self, n: int, what: str) -> None:
        """One node of the cluster: start, stop (SIGTERM), kill (SIGKILL), pause (SIGSTOP), resume."""
        subprocess.run([str(REPO / "ops/kafka/cluster"), "node", str(n), what], env=self.kafka_env, check=True,
                       capture_output=True, timeout=180)

    def controller(self) -> int:
        """The node that is the active KRaft controller now."""
        out = subprocess.run([str(REPO / "ops/kafka/cluster"), "controller"], env=self.kafka_env, check=True,
                             capture_output=True, text=True, timeout=30).stdout
        return int(out.strip().splitlines()[-1])

    def leaders(self, topic: str) -> dict[int, int]:
        """Node id → how many of `topic`'s partitions it leads now."""
        from collections import Counter

        from aiokafka.admin import AIOKafkaAdminClient

        async def read() -> list[Any]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.stack.env["KAFKA_BOOTSTRAP_SERVERS"])  # type: ignore[union-attr]
            await admin.start()
            try:
                return await admin.describe_topics([topic])
            finally:
                await admin.close()

        [t] = asyncio.run(read())
        return dict(Counter(p["leader"] for p in t["partitions"]))

    def stop_broker(self) -> None:
        subprocess.run([str(REPO / "ops/kafka/stop")], env=self.kafka_env, check=True, capture_output=True, timeout=90)

    def start_broker(self) -> None:
        subprocess.run([str(REPO / "ops/kafka/start")], env=self.kafka_env, check=True, capture_output=True,
                       timeout=180)

    def stop(self) -> None:
        if self.stack is not None:
            for proc in reversed(list(self.stack.procs.values())):
                stop(proc)
        if self.kafka_env:  # its data is thrown away next (cleanup): no controlled shutdown to wait for
            subprocess.run([str(REPO / "ops/kafka/stop")], env={**self.kafka_env, "KAFKA_STOP_SIGNAL": "KILL"},
                           capture_output=True, timeout=90)

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir / "kafka", ignore_errors=True)

    # ------------------------------------------------------------ orders

    def make_orders(self) -> list[dict[str, Any]]:
        rng = random.Random(self.plan.seed)
        base = rng.randint(10**7, 10**8)
        prices = [Decimal(f"{rng.randint(100, 9999) / 100:.2f}") for _ in range(self.plan.skus)]
        orders = []
        for k in range(self.plan.orders):
            c = k % self.plan.customers
            picked = rng.sample(range(self.plan.skus), rng.randint(1, min(3, self.plan.skus)))
            items, subtotal = [], Decimal(0)
            for n, j in enumerate(picked, start=1):
                qty = rng.randint(1, 3)
                row = prices[j] * qty
                subtotal += row
                items.append({"item_id": n, "sku": f"SKU-{self.run_id}-{j}", "name": f"Chaos product {j}",
                              "qty_ordered": qty, "price": str(prices[j]), "row_total": str(row),
                              "tax_amount": 0})
            order = {**blueprint_order(), "entity_id": base + k, "increment_id": f"{base + k:09d}",
                     "customer_email": f"buyer{c}.{self.run_id}@example.com", "customer_firstname": f"Buyer{c}",
                     "customer_lastname": f"Chaos{self.run_id}", "items": items, "subtotal": str(subtotal),
                     "tax_amount": 0, "shipping_amount": str(SHIPPING), "grand_total": str(subtotal + SHIPPING)}
            orders.append(order)
        self.orders = orders
        return orders

    def post(self, order: dict[str, Any], timeout: float = 120, webhook: str = "new-order") -> int:
        """Post like Magento: a 503 (or no answer) is re-sent until it is accepted. Returns 503s seen."""
        assert self.stack is not None
        refused = 0
        deadline = time.monotonic() + timeout
        while True:
            status, _ = self.stack.post_order(order, webhook)
            if status == 202:
                return refused
            if status not in (0, 503) or time.monotonic() > deadline:
                raise AssertionError(f"order {order['entity_id']} got {status}")
            refused += 1
            time.sleep(0.5 if status == 503 else 0.2)

    # ------------------------------------------------------------ checks

    def created(self, entity: str) -> int:
        assert self.stack is not None
        return int(self.stack.sandbox_stats()["documents_created"].get(entity, 0))

    def wait_booked(self, timeout: float) -> None:
        poll(lambda: self.created("SalesReceipt") >= len(self.orders), timeout,
             lambda: f"{len(self.orders)} SalesReceipts (have {self.created('SalesReceipt')}); worker log:\n"
             + "\n".join(self.stack.log_tail(w, 15) for w in self.web_ports if self.stack))

    def calm(self) -> None:
        """The books are read back through the sandbox's own API: calm it first, as an operator would."""
        assert self.stack is not None
        status, _ = http("PUT", f"{self.stack.sandbox_url}/_sandbox/faults", json.dumps({
            "fail_rate": 0, "throttle_rate": 0, "commit_then_fail_rate": 0, "hang_rate": 0,
            "quota_per_minute": 0, "quota_per_second": 0}).encode(), {"Content-Type": "application/json"})
        assert status == 200

    def report(self, seconds: float) -> Report:
        s = self.stack
        assert s is not None
        self.calm()
        stats_before_reads = s.sandbox_stats()
        receipts: list[dict[str, Any]] = []
        start_at = 1
        while True:
            page = s.query(f"SELECT * FROM SalesReceipt STARTPOSITION {start_at} MAXRESULTS 1000").get("SalesReceipt", [])
            receipts += page
            if len(page) < 1000:
                break
            start_at += 1000
        numbers = [r["DocNumber"] for r in receipts]
        expected = {f"MAG-{o['increment_id']}": Decimal(o["grand_total"]) for o in self.orders}
        wrong = sum(1 for r in receipts if expected.get(r["DocNumber"]) != r["TotalAmt"])
        stats = stats_before_reads
        dead = asyncio.run(read_log(s.env["KAFKA_BOOTSTRAP_SERVERS"]))
        qbo_requests = sum(v for k, v in stats["requests"].items() if k.split()[1].startswith("/v3/"))
        return Report(
            orders=len(self.orders),
            documents=len(receipts),
            customers_expected=len({o["customer_email"] for o in self.orders}),
            customers=int(stats["documents_created"].get("Customer", 0)),
            items_expected=len({i["sku"] for o in self.orders for i in o["items"]}),
            items=int(stats["documents_created"].get("Item", 0)),
            doc_numbers_twice=len(numbers) - len(set(numbers)),
            wrong_totals=wrong,
            dead_letters=len(dead.letters),
            qbo_requests=qbo_requests,
            throttled=int(stats["throttled"]),
            injected=dict(stats["injected"]),
            seconds=seconds,
        )


def topic_bytes(bootstrap: str, names: list[str]) -> list[bytes]:
    """Every record of these topics as bytes — key, value and each header — for searching."""
    return [b"\x00".join([r.key or b"", r.value or b"", *(k.encode() + b"=" + (v or b"") for k, v in r.headers)])
            for r in read_topics(bootstrap, names)]


def exact(report: Report) -> None:
    """The promise: every order booked exactly once, nothing created twice, nothing dead."""
    assert report.documents == report.orders, report.lines()
    assert report.customers == report.customers_expected, report.lines()
    assert report.items == report.items_expected, report.lines()
    assert report.doc_numbers_twice == 0, report.lines()
    assert report.wrong_totals == 0, report.lines()
    assert report.dead_letters == 0, report.lines()


def dump(path: Path, report: Report) -> None:
    path.write_text(json.dumps(report.__dict__, indent=2, default=str))
