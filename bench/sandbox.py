"""How fast the local QuickBooks sandbox books SalesReceipts, with throttling off.

    .venv/bin/python bench/sandbox.py [--requests N] [--concurrency C]

The sandbox runs pinned to one core (CPU 0) and the client to the other, so the
figure is "create-SalesReceipt requests/s on one core" (goal ≥ 2,000: the
sandbox must never be the bottleneck of our benchmarks). A bare aiohttp handler
on the same core, same client, same run, is the baseline for the ratio.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingress import free_port, serve_bare, wait_ready  # noqa: E402

REALM = "4620816365000000000"
CLIENT = ("bench-client", "bench-secret")
REFRESH = "bench-refresh-token"


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() > 1 and _has_taskset() else []  # type: ignore[operator]


def _has_taskset() -> bool:
    return subprocess.run(["which", "taskset"], capture_output=True).returncode == 0


def access_token(base: str) -> str:
    basic = base64.b64encode(f"{CLIENT[0]}:{CLIENT[1]}".encode()).decode()
    data = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": REFRESH}).encode()
    req = urllib.request.Request(f"{base}/oauth2/v1/tokens/bearer", data=data,
                                 headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["access_token"])


def receipts(n: int, customer_id: str) -> list[bytes]:
    out = []
    for i in range(n):
        out.append(json.dumps({
            "Line": [
                {"Amount": 20.00, "DetailType": "SalesItemLineDetail",
                 "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 2, "UnitPrice": 10, "TaxCodeRef": {"value": "TAX"}}},
                {"Amount": 25.00, "DetailType": "SalesItemLineDetail",
                 "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 1, "UnitPrice": 25, "TaxCodeRef": {"value": "TAX"}}},
                {"Amount": 5.00, "DetailType": "SalesItemLineDetail",
                 "SalesItemLineDetail": {"ItemRef": {"value": "2"}, "Qty": 1, "UnitPrice": 5, "TaxCodeRef": {"value": "NON"}}},
            ],
            "CustomerRef": {"value": customer_id}, "DocNumber": f"B-{i}", "TxnDate": "2026-11-29",
            "TxnTaxDetail": {"TotalTax": 3.60}, "DepositToAccountRef": {"value": "4"},
            "PrivateNote": f"Magento Order ID: {i}",
        }).encode())
    return out


async def load(url: str, bodies: list[bytes], concurrency: int, token: str, first: int = 0) -> tuple[float, int]:
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for n, b in enumerate(bodies, start=first):  # a distinct requestid per body: no idempotent replays
        queue.put_nowait((n, b))
    errors = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                n, body = queue.get_nowait()
                async with session.post(url, data=body, headers=headers,
                                        params={"requestid": f"bench-{n}", "minorversion": "75"}) as r:
                    await r.read()
                    errors += r.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started), errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return

    port, bare_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MAGQB_LOG_LEVEL": "WARNING"}
    sandbox = subprocess.Popen([*pin(0), str(REPO / ".venv/bin/magqb"), "sandbox", "--port", str(port),
                                "--realm-id", REALM, "--client-id", CLIENT[0], "--client-secret", CLIENT[1],
                                "--refresh-token", REFRESH, "--quota-per-minute", "0", "--quota-per-second", "0"],
                               env=env, cwd="/tmp")
    bare = subprocess.Popen([*pin(0), sys.executable, __file__, "--serve-bare", str(bare_port)], cwd="/tmp")
    if pin(1):
        os.sched_setaffinity(0, {1})
    try:
        wait_ready(f"{base}/_sandbox/stats", sandbox)
        token = access_token(base)
        req = urllib.request.Request(f"{base}/v3/company/{REALM}/customer", method="POST",
                                     data=b'{"DisplayName": "Bench Customer"}',
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        customer_id = json.loads(urllib.request.urlopen(req).read())["Customer"]["Id"]
        bodies = receipts(args.requests + 300, customer_id)
        url = f"{base}/v3/company/{REALM}/salesreceipt"
        asyncio.run(load(url, bodies[:300], args.concurrency, token))  # warm-up
        rps, errors = asyncio.run(load(url, bodies[300:], args.concurrency, token, first=300))
        bare_url = f"http://127.0.0.1:{bare_port}/webhooks/magento/new-order"
        asyncio.run(load(bare_url, bodies[:300], args.concurrency, token))
        bare_rps, _ = asyncio.run(load(bare_url, bodies[300:], args.concurrency, token))
        stats = json.loads(urllib.request.urlopen(f"{base}/_sandbox/stats").read())
    finally:
        for p in (sandbox, bare):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)

    created = stats["documents_created"].get("SalesReceipt", 0)
    print(f"sandbox benchmark: {args.requests} create-SalesReceipt requests, concurrency {args.concurrency}, "
          f"sandbox {'pinned to CPU 0' if pin(0) else 'unpinned'}, throttling off")
    print(f"  sandbox creates      : {rps:8.0f} req/s  (errors {errors}; {created} SalesReceipts in the company)")
    print(f"  bare aiohttp handler : {bare_rps:8.0f} req/s  (same core, same client)")
    print(f"  ratio sandbox/bare   : {rps / bare_rps:8.2f}   (goal: >= 2,000 creates/s)")


if __name__ == "__main__":
    main()
