"""The dashboard and the alert rules name only metrics the processes export, and the committed
dashboard is what ops/grafana/build_dashboard.py generates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import app.metrics  # noqa: F401 - registers every metric of the ingress and the worker

OPS = Path(__file__).resolve().parents[2] / "ops"
METRIC = re.compile(r"\b(magqb_[a-z0-9_]+)")
# The sandbox writes its /metrics by hand (app/sandbox/server.py metrics_endpoint).
SANDBOX = {"magqb_sandbox_requests_total", "magqb_sandbox_throttled_total", "magqb_sandbox_documents_created_total",
           "magqb_sandbox_injected_faults_total"}


def exported() -> set[str]:
    names = set(SANDBOX)
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def dashboard_exprs() -> list[str]:
    d = json.loads((OPS / "grafana/dashboards/magqb.json").read_text())
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in d["templating"]["list"]]
    return exprs


def rule_exprs() -> list[str]:
    rules = yaml.safe_load((OPS / "prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_every_metric_a_panel_or_rule_names_is_exported() -> None:
    have = exported()
    named = {m for e in dashboard_exprs() + rule_exprs() for m in METRIC.findall(e)}
    assert named, "no metric named at all?"
    assert named - have == set()


def test_the_committed_dashboard_is_the_generated_one() -> None:
    script = OPS / "grafana/build_dashboard.py"
    code = (f"import sys; sys.path.insert(0, {str(script.parent)!r}); import json, build_dashboard as b; "
            "print(json.dumps(b.dashboard(), indent=2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == json.loads((OPS / "grafana/dashboards/magqb.json").read_text())


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    d = json.loads((OPS / "grafana/dashboards/magqb.json").read_text())
    titles = " | ".join(p["title"] for p in d["panels"]).lower()
    for needed in ("webhooks", "booked per minute", "requests per minute by status", "429", "latency",
                   "oldest unbooked", "lag", "retries", "dead letters", "token"):
        assert needed in titles, needed
    assert {v["name"] for v in d["templating"]["list"]} == {"realm", "instance"}
    assert any("vector(500)" in t["expr"] for p in d["panels"] for t in p["targets"])  # the quota line
