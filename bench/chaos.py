"""The chaos scenarios of tests/e2e/test_chaos.py at full size, printing their figures.

    .venv/bin/python bench/chaos.py --scenario faults   # 10 % 5xx, 5 % 429, 2 % commit-then-fail, tokens live 20 s
    .venv/bin/python bench/chaos.py --scenario quota    # QBO's real quota: orders/min against the quota-bound maximum
    .venv/bin/python bench/chaos.py --scenario kill     # the worker SIGKILLed three times and restarted
    .venv/bin/python bench/chaos.py --scenario takeover # two workers, one SIGKILLed: the other takes over
    .venv/bin/python bench/chaos.py --scenario broker   # the broker stopped for 20 s a third of the way in
    .venv/bin/python bench/chaos.py --scenario term     # a deploy: SIGTERM three times mid-run, restarted each time
    .venv/bin/python bench/chaos.py --scenario rolling  # two workers restarted one after the other (SIGTERM)
    .venv/bin/python bench/chaos.py --scenario leader-kill  # three brokers; the one leading most of magento.orders
                                                            # SIGKILLed mid-run, restarted a minute later
    .venv/bin/python bench/chaos.py --scenario broker-hung  # three brokers; that one SIGSTOPped 30 s, then resumed
    .venv/bin/python bench/chaos.py --scenario controller-kill  # three brokers; the active KRaft controller killed
    .venv/bin/python bench/chaos.py --scenario broker-rolling   # three brokers restarted one at a time (SIGTERM)
    .venv/bin/python bench/chaos.py --scenario two-down     # two of three brokers SIGKILLed for 30 s: 503s, then on
    .venv/bin/python bench/chaos.py --scenario zombie       # two workers; the realm's holder SIGSTOPped 30 s
    .venv/bin/python bench/chaos.py --scenario token-handover  # two workers sharing MAGQB_TOKEN_KEY, tokens rotating
                                                               # every 10 s, refused once rotated; the realm's
                                                               # holder stopped halfway

Scenarios 1-4 and two-down run with QuickBooks answering in 200 ms (commands in flight), the worker ones too.

Each run starts its own broker, sandbox, ingress and worker(s). Nothing is asserted:
the figures are printed (and written as JSON with --json PATH).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.adapters.token_topic import new_key  # noqa: E402
from tests.e2e.chaos import ChaosPlan, ChaosRun, dump  # noqa: E402
from tests.e2e.harness import http  # noqa: E402

QUOTA_PER_MINUTE = 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("faults", "quota", "kill", "takeover", "broker", "term", "rolling",
                                           "leader-kill", *CLUSTER, *HOSTS),
                    default="faults")
    ap.add_argument("--orders", type=int, default=500)
    ap.add_argument("--customers", type=int, default=100)
    ap.add_argument("--skus", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every order to be booked")
    ap.add_argument("--requestid-forget-rate", type=float, default=0.0,
                    help="share of repeated requestids the sandbox answers as new (QBO not honouring them)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    plan = ChaosPlan(orders=args.orders, customers=args.customers, skus=args.skus, partitions=8,
                     workers=2 if args.scenario in ("takeover", "rolling", *HOSTS) else 1,
                     requestid_forget_rate=args.requestid_forget_rate)
    if args.scenario in ("term", "rolling"):
        # The reproduction: QBO answering in 250 ms (batches in flight at every stop), 8 % failures
        # and a short ladder (rungs holding records), no spurious 429s.
        plan.latency_ms, plan.fail_rate, plan.throttle_rate, plan.commit_then_fail_rate = 250, 0.08, 0.0, 0.02
        plan.token_ttl, plan.retry_delays = 3600, "2s,4s,8s,16s,32s"
    if args.scenario in ("leader-kill", *CLUSTER, *HOSTS):
        # Issue 20: commands in flight (QBO answering in 200 ms) when a broker or a worker host is in trouble.
        plan.brokers = 1 if args.scenario in HOSTS else 3
        plan.latency_ms, plan.token_ttl = 200, 3600
        plan.fail_rate = plan.throttle_rate = plan.commit_then_fail_rate = 0.0
    if args.scenario in HOSTS:
        plan.metrics_ports = True
        plan.extra_env = {"MAGQB_TOKEN_KEY": new_key(), "MAGQB_SESSION_TIMEOUT": "10"}
    if args.scenario == "token-handover":
        plan.token_ttl, plan.sandbox_args = 10, ["--refresh-token-grace", "0"]
    if args.scenario == "quota":
        plan.fail_rate = plan.throttle_rate = plan.commit_then_fail_rate = 0.0
        plan.token_ttl = 3600
        plan.quota_per_minute, plan.quota_per_second, plan.throttle_backoff = QUOTA_PER_MINUTE, 10, 60.0
    run = ChaosRun(plan, Path(tempfile.mkdtemp(prefix="magqb-chaos-")))
    try:
        stack = run.start()
        orders = run.make_orders()
        started = time.monotonic()
        refused = 0
        rng = random.Random(1)
        kills = {"kill": sorted(rng.sample(range(len(orders)), 3)),
                 "term": sorted(rng.sample(range(len(orders)), 3)),
                 "rolling": [len(orders) // 4, len(orders) // 2],
                 "takeover": [rng.randrange(len(orders) // 4, len(orders) // 2)]}.get(args.scenario, [])
        stops: list[float] = []
        outage = len(orders) // 3 if args.scenario == "broker" else -1
        leader_down = len(orders) // 2 if args.scenario == "leader-kill" else -1
        trouble_at = len(orders) // 3
        victim, killed_at = 0, 0.0
        cluster = ClusterTrouble(run, args.scenario)
        for n, order in enumerate(orders):
            if n == trouble_at and args.scenario in (*CLUSTER, *HOSTS):
                refused += cluster.begin(order)
            cluster.tick()
            if n == leader_down:
                leaders = run.leaders("magento.orders")
                victim = max(leaders, key=lambda node: leaders[node])
                run.node(victim, "kill")
                killed_at = time.monotonic()
                print(f"  broker {victim} (leading {leaders[victim]} of {sum(leaders.values())} order partitions) "
                      f"SIGKILLed after {n} orders")
            if victim and killed_at and time.monotonic() - killed_at >= 60:
                run.node(victim, "start")
                print(f"  broker {victim} restarted {time.monotonic() - killed_at:.0f}s later")
                killed_at = 0.0
            if n == outage:
                run.stop_broker()
                refused += refused_for(run, order, 20, "while the broker was down")
                run.start_broker()
            refused += run.post(order, timeout=180)
            if n in kills and args.scenario == "kill":
                time.sleep(rng.uniform(0.2, 1.5))  # into the middle of something
                run.kill_worker("worker0")
                run.start_worker("worker0")
            elif n in kills and args.scenario == "term":
                time.sleep(rng.uniform(0.2, 1.5))
                stops.append(run.term_worker("worker0"))
                run.start_worker("worker0")
            elif n in kills and args.scenario == "rolling":
                name = "worker0" if n == kills[0] else "worker1"
                stops.append(run.term_worker(name))
                run.start_worker(name)
            elif n in kills:
                run.kill_worker("worker1")
        cluster.finish()
        if victim and killed_at:  # every order is in: the broker still comes back a minute after its death
            while time.monotonic() - killed_at < 60:
                time.sleep(1)
            run.node(victim, "start")
            print(f"  broker {victim} restarted {time.monotonic() - killed_at:.0f}s later")
        run.wait_booked(args.timeout)
        extra = cluster.figures()
        if args.scenario == "token-handover":  # the books are read back with the first token, refused by now
            http("PUT", f"{stack.sandbox_url}/_sandbox/faults", json.dumps({"refresh_token_grace": 86400}).encode(),
                 {"Content-Type": "application/json"})
        report = run.report(time.monotonic() - started)
    finally:
        run.stop()
        run.cleanup()

    minutes = report.seconds / 60
    print(f"chaos benchmark, scenario {args.scenario}: {args.orders} orders, {args.customers} customers, "
          f"{args.skus} SKUs")
    for line in report.lines():
        print("  " + line)
    if refused:
        print(f"  webhooks answered 503         : {refused} (re-sent until accepted)")
    if stops:
        print(f"  SIGTERM → exit                : {', '.join(f'{s:.1f}s' for s in stops)}")
    for line in extra:
        print("  " + line)
    if args.scenario == "quota":
        per_min = report.qbo_requests / minutes
        per_order = report.qbo_requests / report.orders
        print(f"  QBO requests/min              : {per_min:.0f} of {QUOTA_PER_MINUTE} "
              f"({per_min / QUOTA_PER_MINUTE:.0%} of the quota; {per_order:.2f} requests per order)")
        print(f"  quota-bound maximum           : {QUOTA_PER_MINUTE / per_order:.0f} orders/min; achieved "
              f"{report.orders / minutes:.0f} ({report.orders / minutes / (QUOTA_PER_MINUTE / per_order):.0%})")
    if args.json:
        dump(args.json, report)


def refused_for(run: ChaosRun, order: dict[str, object], seconds: float, why: str) -> int:
    """Magento re-sending a webhook for `seconds` while Kafka cannot take it: every answer must be 503."""
    assert run.stack is not None
    refused, since = 0, time.monotonic()
    while time.monotonic() - since < seconds:
        status, _ = run.stack.post_order(order)
        assert status == 503, f"got {status} {why}"
        refused += 1
        time.sleep(0.5)
    return refused


CLUSTER = ("broker-hung", "controller-kill", "broker-rolling", "two-down")
HOSTS = ("zombie", "token-handover")


class ClusterTrouble:
    """Issue 20's scenarios 2-6 at full size: what happens a third of the way in, and when it ends."""

    def __init__(self, run: ChaosRun, scenario: str) -> None:
        self.run, self.scenario = run, scenario
        self.since = 0.0
        self.nodes: list[int] = []
        self.worker = ""
        self.notes: list[str] = []
        self.fence_of = ""
        self.rolling: threading.Thread | None = None

    def begin(self, order: dict[str, object]) -> int:
        """Start the trouble; returns how many webhooks were answered 503 meanwhile (re-sent, as Magento does)."""
        run, refused = self.run, 0
        self.since = time.monotonic()
        if self.scenario == "broker-hung":
            leaders = run.leaders("magento.orders")
            self.nodes = [max(leaders, key=lambda node: leaders[node])]
            run.node(self.nodes[0], "pause")
            self.say(f"broker {self.nodes[0]} (leading {leaders[self.nodes[0]]} order partitions) SIGSTOPped")
        elif self.scenario == "controller-kill":
            self.nodes = [run.controller()]
            run.node(self.nodes[0], "kill")
            self.say(f"node {self.nodes[0]}, the active KRaft controller, SIGKILLed")
        elif self.scenario == "broker-rolling":
            def roll() -> None:  # beside the webhooks: they keep coming while each broker restarts
                for node in (1, 2, 3):
                    run.node(node, "stop")
                    self.say(f"broker {node} stopped (SIGTERM)")
                    run.node(node, "start")
                    self.say(f"broker {node} started again")
                    time.sleep(5)
            self.rolling = threading.Thread(target=roll, daemon=True)
            self.rolling.start()
        elif self.scenario == "two-down":
            self.nodes = [2, 3]
            for node in self.nodes:
                run.node(node, "kill")
            self.say("brokers 2 and 3 SIGKILLed")
            refused += refused_for(run, order, 30, "with two of three brokers down")
            for node in self.nodes:
                run.node(node, "start")
            self.say("brokers 2 and 3 restarted")
            self.nodes = []
        elif self.scenario == "zombie":
            self.worker = self.holder()
            run.signal_worker(self.worker, signal.SIGSTOP)
            self.say(f"{self.worker} (holding the realm's commands) SIGSTOPped")
        elif self.scenario == "token-handover":
            self.worker = self.holder()
            run.term_worker(self.worker)
            self.say(f"{self.worker} (holding the realm, its token rotated) stopped; the other takes over")
        return refused

    def holder(self) -> str:
        """The worker that refreshed the realm's access token last: the one holding its commands."""
        assert self.run.stack is not None
        last = {w: max((line[:23] for line in self.run.stack.log_tail(w, 100000).splitlines()
                        if "access token refreshed" in line), default="") for w in self.run.web_ports}
        return max(last, key=lambda w: last[w])

    def tick(self) -> None:
        if not self.since or time.monotonic() - self.since < 30:
            return
        if self.scenario in ("broker-hung", "controller-kill") and self.nodes:
            self.run.node(self.nodes[0], "resume" if self.scenario == "broker-hung" else "start")
            self.say(f"node {self.nodes[0]} {'resumed' if self.scenario == 'broker-hung' else 'restarted'}")
            self.nodes = []
        elif self.scenario == "zombie" and self.worker:
            self.run.signal_worker(self.worker, signal.SIGCONT)
            self.say(f"{self.worker} resumed (a zombie until its heartbeat is refused)")
            self.fence_of, self.worker = self.worker, ""

    def finish(self) -> None:
        if self.rolling is not None:
            self.rolling.join()
        while self.since and (self.nodes or (self.scenario == "zombie" and self.worker)):
            time.sleep(0.5)
            self.tick()

    def figures(self) -> list[str]:
        lines = list(self.notes)
        if self.scenario == "zombie":
            lines.append(f"effects fenced on the zombie  : "
                         f"{self.run.worker_metric(self.fence_of, 'magqb_effects_fenced_total'):.0f}")
        if self.scenario == "token-handover":
            assert self.run.stack is not None
            requests = self.run.stack.sandbox_stats()["requests"]
            lines.append(f"token refreshes ok / refused  : {requests.get('POST /oauth2/v1/tokens/bearer 200', 0)} / "
                         f"{requests.get('POST /oauth2/v1/tokens/bearer 400', 0)}")
        return lines

    def say(self, what: str) -> None:
        line = f"{time.monotonic() - self.since:5.1f}s {what}"
        print("  " + line, flush=True)
        self.notes.append(line)


if __name__ == "__main__":
    main()
