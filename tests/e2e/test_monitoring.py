"""A real Prometheus (Debian's package) scraping the ingress, a worker and the sandbox of a stack with
injected faults: every panel query of the dashboard answers with data, every alert expression is
valid and every metric it names has series, the dead-letter alert fires for a poison order, and the
realm-blocked alert fires when QuickBooks refuses the refresh token."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.chaos import ChaosPlan, ChaosRun
from tests.e2e.harness import MAGQB, REPO, free_port, http, poll

pytestmark = pytest.mark.kafka
OPS = REPO / "ops"


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: run ops/prometheus/install (make test does)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(OPS / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                               for job, target in targets.items()],
        }
        path = workdir / "prometheus.yml"
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen([binary, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        poll(lambda: http("GET", f"{self.url}/-/ready")[0] == 200, 60, "Prometheus to be ready")

    def api(self, path: str, **params: str) -> Any:
        status, raw = http("GET", f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        body = json.loads(raw) if raw else {}
        assert status == 200 and body.get("status") == "success", (path, params, status, raw[:500])
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def firing(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture
def monitored(tmp_path: Path, kafka_bootstrap: str) -> Iterator[tuple[ChaosRun, Prometheus]]:
    # A Magento stand-in for the worker to follow: the follower's metrics and alert have series too.
    magento_port = free_port()
    oauth = {"MAGENTO_CONSUMER_KEY": "k" * 32, "MAGENTO_CONSUMER_SECRET": "c" * 32,
             "MAGENTO_ACCESS_TOKEN": "a" * 32, "MAGENTO_ACCESS_TOKEN_SECRET": "s" * 32}
    standin = subprocess.Popen([sys.executable, "-m", "tests.magento_standin", "--port", str(magento_port),
                                "--orders", "0", "--oauth", ":".join(oauth.values())], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = ChaosRun(ChaosPlan(orders=20, customers=5, skus=4, fail_rate=0.0, throttle_rate=0.0,
                             commit_then_fail_rate=0.0, token_ttl=3600, seed=121,
                             extra_env={"MAGQB_MONITOR_SECONDS": "1", "MAGQB_FOLLOW_INTERVAL": "2", **oauth,
                                        "MAGENTO_BASE_URL": f"http://127.0.0.1:{magento_port}/rest/V1"},
                             metrics_ports=True), tmp_path / "run")
    prom = None
    try:
        stack = run.start()
        hostport = lambda url: url.removeprefix("http://")  # noqa: E731
        prom = Prometheus(tmp_path / "prometheus", {"magqb-ingress": hostport(stack.ingress_url),
                                                    # the worker's --metrics-port, as Prometheus scrapes it
                                                    "magqb-worker": hostport(run.metrics_urls["worker0"]),
                                                    "magqb-sandbox": hostport(stack.sandbox_url)})
        yield run, prom
    finally:
        if prom is not None:
            prom.stop()
        run.stop()
        run.cleanup()
        standin.terminate()
        standin.wait(10)


def dashboard_queries() -> list[tuple[str, str]]:
    d = json.loads((OPS / "grafana/dashboards/magqb.json").read_text())
    return [(p["title"], t["expr"].replace("$realm", ".*").replace("$instance", ".*"))
            for p in d["panels"] for t in p["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((OPS / "prometheus/alerts.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


def test_a_real_prometheus_sees_every_panel_and_alert_and_the_alerts_fire(monitored) -> None:
    run, prom = monitored
    stack = run.stack
    assert stack is not None
    orders = run.make_orders()
    poison = orders[3]
    # Someone booked an Invoice by hand under the DocNumber one order needs: that order is dead-lettered.
    stack.book_by_hand(f"MAG-{poison['increment_id']}", "Manual Booker")
    # Then QuickBooks starts failing now and then: 10 % 5xx, 10 % 429.
    faults = json.dumps({"fail_rate": 0.1, "throttle_rate": 0.1}).encode()
    assert http("PUT", f"{stack.sandbox_url}/_sandbox/faults", faults, {"Content-Type": "application/json"})[0] == 200
    for order in orders:
        run.post(order)
    poll(lambda: run.created("SalesReceipt") >= len(orders) - 1, 120, "the other orders to be booked")
    poll(lambda: prom.firing().get("MagqbDeadLetters"), 60, lambda: f"the dead-letter alert (firing: {prom.firing()})")
    assert prom.firing()["MagqbDeadLetters"][0]["reason"] == "docnumber_taken"

    # Every panel of the dashboard answers with data.
    def empty_panels() -> list[str]:
        return [f"{title}: {expr}" for title, expr in dashboard_queries() if not prom.query(expr)]

    poll(lambda: not empty_panels(), 60, lambda: "every panel to have data; empty:\n" + "\n".join(empty_panels()))
    # Every alert expression is valid PromQL there, and every metric it names has series.
    for rule in alert_rules():
        prom.query(rule["expr"])
        for metric in set(re.findall(r"\b(magqb_[a-z0-9_]+|up)\b", rule["expr"])):
            assert prom.api("series", **{"match[]": metric}), f"{rule['alert']}: no series of {metric}"
    assert prom.api("label/realm/values")  # the dashboard's realm variable has values
    assert prom.query('up{job="magqb-worker"} == 1')

    # QuickBooks refuses the realm's refresh token: the realm-blocked alert fires.
    realm = stack.env["QUICKBOOKS_REALM_ID"]
    data_dir = run.workdir / "worker0"
    revoked = subprocess.run([MAGQB, "token", "set"], input="RT1-revoked-by-intuit-000000\n", text=True,
                             capture_output=True, env={**stack.env, "MAGQB_DATA_DIR": str(data_dir)}, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    assert http("POST", f"{stack.sandbox_url}/_sandbox/expire-tokens", b"")[0] == 200  # the next call needs a refresh
    late = dict(run.make_orders()[0], entity_id=poison["entity_id"] + 10_000,
                increment_id=f"{poison['entity_id'] + 10_000:09d}")
    run.post(late)
    poll(lambda: prom.firing().get("MagqbRealmBlocked"), 90, lambda: f"the realm-blocked alert (firing: {prom.firing()})")
    assert prom.firing()["MagqbRealmBlocked"][0]["realm"] == realm
    # and the worker's log names the commands that give the realm a new token
    poll(lambda: "dispatch stopped" in stack.log_tail("worker0", 400), 30, "the blocked realm's log line")
    blocked_line = next(ln for ln in stack.log_tail("worker0", 400).splitlines() if "dispatch stopped" in ln)
    assert "`magqb connect`" in blocked_line and "`magqb token set`" in blocked_line, blocked_line

    # The same figures in a terminal, from the same /metrics pages.
    top = subprocess.run([MAGQB, "top", "--once", "--interval", "1", "--ingress", f"{stack.ingress_url}/metrics",
                          "--worker", f"{run.metrics_urls['worker0']}/metrics"], capture_output=True, text=True, timeout=60,
                         env={**stack.env, "COLUMNS": "200"})
    assert top.returncode == 0, top.stderr
    assert "oldest unbooked order" in top.stdout and realm in top.stdout and "BLOCKED" in top.stdout, top.stdout
    assert "docnumber_taken" in top.stdout and "magento.orders" in top.stdout, top.stdout
