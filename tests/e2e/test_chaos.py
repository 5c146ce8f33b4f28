"""The core promise under fire, at CI scale: bench/chaos.py runs the same scenarios larger.

Each scenario has its own broker, sandbox, ingress and workers (tests/e2e/chaos.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.tools.dead_letters import read_log
from tests.conftest import read_topics
from tests.e2e.chaos import ChaosPlan, ChaosRun, Report, exact
from tests.e2e.harness import MAGQB, http, poll

pytestmark = pytest.mark.kafka


@pytest.fixture
def chaos(tmp_path: Path, kafka_bootstrap: str) -> Iterator[callable]:  # type: ignore[valid-type]
    runs: list[ChaosRun] = []

    def make(**plan: object) -> ChaosRun:
        run = ChaosRun(ChaosPlan(**plan), tmp_path / f"run{len(runs)}")  # type: ignore[arg-type]
        runs.append(run)
        run.start()
        return run

    yield make
    for run in runs:
        run.stop()
        run.cleanup()


def book_all(run: ChaosRun, timeout: float, after_post: Callable[[int], None] = lambda n: None) -> Report:
    """Post every order as Magento would, wait for the bookings, print and return the figures."""
    started = time.monotonic()
    for n, order in enumerate(run.make_orders()):
        run.post(order)
        after_post(n)
    run.wait_booked(timeout=timeout)
    report = run.report(time.monotonic() - started)
    print("\n".join(report.lines()))
    return report


def test_faults_and_expiring_tokens_book_every_order_exactly_once(chaos) -> None:
    """10 % 5xx, 5 % spurious 429, 2 % commit-then-fail, access tokens living 20 s — and QBO forgetting every
    requestid, so the lookups after ambiguous failures alone keep each document single."""
    report = book_all(chaos(orders=30, customers=10, skus=8, requestid_forget_rate=1.0), timeout=240)
    exact(report)
    assert sum(report.injected.values()) > 0  # the faults really happened


def test_worker_killed_three_times_mid_run(chaos) -> None:
    """SIGKILL at random points, three times, under the same faults: each restart must pick up every record
    its predecessor fetched but never finished (see app/adapters/faust_consumer.py for how that once failed)."""
    run = chaos(orders=30, customers=10, skus=8, seed=11, requestid_forget_rate=1.0)
    rng = random.Random(3)

    def kill(n: int) -> None:
        if n in (5, 15, 25):
            time.sleep(rng.uniform(0.2, 1.5))  # let it get into the middle of something
            run.kill_worker("worker0")
            run.start_worker("worker0")

    exact(book_all(run, timeout=300, after_post=kill))


def test_two_workers_one_killed_the_other_takes_over(chaos) -> None:
    """worker1 is SIGKILLed mid-run; worker0 takes its partitions over once the session times out."""
    run = chaos(orders=30, customers=10, skus=8, workers=2, seed=21)
    exact(book_all(run, timeout=300, after_post=lambda n: run.kill_worker("worker1") if n == 12 else None))


def test_broker_down_for_20_seconds(chaos) -> None:
    """While Kafka is down the ingress answers 503 (Magento re-sends); every order accepted before
    or after is booked exactly once."""
    run = chaos(orders=20, customers=6, skus=5, fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0,
                token_ttl=3600, seed=51)
    orders = run.make_orders()
    for order in orders[:10]:
        run.post(order)
    run.stop_broker()
    started = time.monotonic()
    status, _ = run.stack.post_order(orders[10])
    assert status == 503
    while time.monotonic() - started < 20:  # keep Magento's retries coming while the broker is down
        assert run.stack.post_order(orders[10])[0] == 503
        time.sleep(1.0)  # pacing the outage, not waiting for a result
    run.start_broker()
    for order in orders[10:]:
        run.post(order, timeout=180)
    run.wait_booked(timeout=240)
    exact(run.report(time.monotonic() - started))


def test_real_quota_keeps_429s_under_one_percent(chaos) -> None:
    run = chaos(orders=30, customers=10, skus=8, fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0,
                token_ttl=3600, quota_per_minute=500, quota_per_second=10, throttle_backoff=60.0, seed=31)
    report = book_all(run, timeout=240)
    exact(report)
    assert report.throttled <= 0.01 * report.qbo_requests


def test_poison_order_is_dead_lettered_then_booked_once_after_the_fix(chaos) -> None:
    """Someone booked an Invoice by hand under the DocNumber an order needs: QBO refuses (6140) and
    no SalesReceipt holds the number, so the command is dead-lettered; the other orders flow on.
    The operator removes the stray Invoice and runs `magqb dlq retry --all`: booked once."""
    run = chaos(orders=10, customers=5, skus=4, fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0,
                token_ttl=3600, seed=41)
    stack = run.stack
    orders = run.make_orders()
    poison = orders[3]
    stray = stack.book_by_hand(f"MAG-{poison['increment_id']}", "Manual Booker")
    for order in orders:
        run.post(order)

    def dead_letters() -> list:
        return asyncio.run(read_log(stack.env["KAFKA_BOOTSTRAP_SERVERS"])).open()

    [letter] = poll(dead_letters, 120, "the poison order's dead letter")
    assert (letter.order_id, letter.command_type, letter.reason) == (str(poison["entity_id"]), "create_document",
                                                                       "docnumber_taken")
    assert letter.order_event is not None and letter.order_event["order"]["entity_id"] == poison["entity_id"]
    assert letter.attempts[-1].fault is not None and letter.attempts[-1].fault["code"] == "6140"
    poll(lambda: run.created("SalesReceipt") >= 9, 120, "the 9 other orders")

    status, _ = stack.api("POST", "invoice", {"Id": stray["Id"], "SyncToken": "0"}, operation="delete")
    assert status == 200
    listed = subprocess.run([MAGQB, "dlq", "list"], env=stack.env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and letter.id in listed.stdout, listed.stdout + listed.stderr
    retried = subprocess.run([MAGQB, "dlq", "retry", "--all"], env=stack.env, capture_output=True, text=True,
                             timeout=60)
    assert retried.returncode == 0, retried.stderr
    poll(lambda: run.created("SalesReceipt") >= 10, 120, "the poison order, after the fix")
    report = run.report(1.0)
    assert (report.documents, report.doc_numbers_twice, report.wrong_totals) == (10, 0, 0)
    assert dead_letters() == []


def test_worker_stopped_with_sigterm_three_times_mid_run(chaos) -> None:
    """A deploy: SIGTERM (what systemd, Kubernetes, docker and Ctrl-C send) three times mid-run, each time
    restarted. QBO answers in 250 ms so batches are in flight, and 8 % of calls fail so a retry rung is
    holding records when the stop comes. Only finished work may be acknowledged."""
    run = chaos(orders=30, customers=10, skus=8, seed=13, latency_ms=250, fail_rate=0.08, throttle_rate=0.0,
                commit_then_fail_rate=0.02, token_ttl=3600, retry_delays="2s,4s,8s,16s,32s")
    rng = random.Random(5)
    stops: list[float] = []

    def term(n: int) -> None:
        if n in (6, 14, 22):
            time.sleep(rng.uniform(0.3, 1.5))
            stops.append(run.term_worker("worker0"))
            run.start_worker("worker0")

    exact(book_all(run, timeout=300, after_post=term))
    assert len(stops) == 3


def test_a_stop_is_prompt_even_with_quickbooks_hanging(chaos) -> None:
    """QBO stops answering (every call hangs for 5 minutes) with commands in flight: SIGTERM still ends the
    worker within MAGQB_SESSION_TIMEOUT (10 s) + 10 s, and what it held is booked once after a restart."""
    run = chaos(orders=8, customers=3, skus=3, fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0,
                token_ttl=3600, seed=61)
    stack = run.stack
    orders = run.make_orders()
    for order in orders[:4]:
        run.post(order)
    poll(lambda: run.created("SalesReceipt") >= 4, 120, "the first 4 orders")
    status, _ = http("PUT", f"{stack.sandbox_url}/_sandbox/faults",
                     json.dumps({"hang_rate": 1.0, "hang_seconds": 300}).encode(), {"Content-Type": "application/json"})
    assert status == 200
    for order in orders[4:]:
        run.post(order)
    poll(lambda: stack.sandbox_stats()["injected"].get("hang", 0) >= 1, 60, "a QBO call hanging")
    seconds = run.term_worker("worker0", timeout=60)
    print(f"worker exited {seconds:.1f}s after SIGTERM with QBO hanging")
    assert seconds <= 10 + 10
    http("PUT", f"{stack.sandbox_url}/_sandbox/faults", json.dumps({"hang_rate": 0.0}).encode(),
         {"Content-Type": "application/json"})
    run.start_worker("worker0")
    run.wait_booked(timeout=180)
    exact(run.report(1.0))


def test_rolling_restart_of_two_workers_under_load(chaos) -> None:
    """A rolling deploy: SIGTERM worker0 and start it again, then the same for worker1, while orders keep
    coming; partitions move between them at every step."""
    run = chaos(orders=30, customers=10, skus=8, workers=2, seed=17, latency_ms=150, fail_rate=0.05,
                throttle_rate=0.0, commit_then_fail_rate=0.02, token_ttl=3600, retry_delays="2s,4s,8s,16s,32s")

    def roll(n: int) -> None:
        if n == 8:
            run.term_worker("worker0")
            run.start_worker("worker0")
        elif n == 18:
            run.term_worker("worker1")
            run.start_worker("worker1")

    exact(book_all(run, timeout=300, after_post=roll))


def test_no_secret_reaches_logs_records_or_metrics(chaos) -> None:
    """Under faults, with every access token expired mid-run (QBO's 401 echoes the token it refused) and a
    parked order: no webhook secret, client secret, refresh or access token in any log line, in any record
    (key, value or header) of the command, result, retry and dead-letter topics, or on /metrics. Local
    state holding the refresh token is private."""
    import os
    import stat

    from tests.e2e.chaos import topic_bytes

    run = chaos(orders=16, customers=5, skus=5, seed=71, fail_rate=0.15, throttle_rate=0.0, commit_then_fail_rate=0.0,
                token_ttl=3600, retry_delays="1s,2s,4s,8s,16s")
    stack = run.stack
    orders = run.make_orders()
    for order in orders[:8]:
        run.post(order)
    poll(lambda: run.created("SalesReceipt") >= 4, 120, "the first bookings (the worker holds a token now)")
    assert http("POST", f"{stack.sandbox_url}/_sandbox/expire-tokens")[0] == 200
    for order in orders[8:]:
        run.post(order)
    parked = {**orders[0], "entity_id": orders[0]["entity_id"] + 10**6, "increment_id": "P" + orders[0]["increment_id"],
              "grand_total": "1.00"}
    run.post(parked)
    run.wait_booked(timeout=240)
    poll(lambda: asyncio.run(read_log(stack.env["KAFKA_BOOTSTRAP_SERVERS"])).letters, 60, "the parked order's letter")
    issued = json.loads(http("GET", f"{stack.sandbox_url}/_sandbox/tokens")[1])
    secrets = {stack.env["MAGENTO_WEBHOOK_SECRET"], stack.env["QUICKBOOKS_CLIENT_SECRET"],
               stack.env["QUICKBOOKS_REFRESH_TOKEN"], *issued["refresh_tokens"], *issued["access_tokens"]}
    assert len(issued["access_tokens"]) >= 2  # the expiry forced a refresh: two access tokens to look for
    worker_log = (stack.logs / "worker0.log").read_text()
    assert "QBO answered 401" in worker_log  # the 401 whose text echoes the token happened

    haystacks = {f"log {p.name}": p.read_bytes() for p in stack.logs.glob("*.log")}
    topic_names = ["qbo.commands", "qbo.results", "qbo.dead-letter",
                   *(f"qbo.retry.{d}" for d in run.plan.retry_delays.split(","))]
    for n, record in enumerate(topic_bytes(stack.env["KAFKA_BOOTSTRAP_SERVERS"], topic_names)):
        haystacks[f"record {n}"] = record
    haystacks["worker /metrics"] = http("GET", f"{stack.worker_url}/metrics")[1]
    haystacks["ingress /metrics"] = http("GET", f"{stack.ingress_url}/metrics")[1]
    assert len(haystacks) > 40
    leaks = [(where, secret[:12]) for where, data in haystacks.items() for secret in secrets
             if secret.encode() in data or secret[:40].encode() in data]
    assert leaks == []

    data_dir = run.workdir / "worker0"
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    for path in data_dir.rglob("*"):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0, f"{path} is mode {mode:o}"


def test_a_blocked_realm_holds_every_order_until_a_good_token_arrives(chaos) -> None:
    """QBO refuses the worker's refresh token (revoked, expired): dispatch stops for the realm, nothing is
    acknowledged, the refused token is offered once per 30 s — and once an operator stores a good token,
    every order held meanwhile is booked exactly once."""
    import sqlite3

    run = chaos(orders=6, customers=3, skus=3, fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0,
                token_ttl=3600, seed=81)
    stack = run.stack
    store = run.workdir / "worker0" / "tokens.sqlite3"
    run.term_worker("worker0")
    with sqlite3.connect(store) as db:  # the stored token is revoked (as if the company disconnected the app)
        db.execute("CREATE TABLE IF NOT EXISTS refresh_tokens (realm_id TEXT PRIMARY KEY, refresh_token TEXT NOT NULL, "
                   "updated_at TEXT NOT NULL)")
        db.execute("INSERT INTO refresh_tokens VALUES (?, 'revoked-by-intuit', '2026-01-01') ON CONFLICT(realm_id) "
                   "DO UPDATE SET refresh_token = excluded.refresh_token", (stack.env["QUICKBOOKS_REALM_ID"],))
    run.start_worker("worker0")
    poll(lambda: "worker ready" in stack.log_tail("worker0", 400), 120, "the restarted worker")
    for order in run.make_orders():
        run.post(order)
    realm = stack.env["QUICKBOOKS_REALM_ID"]
    poll(lambda: stack.metric("magqb_qbo_realm_blocked", realm=realm) == 1, 60, "the realm to be blocked")
    time.sleep(3)  # not a wait for something: a quiet period in which nothing may be booked
    assert run.created("SalesReceipt") == 0
    refused = stack.sandbox_stats()["requests"].get("POST /oauth2/v1/tokens/bearer 400", 0)
    assert 1 <= refused <= 2  # one probe per 30 s however many commands wait
    good = json.loads(http("GET", f"{stack.sandbox_url}/_sandbox/tokens")[1])["refresh_tokens"][0]
    with sqlite3.connect(store) as db:  # the operator stores a new token (magqb connect, when it exists)
        db.execute("UPDATE refresh_tokens SET refresh_token = ?", (good,))
    run.wait_booked(timeout=120)
    exact(run.report(1.0))
    assert stack.metric("magqb_qbo_realm_blocked", realm=realm) == 0


async def _delete_unhandled(bootstrap: str, topic: str) -> int:
    """What a finite retention did to a realm blocked longer than it: every record of `topic` deleted."""
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    from app.adapters import kafka_io

    c = kafka_io.consumer(bootstrap, "magqb-test")
    await c.start()
    try:
        spans = await kafka_io.whole(c, topic)
    finally:
        await kafka_io.close(c)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({s.tp: RecordsToDelete(s.end) for s in spans if s.size})
    finally:
        await admin.close()
    return sum(s.size for s in spans)


async def _retention(bootstrap: str, topic: str) -> str:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": ""})])
    finally:
        await admin.close()
    return str(resp.resources[0][4][0][1])


def test_commands_lost_in_a_long_block_leave_no_partition_uncommittable_and_stuck_orders_are_sent_on(chaos) -> None:
    """A realm blocked longer than Kafka kept its commands (a refused token before a holiday, with the
    14-day retention of before): the worker used to reset to the log start and never commit that partition
    again, and the orders whose commands were deleted waited forever. Now commands are kept until handled;
    and when records are gone anyway the worker commits on (and counts them), `magqb_orders_stuck` shows
    the orders nothing will move, and `magqb replay --stuck` books each exactly once."""
    import sqlite3

    from app.adapters import kafka_io

    run = chaos(orders=4, customers=2, skus=2, fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0,
                token_ttl=3600, seed=83, extra_env={"MAGQB_STUCK_AFTER_MINUTES": "0.1"})
    stack = run.stack
    bootstrap, group, realm = (stack.env[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "MAGQB_APP_ID",
                                                      "QUICKBOOKS_REALM_ID"))
    assert asyncio.run(_retention(bootstrap, "qbo.commands")) == "-1"
    assert asyncio.run(_retention(bootstrap, "qbo.retry.1s")) == "-1"
    orders = run.make_orders()
    run.post(orders[0])
    poll(lambda: run.created("SalesReceipt") == 1, 60, "the first order")
    poll(lambda: sum(asyncio.run(kafka_io.committed(bootstrap, group, "qbo.commands")).values()) > 0, 60,
         "the commands partition to be committed once")

    store = run.workdir / "worker0" / "tokens.sqlite3"
    run.term_worker("worker0")
    with sqlite3.connect(store) as db:  # Intuit refuses the stored token: the realm is blocked
        db.execute("UPDATE refresh_tokens SET refresh_token = 'revoked-by-intuit'")
    run.start_worker("worker0")
    poll(lambda: "worker ready" in stack.log_tail("worker0", 400), 120, "the restarted worker")
    for order in orders[1:3]:
        run.post(order)
    poll(lambda: stack.metric("magqb_qbo_realm_blocked", realm=realm) == 1, 60, "the realm to be blocked")
    before = sum(asyncio.run(kafka_io.committed(bootstrap, group, "qbo.commands")).values())
    run.term_worker("worker0")
    deleted = asyncio.run(_delete_unhandled(bootstrap, "qbo.commands"))
    assert deleted > before  # the blocked orders' commands, never handled, are gone

    good = json.loads(http("GET", f"{stack.sandbox_url}/_sandbox/tokens")[1])["refresh_tokens"][0]
    with sqlite3.connect(store) as db:  # the operator reconnects the company
        db.execute("UPDATE refresh_tokens SET refresh_token = ?", (good,))
    run.start_worker("worker0")
    poll(lambda: "worker ready" in stack.log_tail("worker0", 400), 120, "the worker after the holiday")
    run.post(orders[3])
    poll(lambda: run.created("SalesReceipt") == 2, 60, "an order placed after the block")
    # The partition commits again: past every command written since, the new order's included.
    ends = asyncio.run(_ends(bootstrap, "qbo.commands"))
    poll(lambda: asyncio.run(kafka_io.committed(bootstrap, group, "qbo.commands")) == ends, 60,
         lambda: f"qbo.commands committed to {ends}")
    lost = deleted - before
    assert stack.metric("magqb_records_expired_unhandled_total", topic="qbo.commands") == lost

    poll(lambda: stack.metric("magqb_orders_stuck") == 2, 60, "the two orders whose commands were deleted")
    dry = subprocess.run([MAGQB, "replay", "--stuck", "--dry-run"], env=stack.env, capture_output=True, text=True,
                         timeout=120)
    assert dry.returncode == 0 and "dry run: 2 stuck order(s)" in dry.stdout, dry.stdout + dry.stderr
    assert {str(o["entity_id"]) for o in orders[1:3]} == {ln.split()[0] for ln in dry.stdout.splitlines()[:2]}
    out = subprocess.run([MAGQB, "replay", "--stuck"], env=stack.env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "2 stuck order(s) sent on" in out.stdout, out.stdout + out.stderr
    run.wait_booked(timeout=120)
    exact(run.report(1.0))
    poll(lambda: stack.metric("magqb_orders_stuck") == 0, 60, "no order stuck any more")
    again = subprocess.run([MAGQB, "replay", "--stuck"], env=stack.env, capture_output=True, text=True, timeout=120)
    assert "no order is stuck" in again.stdout, again.stdout


async def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    from app.adapters import kafka_io

    c = kafka_io.consumer(bootstrap, "magqb-test")
    await c.start()
    try:
        return {s.tp.partition: s.end for s in await kafka_io.whole(c, topic) if s.end}
    finally:
        await kafka_io.close(c)


# ---------------------------------------------------------------- a three-broker cluster (issue 20)


def test_the_broker_leading_most_order_partitions_killed_mid_run_loses_and_doubles_nothing(chaos) -> None:
    """Three brokers (replication 3, min.insync 2), QuickBooks slow enough that commands are in flight: the broker
    leading most of magento.orders' partitions is SIGKILLed halfway through the orders and restarted a little
    later (bench/chaos.py --scenario broker-kill waits a minute). Every accepted order is booked exactly once and
    none is dead-lettered."""
    run = chaos(brokers=3, orders=24, customers=6, skus=5, fail_rate=0.0, throttle_rate=0.0,
                commit_then_fail_rate=0.0, latency_ms=150, partitions=4, token_ttl=3600, seed=91)
    leaders = run.leaders("magento.orders")
    victim = max(leaders, key=lambda node: leaders[node])

    def after_post(n: int) -> None:
        if n == 11:
            run.node(victim, "kill")
        elif n == 17:
            run.node(victim, "start")

    report = book_all(run, timeout=240, after_post=after_post)
    exact(report)


def test_with_two_of_three_brokers_down_the_ingress_answers_503_and_books_each_order_once_after(chaos) -> None:
    """An event is acknowledged (202) only once min.insync.replicas (2) brokers have it: with two of three down
    the ingress answers 503, Magento re-sends, and once they are back every order is booked exactly once."""
    run = chaos(brokers=3, orders=4, customers=2, skus=2, fail_rate=0.0, throttle_rate=0.0,
                commit_then_fail_rate=0.0, partitions=4, token_ttl=3600, seed=92)
    orders = run.make_orders()
    run.post(orders[0])
    poll(lambda: run.created("SalesReceipt") == 1, 90, "the first order")
    run.node(2, "kill")
    run.node(3, "kill")
    assert run.stack is not None
    status, answer = run.stack.post_order(orders[1])
    assert status == 503 and answer.get("error") == "event store unavailable, retry later", (status, answer)
    run.node(2, "start")
    run.node(3, "start")
    for order in orders[1:]:
        run.post(order)  # as Magento: 503 is re-sent until accepted
    run.wait_booked(timeout=180)
    exact(run.report(1.0))


@pytest.mark.parametrize("trouble", ["broker-hung", "controller-killed", "rolling-restart"])
def test_a_cluster_in_trouble_under_load_books_every_order_once(chaos, trouble: str) -> None:
    """Issue 20's scenarios 2–4 at small size, with commands in flight: one broker SIGSTOPped (hung, not dead) for
    a while, then resumed; the active KRaft controller SIGKILLed and restarted; all three brokers restarted one
    at a time (SIGTERM). Every accepted order is booked exactly once, none dead-lettered."""
    run = chaos(brokers=3, orders=18, customers=5, skus=4, fail_rate=0.0, throttle_rate=0.0,
                commit_then_fail_rate=0.0, latency_ms=150, partitions=4, token_ttl=3600,
                seed={"broker-hung": 93, "controller-killed": 94, "rolling-restart": 95}[trouble])
    hung: list[int] = []
    since: list[float] = []

    def after_post(n: int) -> None:
        if trouble == "broker-hung" and n == 6:
            leaders = run.leaders("magento.orders")
            hung.append(max(leaders, key=lambda node: leaders[node]))
            run.node(hung[0], "pause")
            since.append(time.monotonic())
        elif trouble == "broker-hung" and n == 12:
            # hung past the brokers' session timeout (9 s): its partitions had to move (bench: 30 s)
            poll(lambda: time.monotonic() - since[0] >= 15, 30, "the broker to stay hung 15 s")
            run.node(hung[0], "resume")
        elif trouble == "controller-killed" and n == 6:
            hung.append(run.controller())
            run.node(hung[0], "kill")
        elif trouble == "controller-killed" and n == 12:
            run.node(hung[0], "start")
        elif trouble == "rolling-restart" and n in (4, 9, 14):
            node = (4, 9, 14).index(n) + 1
            run.node(node, "stop")
            run.node(node, "start")

    report = book_all(run, timeout=240, after_post=after_post)
    exact(report)


def log_times(log: str, marker: str) -> list[float]:
    """When each log line with `marker` was written (the log's own clock: this machine's)."""
    from datetime import datetime

    return [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for line in log.splitlines() if marker in line and line[:4].isdigit()]


def test_a_worker_frozen_past_its_session_is_fenced_when_it_wakes(chaos) -> None:
    """Issue 20, scenario 5: two worker hosts (their own data directories), one partition each topic, QuickBooks
    answering in 1.5 s so commands are in flight. The worker holding the partition is SIGSTOPped past the session
    timeout (a GC pause, a hung host): the other takes over. When the zombie wakes it writes no command and no
    result (each names its writer in a header: none of the zombie's is stamped after it woke) — every effect it
    had under way waits for its lease and is abandoned at its revocation, or is cancelled by it. Every order is
    booked once, none dead-lettered."""
    run = chaos(workers=2, partitions=1, orders=12, customers=3, skus=3, fail_rate=0.0, throttle_rate=0.0,
                commit_then_fail_rate=0.0, latency_ms=1500, token_ttl=3600, seed=96,
                extra_env={"MAGQB_SESSION_TIMEOUT": "6"})
    zombie = run.owner()
    other = next(w for w in run.web_ports if w != zombie)
    writer = f"{socket.gethostname()}:{run.stack.procs[zombie].pid}".encode()
    woke: list[float] = []

    def after_post(n: int) -> None:
        if n == 5:
            poll(lambda: run.created("SalesReceipt") >= 2, 90, "the first bookings")
            run.signal_worker(zombie, signal.SIGSTOP)  # QuickBooks is answering a command of it right now
            frozen = time.monotonic()
            poll(lambda: "partition(s) 0 assigned" in run.last_ready(other), 90, f"{other} to take the partition over")
            poll(lambda: time.monotonic() - frozen >= 12, 30, "the zombie to stay frozen 12 s (twice the session)")
            woke.append(time.time())
            run.signal_worker(zombie, signal.SIGCONT)

    report = book_all(run, timeout=240, after_post=after_post)
    exact(report)
    poll(lambda: "local member_id was not recognized" in run.stack.log_tail(zombie, 4000), 60,
         lambda: "the zombie to learn it was left out:\n" + run.stack.log_tail(zombie, 40))
    records = read_topics(run.stack.env["KAFKA_BOOTSTRAP_SERVERS"], ["qbo.commands", "qbo.results"])
    mine = [r for r in records if dict(r.headers).get("magqb-writer") == writer]
    theirs = [r for r in records if dict(r.headers).get("magqb-writer", b"").endswith(
        f":{run.stack.procs[other].pid}".encode())]
    assert mine and theirs  # both wrote before; the header names them
    # Rejoined, it may be handed the partition again and rightly book what is left: the fence is about the
    # time between waking and that assignment.
    reassigned = next((t for t in log_times(run.stack.log_tail(zombie, 4000), "partitions assigned:")
                       if t > woke[0]), float("inf"))
    late = [(r.topic, r.offset) for r in mine if woke[0] * 1000 < r.timestamp < reassigned * 1000]
    assert late == [], f"the zombie wrote after it woke, before it was given a partition again: {late}"
    print(f"zombie: {run.worker_metric(zombie, 'magqb_effects_fenced_total'):.0f} effect(s) fenced")


def test_a_realm_taken_over_by_another_host_refreshes_with_the_token_rotated_on_the_first(chaos) -> None:
    """Issue 20, scenario 6: two worker hosts share MAGQB_TOKEN_KEY; access tokens live 2 s, so the host holding the
    realm rotates its refresh token again and again, and the sandbox refuses a refresh token once rotated (as Intuit
    may). That host is stopped; the other takes the realm and refreshes with the newest token from the topic."""
    from app.adapters.token_topic import new_key

    run = chaos(workers=2, partitions=1, orders=10, customers=3, skus=3, fail_rate=0.0, throttle_rate=0.0,
                commit_then_fail_rate=0.0, latency_ms=300, token_ttl=2, seed=97,
                extra_env={"MAGQB_TOKEN_KEY": new_key()}, sandbox_args=["--refresh-token-grace", "0"])
    first = run.owner()
    rotations: list[int] = []

    def refreshes(status: int) -> int:
        assert run.stack is not None
        return int(run.stack.sandbox_stats()["requests"].get(f"POST /oauth2/v1/tokens/bearer {status}", 0))

    def after_post(n: int) -> None:
        if n < 4:  # one order at a time: the first host's access tokens expire between them
            poll(lambda: run.created("SalesReceipt") >= n + 1, 90, f"order {n} booked")
        if n == 4:
            poll(lambda: run.created("SalesReceipt") >= 5 and refreshes(200) >= 2, 90, "two rotations on the first host")
            rotations.append(refreshes(200))
            run.term_worker(first)  # the second host holds no access token: its first command refreshes

    for n, order in enumerate(run.make_orders()):
        run.post(order)
        after_post(n)
    run.wait_booked(timeout=240)
    assert refreshes(400) == 0, "a refresh token was refused: the second host used a stale one"
    assert refreshes(200) > rotations[0]  # the second host refreshed too, with the rotated token
    # The books are read back with the environment's first token, which the sandbox refuses by now.
    assert http("PUT", f"{run.stack.sandbox_url}/_sandbox/faults", json.dumps({"refresh_token_grace": 86400}).encode(),
                {"Content-Type": "application/json"})[0] == 200
    exact(run.report(1.0))
    second = next(w for w in run.web_ports if w != first)
    assert "refresh tokens on magqb.tokens (sealed" in run.stack.log_tail(second, 4000)
