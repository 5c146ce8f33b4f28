"""Real processes on real sockets, for end-to-end tests and benchmarks: the QBO sandbox,
ingress and workers as `magqb` subprocesses, driven and observed over HTTP only."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from app.domain.signature import sign
from tests.conftest import TEST_ENV, free_port  # noqa: F401 - re-exported for stacks

REPO = Path(__file__).resolve().parents[2]
MAGQB = str(REPO / ".venv" / "bin" / "magqb")
T = TypeVar("T")


class PollTimeout(AssertionError):
    """A bounded wait ran out."""


def poll(check: Callable[[], T | None], timeout: float, what: str | Callable[[], str], interval: float = 0.2) -> T:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise PollTimeout(f"timed out after {timeout:.0f}s waiting for {what() if callable(what) else what}")
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
    def post_order(self, order: dict[str, Any], webhook: str = "new-order") -> tuple[int, dict[str, Any]]:
        """POST a signed webhook (new-order, order-cancelled, creditmemo-created, invoice-paid)."""
        body = json.dumps(order).encode()
        status, raw = http("POST", f"{self.ingress_url}/webhooks/magento/{webhook}", body, {
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

    def api(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, dict[str, Any]]:
        """A call to the sandbox's Accounting API, as an operator's script would make it."""
        url = (f"{self.sandbox_url}/v3/company/{self.env['QUICKBOOKS_REALM_ID']}/{path}?"
               + urllib.parse.urlencode({"minorversion": "75", **params}))
        status, raw = http(method, url, json.dumps(body).encode() if body is not None else None,
                           {"Authorization": f"Bearer {self._token()}", "Content-Type": "application/json"})
        return status, json.loads(raw, parse_float=Decimal) if raw else {}

    def book_by_hand(self, doc_number: str, who: str) -> dict[str, Any]:
        """An Invoice someone keyed in QuickBooks by hand under `doc_number` (a customer `who` of its own):
        an order needing that DocNumber is refused 6140 and parked. Returns the Invoice."""
        status, person = self.api("POST", "customer", {"DisplayName": who})
        assert status == 200, person
        status, body = self.api("POST", "invoice", {
            "Line": [{"Amount": 10, "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}],
            "CustomerRef": {"value": person["Customer"]["Id"]}, "DocNumber": doc_number})
        assert status == 200, body
        return dict(body["Invoice"])

    def count(self, entity: str, where: str) -> int:
        return int(self.query(f"SELECT COUNT(*) FROM {entity} WHERE {where}").get("totalCount", 0))

    def sandbox_stats(self) -> dict[str, Any]:
        return json.loads(http("GET", f"{self.sandbox_url}/_sandbox/stats")[1])

    # ---- the worker's own view
    def metric(self, name: str, _of: str = "worker", **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (in any order); 0 when there are none.
        `_of`: "worker", or "ingress"."""
        status, raw = http("GET", f"{self.ingress_url if _of == 'ingress' else self.worker_url}/metrics")
        if status != 200:
            return 0.0
        total = 0.0
        for m in re.finditer(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", raw.decode(), re.M):
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def magqb(stack: Stack, *args: str, stdin: str | None = None, timeout: float = 180,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A `magqb` command of the operator's, against the stack."""
    return subprocess.run([MAGQB, *args], env={**stack.env, **(env or {})}, cwd=stack.logs, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def start(stack: Stack, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(stack.logs / f"{name}.log", "ab")  # closed with the process
    proc = subprocess.Popen([MAGQB, *args], env={**stack.env, **(env or {})}, cwd=stack.logs, stdout=out,
                            stderr=subprocess.STDOUT)
    stack.procs[name] = proc
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


