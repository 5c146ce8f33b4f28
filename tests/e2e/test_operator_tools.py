"""The operator's tools on the real broker and processes: import, replay, status, reconcile, connect, token.

Each test uses order ids and dates of its own on the session's stack (one worker, one sandbox)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import make_order, read_topics
from tests.e2e.harness import MAGQB, REPO, Stack, free_port, http, magqb, poll

pytestmark = pytest.mark.kafka
# An integration's four values (System > Extensions > Integrations): the stand-in checks OAuth 1.0a signatures.
MAGENTO_OAUTH = {"MAGENTO_CONSUMER_KEY": "k" * 32, "MAGENTO_CONSUMER_SECRET": "c" * 32,
                 "MAGENTO_ACCESS_TOKEN": "a" * 32, "MAGENTO_ACCESS_TOKEN_SECRET": "s" * 32}


def receipts(stack: Stack, doc_number: str) -> list[dict[str, Any]]:
    return list(stack.query(f"SELECT * FROM SalesReceipt WHERE DocNumber = '{doc_number}'").get("SalesReceipt", []))


def booked(stack: Stack, orders: list[dict[str, Any]]) -> bool:
    return all(len(receipts(stack, f"MAG-{o['increment_id']}")) == 1 for o in orders)


# ---------------------------------------------------------------- import


@pytest.fixture
def standin(stack: Stack) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        port = free_port()
        log = open(stack.logs / f"standin-{port}.log", "ab")
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.magento_standin", "--port", str(port),
                                       "--oauth", ":".join(MAGENTO_OAUTH.values()), *args], cwd=REPO, stdout=log,
                                      stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        poll(lambda: http("GET", f"{url}/_standin/stats")[0] == 200, 30, "the Magento stand-in")
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def imported_keys(stack: Stack, first: int, count: int, since_ms: int) -> Counter[str]:
    keys: Counter[str] = Counter()
    for r in read_topics(stack.env["KAFKA_BOOTSTRAP_SERVERS"], ["magento.orders"]):
        key = r.key.decode() if r.key else ""
        if (r.timestamp >= since_ms and key.isdigit() and first <= int(key) < first + count
                and json.loads(r.value)["source"] == "import"):
            keys[key] += 1
    return keys


def test_import_pages_through_magento_resumes_after_an_interruption_and_books_each_order_once(
        stack: Stack, standin: Any) -> None:
    first, count, bad = 820000, 60, 820011
    t0 = int(time.time() * 1000)
    common = ["--orders", str(count), "--first-entity-id", str(first), "--start", "2032-05-01T08:00:00",
              "--bad", str(bad), "--throttle-every", "4"]
    # The integration token is revoked after 5 requests (3 pages and a 429 among them): the import stops.
    url = standin(*common, "--deny-after", "5")
    env = {"MAGENTO_BASE_URL": f"{url}/rest/V1", **MAGENTO_OAUTH}
    args = ["import", "--since", "2032-05-01", "--until", "2032-05-03", "--page-size", "10"]
    cut = magqb(stack, *args, env=env)
    assert cut.returncode == 2 and "refused the OAuth 1.0a signature (HTTP 401)" in cut.stderr, cut.stderr
    first_run = imported_keys(stack, first, count, t0)
    assert 0 < sum(first_run.values()) < count - 1

    # The token works again: the same command resumes where it stopped.
    url = standin(*common)
    env["MAGENTO_BASE_URL"] = f"{url}/rest/V1"
    done = magqb(stack, *args, env=env)
    assert done.returncode == 1, done.stderr  # one order of the range could not be imported: said, exit 1
    assert "resuming an interrupted import after entity_id" in done.stderr
    # the summary counts the whole import, both runs
    assert (f"{count} order(s) in Magento's range, {count - 1} published, 0 skipped "
            f"(repeated by Magento), 1 failed") in done.stdout, done.stdout
    assert f"failed: {bad} 000{bad}: not a Magento order: items" in done.stdout
    keys = imported_keys(stack, first, count, t0)
    assert len(keys) == count - 1 and set(keys.values()) == {1}  # every order published exactly once
    orders = [{"increment_id": f"{first + n:09d}"} for n in range(count) if first + n != bad]
    poll(lambda: booked(stack, orders), 120, "the imported orders to be booked")

    # Importing the same range again publishes again, and books nothing twice.
    duplicates = stack.metric("magqb_orders_processed_total", outcome="duplicate")
    again = magqb(stack, *args, env=env)
    assert again.returncode == 1 and f"{count - 1} published" in again.stdout, again.stdout
    assert set(imported_keys(stack, first, count, t0).values()) == {2}
    poll(lambda: stack.metric("magqb_orders_processed_total", outcome="duplicate") >= duplicates + count - 1, 60,
         "the worker to see the second import as duplicates")
    assert booked(stack, orders)
    assert stack.count("SalesReceipt", f"DocNumber IN ('MAG-{first + 1:09d}', 'MAG-{first + 59:09d}')") == 2


def test_import_dry_run_filters_by_status_and_store_and_publishes_nothing(stack: Stack, standin: Any) -> None:
    first, count = 860000, 70
    t0 = int(time.time() * 1000)
    url = standin("--orders", str(count), "--first-entity-id", str(first), "--start", "2032-06-01T08:00:00",
                  "--throttle-every", "3")
    env = {"MAGENTO_BASE_URL": f"{url}/rest/V1", **MAGENTO_OAUTH}
    out = magqb(stack, "import", "--since", "2032-06-01", "--status", "complete", "--store-id", "1", "--dry-run",
                "--page-size", "10", env=env)
    assert out.returncode == 0, out.stderr
    # the stand-in's orders: status "complete" unless n % 5 == 0, store 1 unless n % 7 == 0
    wanted = sum(1 for n in range(count) if n % 5 and n % 7)
    assert f"{wanted} order(s) in Magento's range, {wanted} would publish, 0 skipped" in out.stdout, out.stdout
    assert imported_keys(stack, first, count, t0) == {}


def test_import_without_magento_settings_says_what_to_set(stack: Stack) -> None:
    out = magqb(stack, "import", "--since", "2032-01-01",
                env={"MAGENTO_BASE_URL": "http://127.0.0.1:9/rest/V1", "MAGENTO_ACCESS_TOKEN": ""})
    assert out.returncode == 2 and "no Magento credentials: set MAGENTO_CONSUMER_KEY" in out.stderr, out.stderr


# ---------------------------------------------------------------- replay and status


def test_replay_costs_no_quickbooks_call_for_booked_orders_and_books_a_parked_one_once(stack: Stack) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 2))
    orders = [make_order(830000 + n, f"replay{n}@example.com", [("RPL-1", 1, "10.00")]) for n in range(5)]
    poison = orders[2]
    # Someone booked an Invoice by hand under the DocNumber the poison order needs: it is parked.
    stray = stack.book_by_hand(f"MAG-{poison['increment_id']}", "Replay Manual Booker")
    for o in orders:
        assert stack.post_order(o)[0] == 202
    others = [o for o in orders if o is not poison]
    poll(lambda: booked(stack, others), 60, "the four good orders")
    ids = [str(o["entity_id"]) for o in orders]
    poll(lambda: json.loads(magqb(stack, "status", ids[2], "--json").stdout or "{}").get("state") == "failed", 60,
         "the poison order to be parked")

    dry = magqb(stack, "replay", "--from-time", since, *sum((["--order", i] for i in ids), []), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = {line.split()[0]: line for line in dry.stdout.splitlines() if line.split() and line.split()[0] in ids}
    assert all("already booked" in lines[i] for i in ids if i != ids[2])
    assert f"would book      SalesReceipt DocNumber=MAG-{poison['increment_id']} total=15.00" in lines[ids[2]]
    assert "dry run: 5 order(s): 4 already booked, 1 would book" in dry.stdout

    # The stray Invoice is voided away; a replay of all five books the parked one, once, and calls
    # QuickBooks for nothing else.
    assert stack.api("POST", "invoice", {"Id": stray["Id"], "SyncToken": "0"}, operation="delete")[0] == 200
    def worker_calls() -> Counter[str]:  # the test's own reads are GETs; the worker's queries are POSTs
        return Counter({k: v for k, v in stack.sandbox_stats()["requests"].items() if not k.startswith("GET ")})

    before = worker_calls()
    run = magqb(stack, "replay", "--from-time", since, *sum((["--order", i] for i in ids), []))
    assert run.returncode == 0, run.stderr
    assert "1 order(s) replayed with 0 credit memo(s) and invoice(s), 4 already booked (nothing to do, not sent)" \
        in run.stdout, run.stdout
    assert "handled every replayed event" in run.stderr
    poll(lambda: booked(stack, orders), 60, "the parked order, replayed")
    # one DocNumber lookup (the replay may follow an attempt that landed) and one create: 2 calls in all
    assert +(worker_calls() - before) == Counter({"POST /v3/query 200": 1, "POST /v3/salesreceipt 200": 1})

    story = json.loads(magqb(stack, "status", poison["increment_id"], "--json").stdout)
    assert story["state"] == "synced" and story["document"]["DocNumber"] == f"MAG-{poison['increment_id']}"
    assert story["document"]["TotalAmt"] == "15.00"
    sources = [e["detail"].split()[0] for e in story["events"]]
    assert sources == ["magento-webhook", "replay"]
    assert [d["reason"] for d in story["dead_letters"]] == ["docnumber_taken"]
    assert story["dead_letters"][0]["fault"]["code"] == "6140"


def test_replay_feeds_an_orders_newest_event_so_a_cancelled_order_is_not_booked(stack: Stack) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 2))
    order = make_order(831000, "replaycancel@example.com", [("RPL-2", 1, "10.00")])
    stray = stack.book_by_hand(f"MAG-{order['increment_id']}", "Replay Cancel Booker")
    assert stack.post_order(order)[0] == 202  # parked: its DocNumber is taken
    poll(lambda: json.loads(magqb(stack, "status", "831000", "--json").stdout or "{}").get("state") == "failed", 60,
         "the order to be parked")
    assert stack.post_order({**order, "state": "canceled", "status": "canceled"})[0] == 202  # then cancelled
    poll(lambda: json.loads(magqb(stack, "status", "831000", "--json").stdout or "{}").get("state") == "skipped", 60,
         "the cancellation")
    assert stack.api("POST", "invoice", {"Id": stray["Id"], "SyncToken": "0"}, operation="delete")[0] == 200
    dry = magqb(stack, "replay", "--from-time", since, "--order", "831000", "--dry-run")
    assert "would skip" in dry.stdout and "dry run: 1 order(s): 1 would skip (cancelled)" in dry.stdout, dry.stdout
    run = magqb(stack, "replay", "--from-time", since, "--order", "831000")
    assert run.returncode == 0 and "1 order(s) replayed" in run.stdout and "1 older event(s)" in run.stdout, run.stdout
    story = json.loads(magqb(stack, "status", "831000", "--json").stdout)
    assert story["state"] == "skipped" and story["document"] is None
    assert [e["detail"].split()[0] for e in story["events"]] == ["magento-webhook", "magento-webhook", "replay"]
    assert receipts(stack, f"MAG-{order['increment_id']}") == []


def test_status_tells_one_orders_story_quickly_and_says_when_there_is_none(stack: Stack) -> None:
    order = make_order(840001, "status@example.com", [("STS-1", 2, "7.50")])
    assert stack.post_order(order)[0] == 202
    poll(lambda: booked(stack, [order]), 60, "the order")
    started = time.monotonic()
    out = magqb(stack, "status", "840001")
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"order {order['increment_id']} (entity id 840001): synced")
    assert "QuickBooks: SalesReceipt Id=" in out.stdout and "TotalAmt=20.00" in out.stdout
    assert "order event magento-webhook event" in out.stdout and "[magento.orders/" in out.stdout
    assert "create_document request mq-doc-" in out.stdout
    assert elapsed < 5.0  # a process start included; the lookup itself is a fraction of it
    missing = magqb(stack, "status", "999999999")
    assert missing.returncode == 1 and "no order '999999999' in the log" in missing.stderr


# ---------------------------------------------------------------- reconcile


def test_reconcile_finds_what_differs_fixes_the_missing_and_then_the_books_match(stack: Stack) -> None:
    day = "2033-02-03"
    orders = [make_order(850000 + n, f"recon{n}@example.com", [("RCN-1", 1, "20.00")],
                         created_at=f"{day} 1{n}:00:00") for n in range(4)]
    for o in orders:
        assert stack.post_order(o)[0] == 202
    poll(lambda: booked(stack, orders), 60, "the orders")
    args = ["reconcile", "--since", day, "--until", "2033-02-04"]
    clean = magqb(stack, *args)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "4 order(s) in the log" in clean.stdout and "the books match" in clean.stdout

    # A booked receipt deleted in QuickBooks, and a receipt with our prefix that no order explains.
    gone = receipts(stack, f"MAG-{orders[1]['increment_id']}")[0]
    assert stack.api("POST", "salesreceipt", {"Id": gone["Id"], "SyncToken": gone["SyncToken"]},
                     operation="delete")[0] == 200
    status, stray = stack.api("POST", "salesreceipt", {
        "Line": [{"Amount": 5, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}],
        "CustomerRef": {"value": "1"}, "DocNumber": "MAG-STRAY-1", "TxnDate": day})
    assert status == 200
    report = magqb(stack, *args, "--format", "json")
    assert report.returncode == 1
    found = json.loads(report.stdout)
    kinds = sorted((f["kind"], f["order_id"] or f["doc_number"]) for f in found["findings"])
    assert kinds == [("missing", str(orders[1]["entity_id"])), ("unknown", "MAG-STRAY-1")]
    assert found["summary"]["qbo_reads"] == 4  # one page each of SalesReceipts, Invoices, RefundReceipts, CreditMemos

    fixed = magqb(stack, *args, "--fix", "--format", "csv")
    assert fixed.returncode == 1 and "re-drove 1 missing order(s)" in fixed.stderr, fixed.stderr
    poll(lambda: booked(stack, orders), 60, "the missing receipt, booked again")
    assert stack.api("POST", "salesreceipt", {"Id": stray["SalesReceipt"]["Id"], "SyncToken": "0"},
                     operation="delete")[0] == 200
    after = magqb(stack, *args)
    assert after.returncode == 0, after.stdout + after.stderr
    # and fixing twice creates nothing: a second --fix finds nothing missing
    assert magqb(stack, *args, "--fix").returncode == 0
    assert booked(stack, orders)


# ---------------------------------------------------------------- connect and tokens


def test_connect_runs_the_authorization_code_flow_and_token_commands_never_show_the_token(stack: Stack) -> None:
    port = free_port()
    env = {"QUICKBOOKS_AUTHORIZE_URL": f"{stack.sandbox_url}/connect/oauth2",
           "QUICKBOOKS_REDIRECT_URI": f"http://127.0.0.1:{port}/callback",
           "MAGQB_DATA_DIR": str(stack.logs / "connect-data")}
    proc = subprocess.Popen([MAGQB, "connect"], env={**stack.env, **env}, cwd=stack.logs, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = ""
    for _ in range(10):
        line = proc.stdout.readline()
        if "/connect/oauth2?" in line:
            url = line.strip()
            break
    assert "scope=com.intuit.quickbooks.accounting" in url and "state=" in url and "response_type=code" in url
    # the browser: Intuit's consent page answers with a redirect to our callback
    status, body = poll(lambda: (lambda r: r if r[0] == 200 else None)(http("GET", url)), 20, "the callback")
    assert b"you can close this window" in body
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"connected: realm {stack.env['QUICKBOOKS_REALM_ID']}" in out
    tokens = json.loads(http("GET", f"{stack.sandbox_url}/_sandbox/tokens")[1])["refresh_tokens"]
    shown = magqb(stack, "token", "show", env=env)
    assert shown.returncode == 0 and "expires (hard):" in shown.stdout and "in 1825.0 days" in shown.stdout
    assert not any(t in shown.stdout + out + err for t in tokens)

    stored = magqb(stack, "token", "set", stdin="RT1-pasted-by-hand-0123456789\n", env=env)
    assert stored.returncode == 0 and "RT1-pasted" not in stored.stdout + stored.stderr
    assert "expires (rolling):   unknown" in magqb(stack, "token", "show", env=env).stdout
    none = magqb(stack, "token", "show", "--realm", "123", env=env)
    assert none.returncode == 1 and "magqb connect" in none.stderr
