"""Booking at QuickBooks' speed limit: both workloads of issue #10 against the sandbox with QBO's real quota.

    .venv/bin/python bench/quota.py                      # full size (about 8 minutes)
    .venv/bin/python bench/quota.py --cold-orders 200 --customers 40 --skus 10 --steady-orders 200 --latency-seconds 20

One broker, sandbox (500 requests per rolling minute, 10 per second — QBO's per-realm limits),
ingress and worker, real processes. Three phases, one run:

  cold    — orders whose customers and SKUs QuickBooks has never seen, posted at once;
  steady  — the same customers and SKUs again (the tables know them), posted at once;
  latency — after a minute's rest (so the quota allows it), steady orders at a steady rate
            (5/s), each one's latency from the webhook's acceptance (its record on magento.orders)
            to the document (its DocumentCreated);
  later   — after another minute's rest, the later life of booked orders, posted at once: a third
            refunded in part (a credit memo → RefundReceipt), a third cancelled (→ void), a third
            invoiced (a paid invoice of a SalesReceipt order: nothing to book).

Printed per phase: orders/min against the 500/min line, QBO requests per order, reads per order,
429s per 1,000 requests; and booking latency p50/p99. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import read_topics  # noqa: E402
from tests.e2e.chaos import ChaosPlan, ChaosRun  # noqa: E402
from tests.e2e.harness import poll  # noqa: E402

QUOTA_PER_MINUTE = 500


@dataclass
class Counts:
    reads: int
    writes: int
    throttled: int
    documents: int

    @classmethod
    def of(cls, stats: dict[str, Any]) -> Counts:
        requests: dict[str, int] = stats["requests"]
        reads = sum(n for k, n in requests.items() if k.startswith(("GET /v3/", "POST /v3/query")))
        writes = sum(n for k, n in requests.items() if k.startswith("POST /v3/") and not k.startswith("POST /v3/query"))
        return cls(reads, writes, int(stats["throttled"]), int(stats["documents_created"].get("SalesReceipt", 0)))

    def minus(self, other: Counts) -> Counts:
        return Counts(self.reads - other.reads, self.writes - other.writes, self.throttled - other.throttled,
                      self.documents - other.documents)


def renumbered(orders: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """The same customers and SKUs, as new orders."""
    return [{**o, "entity_id": o["entity_id"] + offset, "increment_id": f"{o['entity_id'] + offset:09d}"}
            for o in orders]


def phase(run: ChaosRun, name: str, orders: list[dict[str, Any]], rate: float | None, timeout: float) -> dict[str, Any]:
    assert run.stack is not None
    before = Counts.of(run.stack.sandbox_stats())
    started = time.monotonic()
    for n, order in enumerate(orders):
        if rate:
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
        run.post(order)
    target = before.documents + len(orders)
    poll(lambda: Counts.of(run.stack.sandbox_stats()).documents >= target, timeout,  # type: ignore[union-attr]
         f"{name}: {len(orders)} documents")
    seconds = time.monotonic() - started
    spent = Counts.of(run.stack.sandbox_stats()).minus(before)
    requests = spent.reads + spent.writes
    return {
        "phase": name, "orders": len(orders), "seconds": round(seconds, 1),
        "orders_per_min": round(len(orders) / seconds * 60, 1),
        "requests_per_order": round(requests / len(orders), 3), "reads_per_order": round(spent.reads / len(orders), 3),
        "requests": requests, "reads": spent.reads, "writes": spent.writes, "throttled": spent.throttled,
        "throttled_per_1000": round(1000 * spent.throttled / requests, 2) if requests else 0.0,
    }


def later_events(orders: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """A credit memo of one unit of the first line, a cancellation, or a paid invoice: one per order."""
    out: list[tuple[str, dict[str, Any]]] = []
    for n, o in enumerate(orders):
        first = o["items"][0]
        if n % 3 == 0:
            out.append(("creditmemo-created", {
                "entity_id": o["entity_id"], "increment_id": f"{o['entity_id']:09d}", "order_id": o["entity_id"],
                "state": 2, "grand_total": first["price"], "subtotal": first["price"], "adjustment_positive": 0,
                "adjustment_negative": 0, "items": [{"order_item_id": first["item_id"], "sku": first["sku"],
                                                     "qty": 1, "price": first["price"], "row_total": first["price"]}]}))
        elif n % 3 == 1:
            out.append(("order-cancelled", {**o, "state": "canceled", "status": "canceled"}))
        else:
            out.append(("invoice-paid", {"entity_id": o["entity_id"], "increment_id": f"{o['entity_id']:09d}",
                                         "order_id": o["entity_id"], "state": 2, "grand_total": o["grand_total"]}))
    return out


def later_phase(run: ChaosRun, orders: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """Requests per later event, by kind; done when the worker has logged each outcome."""
    assert run.stack is not None
    events = later_events(orders)
    log = run.stack.logs / "worker0.log"
    marks = ("refunded: QBO", "voided: QBO", "nothing to book (paid at checkout)")

    def done() -> list[int]:
        text = log.read_text(errors="replace")
        return [text.count(m) for m in marks]

    before, started = Counts.of(run.stack.sandbox_stats()), time.monotonic()
    counted = done()
    for hook, body in events:
        run.post(body, webhook=hook)
    want = [counted[i] + sum(1 for h, _ in events if h == k)
            for i, k in enumerate(("creditmemo-created", "order-cancelled", "invoice-paid"))]
    poll(lambda: done() >= want, timeout, "later: every refund, void and paid invoice")
    seconds = time.monotonic() - started
    spent = Counts.of(run.stack.sandbox_stats()).minus(before)
    requests = spent.reads + spent.writes
    n = len(events)
    return {"phase": "later", "orders": n, "seconds": round(seconds, 1),
            "orders_per_min": round(n / seconds * 60, 1), "requests_per_order": round(requests / n, 3),
            "reads_per_order": round(spent.reads / n, 3), "requests": requests, "reads": spent.reads,
            "writes": spent.writes, "throttled": spent.throttled,
            "throttled_per_1000": round(1000 * spent.throttled / requests, 2) if requests else 0.0,
            "refunds": sum(1 for h, _ in events if h == "creditmemo-created"),
            "voids": sum(1 for h, _ in events if h == "order-cancelled"),
            "invoices": sum(1 for h, _ in events if h == "invoice-paid")}


def latencies(bootstrap: str, order_ids: set[str]) -> list[float]:
    """Seconds from each order's record on magento.orders to its first DocumentCreated on qbo.results."""
    accepted: dict[str, int] = {}
    for r in read_topics(bootstrap, ["magento.orders"]):
        key = r.key.decode() if r.key else ""
        if key in order_ids:
            accepted.setdefault(key, r.timestamp)
    booked: dict[str, int] = {}
    for r in read_topics(bootstrap, ["qbo.results"]):
        key = r.key.decode() if r.key else ""
        if key in order_ids and b'"document_created"' in (r.value or b""):
            booked.setdefault(key, r.timestamp)
    return sorted((booked[k] - accepted[k]) / 1000 for k in order_ids if k in accepted and k in booked)


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold-orders", type=int, default=1000)
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--skus", type=int, default=50)
    ap.add_argument("--steady-orders", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=60.0, help="length of the steady-rate phase")
    ap.add_argument("--rate", type=float, default=5.0, help="orders per second in the latency phase")
    ap.add_argument("--later-events", type=int, default=600, help="refunds, cancellations, paid invoices (a third each)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    plan = ChaosPlan(orders=args.cold_orders, customers=args.customers, skus=args.skus, partitions=8,
                     fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0, token_ttl=3600,
                     quota_per_minute=QUOTA_PER_MINUTE, quota_per_second=10, throttle_backoff=60.0, seed=101)
    run = ChaosRun(plan, Path(tempfile.mkdtemp(prefix="magqb-quota-")))
    results: list[dict[str, Any]] = []
    try:
        stack = run.start()
        cold = run.make_orders()
        results.append(phase(run, "cold", cold, None, 3600))
        steady = renumbered(cold, 10**6)[: args.steady_orders]
        while len(steady) < args.steady_orders:
            steady += renumbered(cold, 10**6 * (len(steady) // len(cold) + 1))[: args.steady_orders - len(steady)]
        results.append(phase(run, "steady", steady, None, 3600))
        time.sleep(61)  # a fresh rolling minute: latency "quota allowing", not the tail of the steady burst
        paced = renumbered(cold, 2 * 10**7)[: int(args.latency_seconds * args.rate)]
        results.append(phase(run, "latency", paced, args.rate, 600))
        lat = latencies(stack.env["KAFKA_BOOTSTRAP_SERVERS"], {str(o["entity_id"]) for o in paced})
        results[-1].update({"latency_p50": round(percentile(lat, 50), 3), "latency_p99": round(percentile(lat, 99), 3),
                            "latency_max": round(max(lat), 3) if lat else None, "latency_samples": len(lat)})
        time.sleep(61)
        results.append(later_phase(run, steady[: args.later_events], 3600))
    finally:
        run.stop()
        run.cleanup()

    print(f"quota benchmark: QBO's real per-realm quota ({QUOTA_PER_MINUTE}/min, 10/s), {args.customers} customers, "
          f"{args.skus} SKUs")
    for r in results:
        if r["phase"] == "later":
            continue
        print(f"  {r['phase']:<8} {r['orders']:>5} orders in {r['seconds']:>6.1f} s: {r['orders_per_min']:6.1f} "
              f"orders/min ({r['orders_per_min'] / QUOTA_PER_MINUTE:.0%} of the {QUOTA_PER_MINUTE}/min line) · "
              f"{r['requests_per_order']:.3f} requests/order · {r['reads_per_order']:.3f} reads/order · "
              f"{r['throttled_per_1000']:.2f} 429s per 1,000 requests ({r['requests']} requests)")
    paced_result = next(r for r in results if r["phase"] == "latency")
    print(f"  latency  webhook accepted → document created at {args.rate:g} orders/s: "
          f"p50 {paced_result['latency_p50'] * 1000:.0f} ms, p99 {paced_result['latency_p99'] * 1000:.0f} ms, "
          f"max {paced_result['latency_max'] * 1000:.0f} ms ({paced_result['latency_samples']} orders)")
    later = results[-1]
    print(f"  later    {later['refunds']} refunds + {later['voids']} cancellations + {later['invoices']} paid invoices of "
          f"receipts: {later['writes']} writes, {later['reads']} reads = "
          f"{later['writes'] / max(1, later['refunds'] + later['voids']):.3f} writes per refund or void, "
          f"{later['orders_per_min']:.1f} events/min")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
