"""Create the application's topics (auto topic creation is off on our brokers)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from app.adapters import kafka_security
from app.topics import CLUSTER_DEFAULT, TopicSpec, durability

log = logging.getLogger("magqb.kafka")

TOPIC_ALREADY_EXISTS = 36


class BrokerUnavailable(Exception):
    """No broker answered within the bounded wait."""


class KafkaAccessRefused(BrokerUnavailable):
    """The cluster answered and refused us (credentials), or we refused it (a certificate not trusted): waiting
    does not help, and the line says which setting to look at."""


class _Reasons(logging.Handler):
    """What aiokafka says about a failed connection (it raises only "Unable to bootstrap")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _refusal(bootstrap: str, messages: list[str]) -> KafkaAccessRefused | None:
    security = kafka_security.for_bootstrap(bootstrap)
    said = " ".join(messages[-5:])
    if "SaslAuthenticationFailed" in said or "Authentication failed" in said:
        return KafkaAccessRefused(
            f"Kafka at {bootstrap} refused the credentials of user {security.username!r} ({security.mechanism}): "
            f"check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM")
    if "UnsupportedSaslMechanism" in said or "Unsupported SASL mechanism" in said:
        return KafkaAccessRefused(f"Kafka at {bootstrap} does not offer SASL mechanism {security.mechanism}: set "
                                  f"KAFKA_SASL_MECHANISM to one its listener enables")
    if "CERTIFICATE_VERIFY_FAILED" in said:
        why = said.split("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0].strip()
        return KafkaAccessRefused(
            f"the certificate of Kafka at {bootstrap} is not trusted ({why}): KAFKA_SSL_CAFILE must name the CA "
            f"that signed it{f' (now {security.cafile})' if security.cafile else ''}")
    if "WRONG_VERSION_NUMBER" in said or "record layer failure" in said:
        return KafkaAccessRefused(f"Kafka at {bootstrap} does not speak TLS there: is KAFKA_SECURITY_PROTOCOL "
                                  f"({security.protocol}) the listener's?")
    return None


class TopicLayoutError(Exception):
    """A topic exists with another partition count than the app needs (MAGQB_PARTITIONS)."""


async def connect_admin(bootstrap: str, timeout: float) -> AIOKafkaAdminClient:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    next_note = time.monotonic() + 5
    # aiokafka logs every failed attempt at ERROR; during this bounded wait one line every 5 s says it, and
    # what aiokafka said is kept to tell a refusal (credentials, certificate) from a broker that is away.
    aiokafka_log = logging.getLogger("aiokafka")
    level, propagate = aiokafka_log.level, aiokafka_log.propagate
    reasons = _Reasons()
    aiokafka_log.addHandler(reasons)
    aiokafka_log.setLevel(logging.DEBUG)
    aiokafka_log.propagate = False
    try:
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000,
                                        **kafka_security.client_kwargs(bootstrap))
            try:
                await admin.start()
                return admin
            except (KafkaConnectionError, KafkaError, OSError) as exc:
                last = exc
                await admin.close()
                refused = _refusal(bootstrap, reasons.messages)
                if refused is not None:
                    raise refused from None
                if time.monotonic() >= next_note:
                    log.warning("waiting for Kafka at %s (%.0fs left)", bootstrap, deadline - time.monotonic())
                    next_note += 5
                await asyncio.sleep(0.5)
    finally:
        aiokafka_log.removeHandler(reasons)
        aiokafka_log.setLevel(level)
        aiokafka_log.propagate = propagate
    raise BrokerUnavailable(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s ({last})")


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics keep their settings, except a
    finite retention where the app needs its records kept (see `_keep_forever`)."""
    admin = await connect_admin(bootstrap, timeout)
    try:
        specs = await _with_replication(admin, specs)
        existing = set(await admin.list_topics())
        await _check_partitions(admin, [s for s in specs if s.name in existing])
        await _check_replication(admin, bootstrap, [s for s in specs if s.name in existing])
        await _keep_forever(admin, [s for s in specs if s.name in existing and s.config.get("retention.ms") == "-1"])
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        resp = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config) for s in missing]
        )
        created = []
        for name, code, message in resp.topic_errors:
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                raise KafkaError(f"creating topic {name} failed: error {code} {message}")
        await _wait_for_leaders(admin, missing, timeout)
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


def replication_for(brokers: int) -> int:
    """The cluster's replication factor for magqb's topics: three copies where there are three brokers."""
    return max(1, min(3, brokers))


async def cluster_replication(bootstrap: str, configured: int | None, timeout: float) -> int:
    """MAGQB_REPLICATION_FACTOR, else the cluster's (min(3, brokers))."""
    if configured:
        return configured
    admin = await connect_admin(bootstrap, timeout)
    try:
        return replication_for(len((await admin.describe_cluster())["brokers"]))
    finally:
        await admin.close()


async def _with_replication(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> list[TopicSpec]:
    if not any(s.replication_factor == CLUSTER_DEFAULT for s in specs):
        return specs
    rf = replication_for(len((await admin.describe_cluster())["brokers"]))
    return [TopicSpec(s.name, s.partitions, rf, {**durability(rf), **s.config})
            if s.replication_factor == CLUSTER_DEFAULT else s for s in specs]


async def _check_replication(admin: AIOKafkaAdminClient, bootstrap: str, specs: list[TopicSpec]) -> None:
    """A topic made with fewer copies than magqb wants now (a cluster grown from one broker) is not changed by
    itself — that moves data — but said at every start, with the command that does it."""
    if not specs:
        return
    wanted = {s.name: s.replication_factor for s in specs}
    for t in await admin.describe_topics(list(wanted)):
        if t["error_code"] != 0 or not t["partitions"]:
            continue
        have = min(len(p["replicas"]) for p in t["partitions"])
        if have < wanted[t["topic"]]:
            log.warning("topic %s has %d replica(s) of its partitions, magqb wants %d: raise it with "
                        "kafka-reassign-partitions --bootstrap-server %s --reassignment-json-file <plan.json> --execute "
                        "(a plan listing %d brokers per partition; see docs/production.md)", t["topic"], have,
                        wanted[t["topic"]], bootstrap, wanted[t["topic"]])


DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs v1+ config_source: set on the topic itself


async def _keep_forever(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Topics made by an older magqb kept commands and retry rungs 14 days: a realm blocked longer lost
    them. Their retention is lifted, once, keeping every other setting made on the topic (AlterConfigs
    replaces the whole set)."""
    if not specs:
        return
    described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs])
    raise_ = []
    for resp in described:
        for resource in resp.resources:
            name, entries = resource[3], resource[4]
            mine = {e[0]: e[1] for e in entries if len(e) >= 6 and e[3] == DYNAMIC_TOPIC_CONFIG and e[1] is not None}
            # The retention in force: the topic's own, else the broker's default (a finite one counts too).
            effective = next((str(e[1]) for e in entries if e[0] == "retention.ms" and e[1] is not None), "-1")
            if effective != "-1":
                raise_.append((name, mine, effective))
    for name, mine, effective in raise_:
        [resp] = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                            {**mine, "retention.ms": "-1"})])
        errors = [r for r in resp.resources if r[0] != 0]
        if errors:
            log.error("topic %s keeps its records %s ms only and could not be changed (error %s %s): set "
                      "retention.ms=-1 on it (kafka-configs --alter --entity-type topics --entity-name %s "
                      "--add-config retention.ms=-1), or a long realm block loses commands", name, effective,
                      errors[0][0], errors[0][1], name)
            continue
        log.warning("topic %s kept its records %s ms only: now kept until handled and beyond (retention.ms=-1), "
                    "so a long realm block cannot let Kafka delete commands no one handled", name, effective)


async def _check_partitions(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Orders, results and the order-state table are co-partitioned: an order's events and its state
    must live in the same partition number. A topic with another count silently breaks that."""
    if not specs:
        return
    described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([s.name for s in specs])
                 if t["error_code"] == 0}
    wrong = [f"{s.name} has {described[s.name]} (needs {s.partitions})" for s in specs
             if s.name in described and described[s.name] != s.partitions]
    if wrong:
        raise TopicLayoutError(
            f"topics exist with other partition counts than MAGQB_PARTITIONS: {'; '.join(wrong)}. Set "
            f"MAGQB_PARTITIONS to the count they were created with (orders, results and the state table must "
            f"be co-partitioned); changing it means new topics and a replay")


async def _wait_for_leaders(admin: AIOKafkaAdminClient, specs: list[TopicSpec], timeout: float) -> None:
    """A new topic is usable once every partition has a leader. A consumer group that forms
    before that ignores the topic (faust: "Ignoring missing topic") until the next rebalance."""
    deadline = time.monotonic() + timeout
    wanted = {s.name: s.partitions for s in specs}
    while True:
        described = await admin.describe_topics(list(wanted))
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and len(t["partitions"]) >= wanted[t["topic"]]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(wanted):
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"topics {sorted(set(wanted) - ready)} have no leaders after {timeout:.0f}s")
        await asyncio.sleep(0.2)
