"""The four services as real processes on real sockets: Kafka (from `make test`), the QBO
sandbox, the ingress and a worker. One stack per session; tests use their own order ids."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from app.domain.signature import sign
from tests.conftest import TEST_ENV, free_port

REPO = Path(__file__).resolve().parents[2]
MAGQB = str(REPO / ".venv" / "bin" / "magqb")
T = TypeVar("T")


def poll(check: Callable[[], T | None], timeout: float, what: str | Callable[[], str], interval: float = 0.2) -> T:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


@dataclass
class Stack:
    env: dict[str, str]
    ingress_url: str
    sandbox_url: str
    worker_url: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _access_token: str | None = None

    # ---- Magento side
    def post_order(self, order: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(order).encode()
        status, raw = http("POST", f"{self.ingress_url}/webhooks/magento/new-order", body, {
            "Content-Type": "application/json",
            "X-Magento-Signature": sign(body, self.env["MAGENTO_WEBHOOK_SECRET"]),
        })
        return status, json.loads(raw) if raw else {}

    # ---- QuickBooks side, read back through the sandbox's own query API
    def _token(self) -> str:
        if self._access_token is None:
            import base64

            basic = base64.b64encode(
                f"{self.env['QUICKBOOKS_CLIENT_ID']}:{self.env['QUICKBOOKS_CLIENT_SECRET']}".encode()).decode()
            form = urllib.parse.urlencode({"grant_type": "refresh_token",
                                           "refresh_token": self.env["QUICKBOOKS_REFRESH_TOKEN"]}).encode()
            status, raw = http("POST", f"{self.sandbox_url}/oauth2/v1/tokens/bearer", form, {
                "Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"})
            assert status == 200, raw
            self._access_token = json.loads(raw)["access_token"]
        return self._access_token

    def query(self, sql: str) -> dict[str, Any]:
        url = (f"{self.sandbox_url}/v3/company/{self.env['QUICKBOOKS_REALM_ID']}/query?"
               + urllib.parse.urlencode({"query": sql, "minorversion": "75"}))
        status, raw = http("GET", url, headers={"Authorization": f"Bearer {self._token()}",
                                                "Accept": "application/json"})
        assert status == 200, raw
        return dict(json.loads(raw, parse_float=Decimal)["QueryResponse"])

    def count(self, entity: str, where: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM {entity} WHERE {where}").get("totalCount", 0))

    def sandbox_stats(self) -> dict[str, Any]:
        return json.loads(http("GET", f"{self.sandbox_url}/_sandbox/stats")[1])

    # ---- the worker's own view
    def metric(self, name: str, **labels: str) -> float:
        status, raw = http("GET", f"{self.worker_url}/metrics")
        if status != 200:
            return 0.0
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.compile(rf"^{re.escape(name)}(?:\{{{re.escape(want)}\}})? ([0-9.e+-]+)$" if want
                             else rf"^{re.escape(name)} ([0-9.e+-]+)$", re.M)
        m = pattern.search(raw.decode())
        return float(m.group(1)) if m else 0.0

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _start(stack: Stack, name: str, *args: str) -> None:
    out = open(stack.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    stack.procs[name] = subprocess.Popen([MAGQB, *args], env=stack.env, cwd=stack.logs, stdout=out,
                                         stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack")
    sandbox_port, ingress_port, web_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_"))},
        **TEST_ENV,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer",
        "MAGQB_DATA_DIR": str(logs / "data"),
        "MAGQB_APP_ID": f"magqb-e2e-{uuid.uuid4().hex[:8]}",
    }
    s = Stack(env, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{sandbox_port}",
              f"http://127.0.0.1:{web_port}", logs)
    try:
        # QBO's quotas are off here: pacing the dispatcher within them is issue #4's chaos suite.
        _start(s, "sandbox", "sandbox", "--port", str(sandbox_port), "--quota-per-second", "0",
               "--quota-per-minute", "0")
        _start(s, "ingress", "ingress", "--port", str(ingress_port))
        _start(s, "worker", "worker", "--web-port", str(web_port))

        def ready() -> bool:
            for name, proc in s.procs.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{s.log_tail(name)}")
            return (http("GET", f"{s.ingress_url}/readyz")[0] == 200
                    and http("GET", f"{s.sandbox_url}/_sandbox/stats")[0] == 200
                    and "worker ready" in s.log_tail("worker", 200))

        try:
            poll(ready, 90, "the stack to be ready")
        except pytest.fail.Exception:
            tails = "\n".join(f"--- {n}.log ---\n{s.log_tail(n, 25)}" for n in s.procs)
            pytest.fail(f"the stack did not become ready in 90s:\n{tails}")
        yield s
    finally:
        for proc in reversed(list(s.procs.values())):
            _stop(proc)
