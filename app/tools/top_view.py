"""`magqb top`'s figures: the processes' /metrics pages → one snapshot, and two snapshots → rates.

Pure: parsing with prometheus_client's text parser, sums over workers (each reports only what it
owns), the per-minute rates from the difference of two snapshots. The CLI fetches and renders.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

QUOTA_PER_MINUTE = 500  # QuickBooks' requests per minute per realm


@dataclass
class Snapshot:
    at: float
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=lambda: defaultdict(list))
    unreachable: list[str] = field(default_factory=list)
    pages: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = field(default_factory=dict)

    def add(self, text: str, source: str = "") -> None:
        """One process's /metrics page (parsed whole before it counts: a broken page adds nothing)."""
        page: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                page[s.name].append((dict(s.labels), float(s.value)))
        self.pages[source or f"page{len(self.pages)}"] = page
        for name, series in page.items():
            self.samples[name].extend(series)

    def total(self, name: str, **match: str) -> float:
        return sum(v for labels, v in self.samples.get(name, []) if all(labels.get(k) == w for k, w in match.items()))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, v in self.samples.get(name, []):
            if all(labels.get(k) == w for k, w in match.items()):
                out[labels.get(label, "")] += v
        return dict(out)

    def maximum(self, name: str, **match: str) -> float:
        values = [v for labels, v in self.samples.get(name, []) if all(labels.get(k) == w for k, w in match.items())]
        return max(values) if values else 0.0

    def realms(self) -> list[str]:
        found = {labels["realm"] for series in self.samples.values() for labels, _ in series if labels.get("realm")}
        return sorted(found)


def fetch(urls: list[str], timeout: float = 2.0) -> Snapshot:
    """The processes' /metrics pages now (an unreachable one is named, not fatal)."""
    snap = Snapshot(at=time.monotonic())
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                snap.add(resp.read().decode("utf-8", errors="replace"), url)
        except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
            snap.unreachable.append(f"{url} ({getattr(exc, 'reason', exc)})")
    return snap


@dataclass
class RealmView:
    realm: str
    booked_per_minute: float | None  # None until two snapshots
    requests_last_minute: float
    pace_per_minute: float
    throttled_per_minute: float | None
    blocked: bool
    circuit_open: bool
    token_expires_in_days: float | None
    numbers_kept: bool | None = None  # the company's custom transaction numbers (None: not read yet)


@dataclass
class View:
    realms: list[RealmView]
    oldest_unbooked_seconds: float
    orders_by_state: dict[str, float]
    lag_by_topic: dict[str, float]
    retries_by_rung: dict[str, float]
    dead_letters_by_reason: dict[str, float]
    webhooks_per_minute: float | None
    unreachable: list[str]


def per_minute(now: Snapshot, before: Snapshot | None, name: str, **match: str) -> float | None:
    """The counter's increase per minute, process by process: only pages both snapshots have count (a
    process that was unreachable once is not a jump), and a restarted one (counters back to 0) adds 0."""
    if before is None or now.at <= before.at:
        return None
    delta = 0.0
    for source, page in now.pages.items():
        old = before.pages.get(source)
        if old is None:
            continue
        after = sum(v for labels, v in page.get(name, []) if all(labels.get(k) == w for k, w in match.items()))
        prior = sum(v for labels, v in old.get(name, []) if all(labels.get(k) == w for k, w in match.items()))
        delta += max(0.0, after - prior)
    return delta * 60.0 / (now.at - before.at)


def view(now: Snapshot, before: Snapshot | None) -> View:
    realms = []
    for realm in now.realms():
        expiry = now.samples.get("magqb_qbo_refresh_token_expiry_seconds")
        realms.append(RealmView(
            realm=realm,
            # documents carry no realm label: with one realm per installation, the realm's bookings are all of them
            booked_per_minute=per_minute(now, before, "magqb_documents_created_total"),
            requests_last_minute=now.total("magqb_qbo_requests_last_minute", realm=realm),
            pace_per_minute=now.maximum("magqb_qbo_pace_per_minute", realm=realm),
            throttled_per_minute=per_minute(now, before, "magqb_qbo_requests_total", realm=realm, status="429"),
            blocked=now.maximum("magqb_qbo_realm_blocked", realm=realm) >= 1,
            circuit_open=now.maximum("magqb_qbo_circuit_open", realm=realm) >= 1,
            token_expires_in_days=(min(v for labels, v in expiry if labels.get("realm") == realm) / 86400
                                   if expiry and any(labels.get("realm") == realm for labels, _ in expiry) else None),
            numbers_kept=(now.maximum("magqb_qbo_custom_txn_numbers", realm=realm) >= 1
                          if any(labels.get("realm") == realm
                                 for labels, _ in now.samples.get("magqb_qbo_custom_txn_numbers", [])) else None),
        ))
    return View(
        realms=realms,
        oldest_unbooked_seconds=now.maximum("magqb_oldest_unbooked_order_seconds"),
        orders_by_state=now.by("magqb_orders", "state"),
        lag_by_topic=now.by("magqb_consumer_lag", "topic"),
        retries_by_rung=now.by("magqb_retries_waiting", "rung"),
        dead_letters_by_reason={k: v for k, v in now.by("magqb_dead_letters_total", "reason").items() if v},
        webhooks_per_minute=per_minute(now, before, "magqb_webhooks_total", result="accepted"),
        unreachable=now.unreachable,
    )
