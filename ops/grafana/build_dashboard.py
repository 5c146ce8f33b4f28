"""Generates dashboards/magqb.json, the Grafana dashboard of magqb (the generated file is committed).

    .venv/bin/python ops/grafana/build_dashboard.py

Plain JSON in Grafana's dashboard model (schemaVersion 39): one list of panels, each a PromQL
query or two, with the realm and the worker instance as variables. tests/e2e/test_monitoring.py runs
every query against a real Prometheus scraping the stack, and tests/unit/test_dashboard.py checks that
every metric named here is one the processes export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "magqb.json"
DS = {"type": "prometheus", "uid": "prometheus"}
QUOTA = "vector(500)"  # QuickBooks' 500 requests a minute per realm
REALM = 'realm=~"$realm"'
INST = 'instance=~"$instance"'

# (title, unit, [(legend, expr)], width, kind)
PANELS: list[tuple[str, str, list[tuple[str, str]], int, str]] = [
    ("Oldest unbooked order", "s", [("oldest", f"max(magqb_oldest_unbooked_order_seconds{{{INST}}})")], 6, "stat"),
    ("Orders by state", "short", [("{{state}}", f"sum by (state) (magqb_orders{{{INST}}})"),
                                  ("stuck", f"sum(magqb_orders_stuck{{{INST}}})")], 6, "stat"),
    ("Realm blocked / circuit open", "short", [
        ("blocked {{realm}}", f"max by (realm) (magqb_qbo_realm_blocked{{{REALM}}})"),
        ("circuit open {{realm}}", f"max by (realm) (magqb_qbo_circuit_open{{{REALM}}})")], 6, "stat"),
    ("Refresh token expires in", "s", [
        ("{{realm}}", f"min by (realm) (magqb_qbo_refresh_token_expiry_seconds{{{REALM}}})")], 6, "stat"),
    ("Webhooks per second by result", "reqps", [
        ("{{result}}", "sum by (result) (rate(magqb_webhooks_total[5m]))")], 12, "timeseries"),
    ("Orders booked per minute (vs QuickBooks' 500 requests/min)", "short", [
        ("booked/min", "sum(rate(magqb_documents_created_total[5m])) * 60"),
        ("quota: 500 requests/min", QUOTA)], 12, "timeseries"),
    ("QuickBooks requests per minute by status", "short", [
        ("{{status}}", f"sum by (status) (rate(magqb_qbo_requests_total{{{REALM}}}[5m])) * 60"),
        ("sent in the last minute", f"sum(magqb_qbo_requests_last_minute{{{REALM}}})"),
        ("pacer's pace", f"sum(magqb_qbo_pace_per_minute{{{REALM}}})"),
        ("quota: 500/min", QUOTA)], 12, "timeseries"),
    ("QuickBooks reads and writes per minute", "short", [
        ("{{kind}}", f"sum by (kind) (rate(magqb_qbo_requests_total{{{REALM}}}[5m])) * 60"),
        ("month's reads projected", f"sum(magqb_qbo_month_reads_projected{{{REALM}}})")], 12, "timeseries"),
    ("429s per minute", "short", [
        ("429/min", f'sum(rate(magqb_qbo_requests_total{{{REALM},status="429"}}[5m])) * 60')], 12, "timeseries"),
    ("Booking latency (webhook → document)", "s", [
        ("p50", f"histogram_quantile(0.5, sum by (le) (rate(magqb_order_booking_seconds_bucket{{{INST}}}[5m])))"),
        ("p99", f"histogram_quantile(0.99, sum by (le) (rate(magqb_order_booking_seconds_bucket{{{INST}}}[5m])))")],
     12, "timeseries"),
    ("Consumer lag by topic", "short", [
        ("{{topic}}", f"sum by (topic) (magqb_consumer_lag{{{INST}}})")], 12, "timeseries"),
    ("Retries waiting by rung", "short", [
        ("{{rung}}", f"sum by (rung) (magqb_retries_waiting{{{INST}}})")], 12, "timeseries"),
    ("Dead letters (last hour) by reason", "short", [
        ("{{reason}}", "sum by (reason) (increase(magqb_dead_letters_total[1h]))")], 12, "timeseries"),
    ("Token refreshes by outcome", "short", [
        ("{{outcome}}", f"sum by (outcome) (increase(magqb_qbo_token_refreshes_total{{{REALM}}}[1h]))")], 12, "timeseries"),
    ("REST follower: lag and what it brought", "short", [
        ("lag (s) {{store}}", "max by (store) (magqb_follow_lag_seconds)"),
        ("published/min {{kind}}", "sum by (kind) (rate(magqb_follow_events_published_total[5m])) * 60")],
     12, "timeseries"),
]


def panel(n: int, title: str, unit: str, targets: list[tuple[str, str]], width: int, kind: str,
          x: int, y: int) -> dict[str, Any]:
    height = 5 if kind == "stat" else 8
    return {
        "id": n, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"h": height, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else
                   {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (legend, expr) in enumerate(targets)],
    }


def dashboard() -> dict[str, Any]:
    panels, x, y, row_h = [], 0, 0, 0
    for n, (title, unit, targets, width, kind) in enumerate(PANELS, start=1):
        if x + width > 24:
            x, y = 0, y + row_h
        p = panel(n, title, unit, targets, width, kind, x, y)
        panels.append(p)
        row_h = max(row_h if x else 0, p["gridPos"]["h"])
        x += width
    variable = {"type": "query", "datasource": DS, "refresh": 2, "includeAll": True, "multi": True,
                "current": {"text": "All", "value": "$__all"}, "allValue": ".*"}
    return {
        "uid": "magqb", "title": "magqb — Magento → QuickBooks", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "tags": ["magqb"],
        "templating": {"list": [
            {**variable, "name": "realm", "label": "Realm",
             "query": {"query": "label_values(magqb_qbo_requests_total, realm)", "refId": "realm"},
             "definition": "label_values(magqb_qbo_requests_total, realm)"},
            {**variable, "name": "instance", "label": "Worker",
             "query": {"query": 'label_values(up{job="magqb-worker"}, instance)', "refId": "instance"},
             "definition": 'label_values(up{job="magqb-worker"}, instance)'},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
