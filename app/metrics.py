"""Prometheus metrics (prefix `magqb_`, base units, `_total` counters, no per-order labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter(
    "magqb_webhooks",
    "Webhook requests by outcome (accepted, bad_signature, bad_json, too_large, invalid, slow_body, "
    "broker_unavailable).",
    ["result"],
)
INGRESS_CONNECTIONS_CLOSED = Counter(
    "magqb_ingress_connections_closed",
    "Connections the ingress closed on its own: over_limit (MAGQB_INGRESS_MAX_CONNECTIONS), read_timeout "
    "(no complete request within MAGQB_INGRESS_READ_TIMEOUT).",
    ["reason"],
)
WEBHOOK_SECONDS = Histogram(
    "magqb_webhook_request_duration_seconds",
    "Time to verify, validate and durably publish a webhook.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ORDERS = Counter("magqb_orders_processed", "Order events handled by the orders agent, by outcome.", ["outcome"])
BAD_EVENTS = Counter(
    "magqb_bad_events", "Events that could not be read or handled (dead-lettered), by topic.", ["topic"]
)
COMMANDS = Counter("magqb_qbo_commands", "QBO commands finished by the dispatcher, by type and result.",
                   ["command", "result"])
QBO_REQUESTS = Counter(
    "magqb_qbo_requests",
    "HTTP requests to QuickBooks, by entity, method, status and kind (read: queries and GETs, which Intuit meters "
    "per month; write: creates and updates).",
    ["entity", "method", "status", "kind"],
)
QBO_MONTH_READS = Gauge("magqb_qbo_month_reads", "QBO reads this calendar month (UTC) by this worker.", ["realm"])
QBO_MONTH_READS_PROJECTED = Gauge(
    "magqb_qbo_month_reads_projected", "This month's QBO reads projected to the month's end at the pace so far.",
    ["realm"],
)
QBO_MONTHLY_READ_BUDGET = Gauge(
    "magqb_qbo_monthly_read_budget", "The monthly read allowance configured (MAGQB_QBO_MONTHLY_READ_BUDGET).", ["realm"]
)
QBO_REQUEST_SECONDS = Histogram(
    "magqb_qbo_request_duration_seconds", "QuickBooks request latency.", ["entity"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DOCUMENTS = Counter("magqb_documents_created", "QBO sales documents booked, by type and how (created, found).",
                    ["doc_type", "how"])
RECONCILE_MISMATCHES = Counter(
    "magqb_reconciliation_mismatches",
    "Orders not booked because the document total and Magento's grand_total differ by more than the "
    "adjustment tolerance (they are in the dead-letter topic).",
)
COMMANDS_IN_FLIGHT = Gauge("magqb_dispatcher_in_flight", "QBO commands being dispatched right now.")
QBO_THROTTLED = Counter("magqb_qbo_throttled", "HTTP 429 answers from QuickBooks.", ["realm"])
CIRCUIT_OPEN = Gauge("magqb_qbo_circuit_open", "1 while the realm's circuit breaker holds calls back.", ["realm"])
REALM_BLOCKED = Gauge(
    "magqb_qbo_realm_blocked", "1 while dispatch for the realm is stopped (refresh token refused).", ["realm"]
)
REFRESH_TOKEN_EXPIRY = Gauge(
    "magqb_qbo_refresh_token_expiry_seconds",
    "Seconds until the realm's refresh token expires (the earlier of its rolling and hard expiry).", ["realm"]
)
RETRIES = Counter("magqb_retries", "Commands sent to a delay topic, by rung.", ["rung"])
DEAD_LETTERS = Counter("magqb_dead_letters", "Commands dead-lettered, by reason.", ["reason"])
CONSUMER_REWINDS = Counter(
    "magqb_consumer_rewinds", "Partitions rewound to a fetched-but-undelivered record (around rebalances).", ["topic"]
)
