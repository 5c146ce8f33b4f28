"""Topic names and partition counts: one place, shared by ingress, worker and tools.

`magento.orders` and `qbo.results` are keyed by order id and co-partitioned
with the order-state table, so one worker owns an order end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

# MAGQB_TOPIC_PREFIX goes before each (see `configure`): two installations on one cluster never meet.
PREFIX = ""
ORDERS = "magento.orders"
COMMANDS = "qbo.commands"  # key = realm id: one dispatcher owns a realm's quota
RESULTS = "qbo.results"
DEAD_LETTER = "qbo.dead-letter"
FOLLOW_CURSOR = "magqb.follow-cursor"  # the REST follower's cursor, one row per store (compacted)
TOKENS = "magqb.tokens"  # each realm's refresh token, sealed (app.adapters.token_topic; compacted)
CONSOLE_AUDIT = "magqb.console-audit"  # who did what in the console (retry, purge, fix, connect), kept forever
_BASE = {"ORDERS": ORDERS, "COMMANDS": COMMANDS, "RESULTS": RESULTS, "DEAD_LETTER": DEAD_LETTER,
         "FOLLOW_CURSOR": FOLLOW_CURSOR, "TOKENS": TOKENS, "CONSOLE_AUDIT": CONSOLE_AUDIT}


def configure(prefix: str) -> None:
    """Every topic name of this process starts with `prefix` (called when the settings are loaded: every
    module reads the names as `topics.ORDERS` at use, never copied at import)."""
    global PREFIX
    PREFIX = prefix
    for name, base in _BASE.items():
        globals()[name] = prefix + base


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


CLUSTER_DEFAULT = 0  # a TopicSpec's replication factor: the cluster's, min(3, brokers), found when created


def durability(replication_factor: int) -> dict[str, str]:
    """acks=all means "every in-sync replica": with two of them required, an acknowledged event is on
    two brokers before the webhook gets its 202 (one on a single-broker cluster). The cluster's default
    is filled in when the topic is made (app.adapters.kafka_admin)."""
    if replication_factor == CLUSTER_DEFAULT:
        return {}
    return {"min.insync.replicas": str(min(2, replication_factor))}


def app_topics(partitions: int, replication_factor: int, retry_topics: tuple[str, ...] = ()) -> list[TopicSpec]:
    base = durability(replication_factor)
    keep_forever = {**base, "retention.ms": "-1"}  # the order log is the source of truth: replays need all of it
    # Commands and retry rungs too: while a realm is blocked (its refresh token refused) nothing of it is
    # acknowledged, and a block longer than a finite retention (a refused token before a holiday) would let
    # Kafka delete commands no one handled. They are a fraction of the order log's size.
    return [
        TopicSpec(ORDERS, partitions, replication_factor, keep_forever),
        TopicSpec(COMMANDS, partitions, replication_factor, keep_forever),
        TopicSpec(RESULTS, partitions, replication_factor, keep_forever),
        *(TopicSpec(t, partitions, replication_factor, keep_forever) for t in retry_topics),
        TopicSpec(DEAD_LETTER, 1, replication_factor, keep_forever),
        TopicSpec(FOLLOW_CURSOR, 1, replication_factor, {**base, "cleanup.policy": "compact"}),
        tokens_spec(replication_factor),
        TopicSpec(CONSOLE_AUDIT, 1, replication_factor, keep_forever),
    ]


def tokens_spec(replication_factor: int = CLUSTER_DEFAULT) -> TopicSpec:
    """Compacted, but a record stays a day before compaction may drop it: a token write that lost its
    compare-and-set is followed by the winner's again well within that (app.adapters.token_topic)."""
    return TopicSpec(TOKENS, 1, replication_factor, {**durability(replication_factor), "cleanup.policy": "compact",
                                                     "min.compaction.lag.ms": str(24 * 3600 * 1000)})


TABLES = ("order_state", "customers", "items")


def worker_topics(
    app_id: str, partitions: int, replication_factor: int, retry_topics: tuple[str, ...] = ()
) -> list[TopicSpec]:
    """The app's topics plus Faust's own (table changelogs, leader election), created up front.

    Faust creates these itself, but a consumer group that forms before a brand-new topic has
    leaders ignores it ("Ignoring missing topic") and a table then never finishes recovering.
    Creating them before the worker joins, and waiting for their leaders, closes that race.
    """
    compacted = {**durability(replication_factor), "cleanup.policy": "compact"}
    return [
        *app_topics(partitions, replication_factor, retry_topics),
        *(TopicSpec(f"{app_id}-{t}-changelog", partitions, replication_factor, compacted) for t in TABLES),
        TopicSpec(f"{app_id}-__assignor-__leader", 1, replication_factor, compacted),
    ]
