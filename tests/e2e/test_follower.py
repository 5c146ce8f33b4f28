"""Every way a store speaks, end to end on the real broker with real processes: a stack of its own
(an ingress that takes Mage-OS events, Adobe Commerce webhooks and Adobe I/O Events signed as their
senders sign, two workers that follow a Magento stand-in signing OAuth 1.0a, a key server), so the
webhooks it misses are the follower's to find and every source books its order once."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain.signature import sign
from tests.conftest import TEST_ENV, free_port, make_order
from tests.e2e.harness import REPO, Stack, http, magqb, poll, start, stop
from tests.integration.test_sources import fixture, new_key, pem, rsa_sign

pytestmark = pytest.mark.kafka
CLIENT_ID = "4ab33463139e4f96b851589286cd46e4"
INTERVAL = 3  # seconds between the follower's passes
OAUTH = {"MAGENTO_CONSUMER_KEY": "k" * 32, "MAGENTO_CONSUMER_SECRET": "c" * 32,
         "MAGENTO_ACCESS_TOKEN": "a" * 32, "MAGENTO_ACCESS_TOKEN_SECRET": "s" * 32}


class FollowStack(Stack):
    magento_url: str = ""
    web_ports: dict[str, int]
    commerce_key: Any
    io_keys: dict[str, Any]

    def post(self, path: str, obj: Any, headers: dict[str, str]) -> int:
        body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        return http("POST", self.ingress_url + path, body, {"Content-Type": "application/json", **headers})[0]

    def magento(self, path: str, body: Any) -> Any:
        status, raw = http("POST", f"{self.magento_url}/_standin/{path}", json.dumps(body).encode(),
                           {"Content-Type": "application/json"})
        assert status == 200, raw
        return json.loads(raw)

    def magento_stats(self) -> dict[str, Any]:
        return json.loads(http("GET", f"{self.magento_url}/_standin/stats")[1])

    def worker_metric(self, worker: str, name: str) -> float:
        self.worker_url = f"http://127.0.0.1:{self.web_ports[worker]}"
        return self.metric(name)

    def receipts(self, order: dict[str, Any]) -> int:
        return self.count("SalesReceipt", f"DocNumber = 'MAG-{order['increment_id']}'")


@pytest.fixture(scope="module")
def follow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FollowStack]:
    logs = tmp_path_factory.mktemp("follow")
    # A broker of its own: a new worker group on the session's broker would first re-read every earlier
    # test's orders, and this module times what the follower brings.
    port, controller = free_port(), free_port()
    kafka_env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
                 "KAFKA_DATA_DIR": str(logs / "kafka")}
    subprocess.run([str(REPO / "ops/kafka/start")], env=kafka_env, check=True, capture_output=True, timeout=180)
    kafka_bootstrap = f"127.0.0.1:{port}"
    sandbox_port, ingress_port, magento_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_", "KAFKA_"))},
        **TEST_ENV, **OAUTH,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer",
        "MAGQB_APP_ID": f"magqb-follow-{uuid.uuid4().hex[:8]}",
        "MAGQB_QBO_REQUESTS_PER_MINUTE": "0", "MAGQB_QBO_REQUESTS_PER_SECOND": "0",
        # Each run follows a store of its own: the cursor is keyed by the base URL.
        "MAGENTO_BASE_URL": f"http://127.0.0.1:{magento_port}/rest/V1",
        "MAGQB_FOLLOW_INTERVAL": str(INTERVAL),
    }
    s = FollowStack(env, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{sandbox_port}", "", logs)
    s.magento_url, s.web_ports = f"http://127.0.0.1:{magento_port}", {}
    # Adobe's keys: the Commerce webhook key pair, and the I/O Events key server's two keys (files under
    # /prod/keys/ served by a plain HTTP server, as static.adobeioevents.com serves them).
    s.commerce_key = new_key()
    (logs / "commerce.pem").write_bytes(pem(s.commerce_key))
    keys_dir = logs / "keyserver" / "prod" / "keys"
    keys_dir.mkdir(parents=True)
    s.io_keys = {}
    for _ in range(2):
        path = f"/prod/keys/pub-key-{uuid.uuid4()}.pem"
        s.io_keys[path] = new_key()
        (logs / "keyserver" / path.lstrip("/")).write_bytes(pem(s.io_keys[path]))
    key_port = free_port()
    env.update({"MAGQB_ADOBE_WEBHOOK_PUBLIC_KEY": str(logs / "commerce.pem"), "MAGQB_ADOBE_IO_CLIENT_ID": CLIENT_ID,
                "MAGQB_ADOBE_IO_KEY_URL": f"http://127.0.0.1:{key_port}"})
    keyserver = subprocess.Popen([sys.executable, "-m", "http.server", str(key_port), "--bind", "127.0.0.1",
                                  "--directory", str(logs / "keyserver")], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    magento_log = open(logs / "magento.log", "ab")
    standin = subprocess.Popen([sys.executable, "-m", "tests.magento_standin", "--port", str(magento_port),
                                "--orders", "0", "--oauth", ":".join(OAUTH.values())], cwd=REPO, stdout=magento_log,
                               stderr=subprocess.STDOUT)
    try:
        start(s, "sandbox", "sandbox", "--port", str(sandbox_port), "--quota-per-second", "0", "--quota-per-minute", "0")
        start(s, "ingress", "ingress", "--port", str(ingress_port))
        for name in ("worker0", "worker1"):
            s.web_ports[name] = free_port()
            start(s, name, "worker", "--web-port", str(s.web_ports[name]), env={"MAGQB_DATA_DIR": str(logs / name)})
        poll(lambda: http("GET", f"{s.ingress_url}/readyz")[0] == 200 and http("GET", f"{s.magento_url}/_standin/stats")[0] == 200,
             90, "the ingress and the Magento stand-in")
        poll(lambda: all("worker ready" in s.log_tail(w, 400) for w in s.web_ports), 120,
             lambda: "the workers:\n" + "\n".join(s.log_tail(w) for w in s.web_ports))
        yield s
    finally:
        for proc in reversed(list(s.procs.values())):
            stop(proc)
        standin.terminate()
        standin.wait(10)
        keyserver.terminate()
        keyserver.wait(10)
        subprocess.run([str(REPO / "ops/kafka/stop")], env=kafka_env, capture_output=True, timeout=90)


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def orders(first: int, count: int) -> list[dict[str, Any]]:
    """Orders as Magento has them now (updated_at: this second, as a checkout writes it)."""
    stamp = now_utc()
    return [make_order(first + n, f"follow{n % 7}@example.com", [("FOL-1", 1, "10.00"), ("FOL-2", 2, "3.50")],
                       created_at=stamp, updated_at=stamp) for n in range(count)]


def leader(s: FollowStack) -> str:
    return poll(lambda: next((w for w in s.web_ports if s.procs[w].poll() is None
                              and s.worker_metric(w, "magqb_follow_last_pass_timestamp_seconds") > 0), None),
                60, "a worker to follow Magento")


def test_orders_no_webhook_brought_are_booked_within_an_interval_and_once_when_both_bring_them(
        follow_stack: FollowStack) -> None:
    s = follow_stack
    missed = orders(940000, 20)  # the webhook endpoint was down (or never configured) for these
    both = orders(940100, 5)  # these came by webhook as well
    for o in both:
        assert s.post_order(o)[0] == 202
    s.magento("orders", missed + both)
    added = time.monotonic()
    poll(lambda: all(s.receipts(o) == 1 for o in missed + both), 60, "the missed orders to be booked")
    took = time.monotonic() - added
    assert took < 2 * INTERVAL + 20, took  # one interval, plus booking
    # The follower's next passes bring nothing new, and nothing is booked twice.
    mine = leader(s)
    published = s.worker_metric(mine, "magqb_follow_events_published_total")
    before = s.worker_metric(mine, "magqb_follow_last_pass_timestamp_seconds")
    poll(lambda: s.worker_metric(mine, "magqb_follow_last_pass_timestamp_seconds") > before + INTERVAL, 30,
         "two more passes")
    assert s.worker_metric(mine, "magqb_follow_events_published_total") == published
    assert [s.receipts(o) for o in missed + both] == [1] * 25
    assert s.worker_metric(mine, "magqb_follow_lag_seconds") < 3 * INTERVAL + 5


def test_a_cancellation_a_refund_and_a_payment_only_rest_saw_reach_quickbooks(follow_stack: FollowStack) -> None:
    s = follow_stack
    refunded, cancelled, later = orders(940200, 3)
    later["payment"] = {"method": "purchaseorder"}  # paid later: booked as an Invoice
    s.magento("orders", [refunded, cancelled, later])
    poll(lambda: s.receipts(refunded) == s.receipts(cancelled) == 1, 60, "the orders to be booked")
    poll(lambda: s.count("Invoice", f"DocNumber = 'MAG-{later['increment_id']}'") == 1, 60, "the Invoice")
    # The money comes in: Magento's invoice turns paid (state 2), and only REST tells.
    s.magento("invoices", [{"entity_id": 940299, "increment_id": "IN940299", "order_id": later["entity_id"],
                            "state": 2, "grand_total": later["grand_total"], "created_at": now_utc(),
                            "updated_at": now_utc()}])
    poll(lambda: s.count("Payment", "PaymentRefNum = 'MAG-PAY-IN940299'") == 1, 60, "the Payment")
    memo = {"entity_id": 940200, "increment_id": "CM940200", "order_id": refunded["entity_id"], "grand_total": 10,
            "subtotal": 10, "created_at": now_utc(), "items": [{"sku": "FOL-1", "qty": 1, "price": 10, "row_total": 10,
                                                                 "order_item_id": 1}]}
    s.magento("creditmemos", [memo])
    poll(lambda: s.count("RefundReceipt", "DocNumber = 'MAG-CM-CM940200'") == 1, 60, "the refund")
    time.sleep(1.1)  # Magento's updated_at has whole seconds: the cancellation is a later second
    s.magento("orders", [{**cancelled, "state": "canceled", "status": "canceled", "updated_at": now_utc()}])

    def void() -> dict[str, Any] | None:
        later = json.loads(magqb(s, "status", str(cancelled["entity_id"]), "--json").stdout or "{}").get("later", [])
        return next((f for f in later if f["kind"] == "void" and f["status"] == "done"), None)

    poll(void, 60, "the cancellation to void the SalesReceipt")
    [doc] = s.query(f"SELECT * FROM SalesReceipt WHERE DocNumber = 'MAG-{cancelled['increment_id']}'")["SalesReceipt"]
    assert str(doc["TotalAmt"]) in ("0", "0.00")
    assert s.count("RefundReceipt", "DocNumber = 'MAG-CM-CM940200'") == 1


def test_the_following_worker_killed_mid_pass_the_other_continues_from_the_cursor(follow_stack: FollowStack) -> None:
    s = follow_stack
    mine = leader(s)
    batch = orders(941000, 250)
    s.magento("mode", {"slow": 1.0})  # a busy Magento: a pass of three pages takes seconds
    before = s.magento_stats()["requests"]
    s.magento("orders", batch)
    # The first page answered and the second asked for: the follower is mid-pass.
    poll(lambda: s.magento_stats()["requests"] >= before + 2, 60, "the pass to start")
    s.procs[mine].kill()
    s.procs[mine].wait(30)
    s.magento("mode", {"slow": 0})
    other = leader(s)
    assert other != mine
    def booked() -> list[str]:
        found = s.query("SELECT * FROM SalesReceipt WHERE DocNumber LIKE 'MAG-000941%' MAXRESULTS 1000")
        return [d["DocNumber"] for d in found.get("SalesReceipt", [])]

    # Wait for all 250 numbers, not a sample of them: orders still in flight when a sample is booked
    # would read as lost.
    poll(lambda: len(set(booked())) == 250, 120, "the other worker to finish the pass")
    assert sorted(booked()) == sorted(f"MAG-{o['increment_id']}" for o in batch)  # every one, none twice


def test_every_source_books_its_order_once_sent_twice_and_seen_by_the_follower_too(follow_stack: FollowStack) -> None:
    s = follow_stack
    stamp = now_utc()

    def sample(name: str, entity_id: int) -> tuple[Any, dict[str, Any]]:
        payload = fixture(name)
        order = payload["data"]["order"] if "order" in payload.get("data", {}) else payload.get("data", payload.get("order"))
        order.update({"entity_id": entity_id, "increment_id": f"{entity_id:09d}", "created_at": stamp, "updated_at": stamp})
        for item in order["items"]:
            item["order_id"] = entity_id
        return payload, order

    mageos, mageos_order = sample("mageos__sales.order.created.json", 950001)
    plugin, plugin_order = sample("adobe-commerce-webhook__plugin.sales.api.order_management.place.json", 950002)
    observer, observer_order = sample("adobe-commerce-webhook__observer.sales_order_place_after.json", 950003)
    event = fixture("adobe-io__com.adobe.commerce.observer.sales_order_save_commit_after.json")
    event["recipientclientid"] = CLIENT_ID
    for item in event["data"]["value"]["items"]:
        item["order_id"] = "950004"
    _, io_order = sample("mageos__sales.order.created.json", 950004)
    s.magento("orders", [io_order])  # what REST answers for the notification (the follower sees it too)
    io_body = json.dumps(event).encode()
    (p1, k1), (p2, k2) = s.io_keys.items()
    for _ in range(2):  # every sender retries: each is sent twice
        body = json.dumps(mageos).encode()
        assert s.post("/webhooks/mageos/sales.order.created", body,
                      {"x-magento-signature": sign(body, TEST_ENV["MAGENTO_WEBHOOK_SECRET"])}) == 202
        for payload in (plugin, observer):
            body = json.dumps(payload).encode()
            assert s.post("/webhooks/adobe-commerce", body, {
                "x-adobe-commerce-webhook-signature": rsa_sign(s.commerce_key, base64.b64encode(body))}) == 200
        assert s.post("/webhooks/adobe-io", io_body, {
            "x-adobe-digital-signature-1": rsa_sign(k1, io_body), "x-adobe-digital-signature-2": rsa_sign(k2, io_body),
            "x-adobe-public-key1-path": p1, "x-adobe-public-key2-path": p2, "x-adobe-event-id": event["id"]}) == 200
    booked = [mageos_order, plugin_order, observer_order, io_order]
    poll(lambda: all(s.receipts(o) == 1 for o in booked), 90, "every source's order to be booked")
    # The follower's next passes (it saw the I/O order too) book nothing more.
    mine = leader(s)
    before = s.worker_metric(mine, "magqb_follow_last_pass_timestamp_seconds")
    poll(lambda: s.worker_metric(mine, "magqb_follow_last_pass_timestamp_seconds") > before + INTERVAL, 30,
         "two more passes")
    assert [s.receipts(o) for o in booked] == [1, 1, 1, 1]
    assert [s.count("Invoice", f"DocNumber = 'MAG-{o['increment_id']}'") for o in booked] == [0, 0, 0, 0]


def test_follow_once_runs_one_pass_from_the_cursor(follow_stack: FollowStack) -> None:
    s = follow_stack
    out = magqb(s, "follow", "--once")
    assert out.returncode == 0, out.stderr
    assert "follow: 0 published (nothing new)" in out.stdout, out.stdout
    wrong = magqb(s, "follow", "--once", env={"MAGENTO_CONSUMER_SECRET": "x" * 32})
    assert wrong.returncode == 2 and "refused the OAuth 1.0a signature (HTTP 401)" in wrong.stderr, wrong.stderr
