"""Prometheus metrics (prefix `magqb_`, base units, `_total` counters, no per-order labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter(
    "magqb_webhooks",
    "Webhook requests by outcome (accepted, bad_signature, bad_json, too_large, invalid, slow_body, "
    "broker_unavailable, duplicate, repeat: a body already recorded, answered and not written again, "
    "repeat_limited: a repeat past the source's budget, answered 429).",
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
    ["realm", "entity", "method", "status", "kind"],
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
REALM_PAUSED = Gauge(
    "magqb_qbo_realm_paused", "1 while dispatch for the realm waits for a token endpoint (or token store) that fails "
    "without refusing the token.", ["realm"]
)
REALM_BLOCKED = Gauge(
    "magqb_qbo_realm_blocked", "1 while dispatch for the realm is stopped (refresh token refused).", ["realm"]
)
CUSTOM_TXN_NUMBERS = Gauge(
    "magqb_qbo_custom_txn_numbers",
    "1 when the QuickBooks company keeps the DocNumbers magqb sends (custom transaction numbers on); 0 when it "
    "numbers sales forms itself (each document then costs a lookup by its note first).", ["realm"],
)
REFRESH_TOKEN_UNSAVED = Gauge(
    "magqb_qbo_refresh_token_unsaved",
    "1 while a refresh token Intuit issued could not be written to the token store (kept in memory, written "
    "again at every use).", ["realm"],
)
REFRESH_TOKEN_EXPIRY = Gauge(
    "magqb_qbo_refresh_token_expiry_seconds",
    "Seconds until the realm's refresh token expires (the earlier of its rolling and hard expiry).", ["realm"]
)
EFFECTS_FENCED = Counter(
    "magqb_effects_fenced", "Effects (a QuickBooks call, a Kafka write, an acknowledgement) not made because this "
    "worker no longer held the event's partition: revoked, or lost while it was frozen (app.adapters.ownership).")
RETRIES = Counter("magqb_retries", "Commands sent to a delay topic, by rung.", ["rung"])
DEAD_LETTERS = Counter("magqb_dead_letters", "Commands dead-lettered, by reason.", ["reason"])
CONSUMER_REWINDS = Counter(
    "magqb_consumer_rewinds", "Partitions rewound to a fetched-but-undelivered record (around rebalances).", ["topic"]
)

# ---- what an operator watches (issue #12): lag, how late the books are, quota in use

ORDERS_BY_STATE = Gauge(
    "magqb_orders", "Orders in this worker's partitions by state: waiting (for customers/items), requested "
    "(document asked for), parked (in the dead-letter topic), booked, cancelled (never booked).", ["state"]
)
RECORDS_EXPIRED_UNHANDLED = Counter(
    "magqb_records_expired_unhandled",
    "Records Kafka deleted (retention, delete-records) before a worker handled them, found when the worker's "
    "committed offset was below the partition's log start.", ["topic"],
)
ORDERS_STUCK = Gauge(
    "magqb_orders_stuck",
    "Orders in this worker's partitions waiting (resolving, requested) with no change for longer than the retry "
    "ladder takes and an hour (MAGQB_STUCK_AFTER_MINUTES): their command is gone; `magqb replay --stuck` moves them.",
)
OLDEST_UNBOOKED_SECONDS = Gauge(
    "magqb_oldest_unbooked_order_seconds",
    "Age of the oldest order on its way to QuickBooks (waiting or requested) in this worker's partitions, from "
    "its webhook's receipt; 0 when none is. Parked orders are counted by magqb_orders{state=\"parked\"}.",
)
ORDER_BOOKING_SECONDS = Histogram(
    "magqb_order_booking_seconds", "Webhook received (the event's received_at) to document created in QuickBooks.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 14400),
)
CONSUMER_LAG = Gauge(
    "magqb_consumer_lag", "Records not yet committed by the consumer group (log-end offset - committed offset), "
    "for the partitions this worker owns.", ["group", "topic", "partition"]
)
RETRIES_WAITING = Gauge(
    "magqb_retries_waiting", "Commands waiting on a retry rung (its topic's lag), in this worker's partitions.",
    ["rung"]
)
QBO_REQUESTS_LAST_MINUTE = Gauge(
    "magqb_qbo_requests_last_minute", "QBO requests this worker sent for the realm in the last 60 seconds.", ["realm"]
)
QBO_PACE = Gauge(
    "magqb_qbo_pace_per_minute", "Requests per minute the pacer allows itself now (lower after a 429).", ["realm"]
)
TOKEN_REFRESHES = Counter(
    "magqb_qbo_token_refreshes", "Access token refreshes by outcome (ok, refused, unreachable).", ["realm", "outcome"]
)


# Every label value a counter can take, at 0 from the start: Prometheus computes increase() and rate()
# from a series' first sample, so a counter born at 1 (the first dead letter) would never look increased.
DEAD_LETTER_REASONS = ("permanent", "retries_exhausted", "docnumber_taken", "document_differs", "stale_reference",
                       "reconciliation", "mapping", "internal", "unreadable")
FOLLOW_LAG = Gauge(
    "magqb_follow_lag_seconds",
    "REST follower: now minus the moment its last complete pass began (all Magento had changed by then, less the "
    "overlap, is on magento.orders). Exported by the worker that follows (the group's leader) only.",
    ["store"],
)
FOLLOW_LAST_PASS = Gauge("magqb_follow_last_pass_timestamp_seconds",
                         "REST follower: when its last complete pass ended (Unix time).", ["store"])
FOLLOW_PUBLISHED = Counter("magqb_follow_events_published",
                           "REST follower: orders, credit memos and paid invoices it published, by kind.", ["kind"])
FOLLOW_SKIPPED = Counter("magqb_follow_rows_skipped",
                         "REST follower: rows it could not publish at all (too large to keep, no key): see the log.")
FOLLOW_FAILURES = Counter("magqb_follow_pass_failures",
                          "REST follower: passes that stopped on an error (Magento down, refused, Kafka down).")
WEBHOOK_RESULTS = ("accepted", "bad_signature", "bad_json", "too_large", "invalid", "slow_body", "broker_unavailable",
                   "duplicate")
for _reason in DEAD_LETTER_REASONS:
    DEAD_LETTERS.labels(reason=_reason)
for _result in WEBHOOK_RESULTS:
    WEBHOOKS.labels(result=_result)
for _kind in ("order", "creditmemo", "invoice"):
    FOLLOW_PUBLISHED.labels(kind=_kind)
