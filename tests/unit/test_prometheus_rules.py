"""The alert rules and the scrape configuration, checked and unit-tested by the real promtool
(Debian's prometheus package; `make test` installs it when missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed: run ops/prometheus/install (make test does)")
    return subprocess.run([tool, *args], cwd=OPS, capture_output=True, text=True, timeout=120)


def test_the_scrape_configuration_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_alert_rules_are_valid() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0 and "SUCCESS: 16 rules found" in out.stdout, out.stdout + out.stderr


def test_every_alert_fires_on_its_synthetic_series_and_only_then() -> None:
    out = promtool("test", "rules", "alerts_test.yml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_has_a_summary_a_runbook_and_a_unit_test() -> None:
    import yaml

    rules = [r for g in yaml.safe_load((OPS / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    tested = {t["alertname"] for case in yaml.safe_load((OPS / "alerts_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    guide = (OPS.parents[1] / "docs" / "monitoring.md").read_text()
    for rule in rules:
        name = rule["alert"]
        assert rule["annotations"]["summary"], name
        page, anchor = rule["annotations"]["runbook"].split("#", 1)
        assert page == "docs/monitoring.md" and anchor == name.lower() and f"\n### {name}\n" in guide, \
            f"{name}: no runbook section for it in docs/monitoring.md"
        assert name in tested, f"{name} has no firing unit test"
