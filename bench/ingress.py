"""Ingress throughput against a bare aiohttp handler, same client, same concurrency, same run.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python bench/ingress.py [--requests N] [--concurrency C]

`make bench` runs it against a fresh local broker. The bare server only reads the
body and answers 202: the ratio says what verify + validate + produce(acks=all)
cost on top of aiohttp itself. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.domain.signature import sign  # noqa: E402

SECRET = "bench-secret"
PATH = "/webhooks/magento/new-order"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_bare(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"event_id": "x"}, status=202)

    app = web.Application()
    app.router.add_post(PATH, handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def bodies(n: int) -> list[tuple[bytes, str]]:
    sample = json.loads((REPO / "app/samples/blueprint_order.json").read_text())
    out = []
    for i in range(n):
        order = {**sample, "entity_id": 500000000 + i, "increment_id": f"B{500000000 + i}"}
        body = json.dumps(order).encode()
        out.append((body, sign(body, SECRET)))
    return out


async def load(url: str, payloads: list[tuple[bytes, str]], concurrency: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                body, sig = queue.get_nowait()
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers={"X-Magento-Signature": sig,
                                                                 "Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 202:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(payloads) / elapsed, latencies, errors


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="requests per measured round (default 3000)")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per target; best is kept")
    ap.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    bare_port, ingress_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="magqb-bench-")
    env = {**os.environ, "MAGENTO_WEBHOOK_SECRET": SECRET, "QUICKBOOKS_CLIENT_ID": "b",
           "QUICKBOOKS_CLIENT_SECRET": "b", "QUICKBOOKS_REFRESH_TOKEN": "b", "QUICKBOOKS_REALM_ID": "1",
           "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MAGQB_DATA_DIR": data, "MAGQB_LOG_LEVEL": "WARNING"}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port)], cwd=data),
        subprocess.Popen([str(REPO / ".venv/bin/magqb"), "ingress", "--port", str(ingress_port)], env=env, cwd=data),
    ]
    try:
        wait_ready(f"http://127.0.0.1:{ingress_port}/readyz", procs[1])
        bare_url, ingress_url = f"http://127.0.0.1:{bare_port}{PATH}", f"http://127.0.0.1:{ingress_port}{PATH}"
        for _ in range(50):
            try:
                asyncio.run(load(bare_url, bodies(1), 1))
                break
            except aiohttp.ClientError:
                time.sleep(0.1)
        payloads = bodies(args.requests)
        # Warm both (connections, JIT-less Python caches, producer metadata).
        asyncio.run(load(bare_url, payloads[:300], args.concurrency))
        asyncio.run(load(ingress_url, payloads[:300], args.concurrency))
        best: dict[str, tuple[float, list[float], int]] = {}
        for _ in range(args.rounds):
            for name, url in (("bare", bare_url), ("ingress", ingress_url)):
                rps, lat, errors = asyncio.run(load(url, payloads, args.concurrency))
                if name not in best or rps > best[name][0]:
                    best[name] = (rps, lat, errors)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)

    bare_rps, _, bare_err = best["bare"]
    ing_rps, ing_lat, ing_err = best["ingress"]
    q = statistics.quantiles(ing_lat, n=100)
    print(f"ingress benchmark: {args.requests} signed webhooks x {args.rounds} rounds, concurrency "
          f"{args.concurrency}, Kafka {bootstrap} (acks=all, idempotent)")
    print(f"  bare aiohttp handler : {bare_rps:8.0f} req/s  (errors {bare_err})")
    print(f"  magqb ingress        : {ing_rps:8.0f} req/s  (errors {ing_err})")
    print(f"  ratio ingress/bare   : {ing_rps / bare_rps:8.2f}   (goal >= 0.5)")
    print(f"  ingress latency      : p50 {q[49] * 1000:.1f} ms   p99 {q[98] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
