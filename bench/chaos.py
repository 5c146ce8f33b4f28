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

Each run starts its own broker, sandbox, ingress and worker(s). Nothing is asserted:
the figures are printed (and written as JSON with --json PATH).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.chaos import ChaosPlan, ChaosRun, dump  # noqa: E402

QUOTA_PER_MINUTE = 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("faults", "quota", "kill", "takeover", "broker", "term", "rolling",
                                           "leader-kill"),
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
                     workers=2 if args.scenario in ("takeover", "rolling") else 1,
                     requestid_forget_rate=args.requestid_forget_rate)
    if args.scenario in ("term", "rolling"):
        # The reproduction: QBO answering in 250 ms (batches in flight at every stop), 8 % failures
        # and a short ladder (rungs holding records), no spurious 429s.
        plan.latency_ms, plan.fail_rate, plan.throttle_rate, plan.commit_then_fail_rate = 250, 0.08, 0.0, 0.02
        plan.token_ttl, plan.retry_delays = 3600, "2s,4s,8s,16s,32s"
    if args.scenario == "leader-kill":
        # Issue 20, scenario 1: commands in flight (QBO answering in 200 ms) when the broker dies.
        plan.brokers, plan.latency_ms, plan.token_ttl = 3, 200, 3600
        plan.fail_rate = plan.throttle_rate = plan.commit_then_fail_rate = 0.0
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
        victim, killed_at = 0, 0.0
        for n, order in enumerate(orders):
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
                down = time.monotonic()
                while time.monotonic() - down < 20:  # Magento keeps re-sending; every answer must be 503
                    status, _ = stack.post_order(order)
                    assert status == 503, f"got {status} while the broker was down"
                    refused += 1
                    time.sleep(0.5)
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
        if victim and killed_at:  # every order is in: the broker still comes back a minute after its death
            while time.monotonic() - killed_at < 60:
                time.sleep(1)
            run.node(victim, "start")
            print(f"  broker {victim} restarted {time.monotonic() - killed_at:.0f}s later")
        run.wait_booked(args.timeout)
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
    if args.scenario == "quota":
        per_min = report.qbo_requests / minutes
        per_order = report.qbo_requests / report.orders
        print(f"  QBO requests/min              : {per_min:.0f} of {QUOTA_PER_MINUTE} "
              f"({per_min / QUOTA_PER_MINUTE:.0%} of the quota; {per_order:.2f} requests per order)")
        print(f"  quota-bound maximum           : {QUOTA_PER_MINUTE / per_order:.0f} orders/min; achieved "
              f"{report.orders / minutes:.0f} ({report.orders / minutes / (QUOTA_PER_MINUTE / per_order):.0%})")
    if args.json:
        dump(args.json, report)


if __name__ == "__main__":
    main()
