"""Two installations on one Kafka cluster (MAGQB_TOPIC_PREFIX): the session's stack and one with a prefix share
the broker and never read each other's orders, commands, results or consumer group."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import TEST_ENV, free_port, make_order
from tests.e2e.harness import Stack, http, poll, start, stop

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def prefixed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("prefixed")
    sandbox_port, ingress_port, web_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_"))},
        **TEST_ENV,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MAGQB_TOPIC_PREFIX": f"shop2-{uuid.uuid4().hex[:6]}.",
        "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer",
        "MAGQB_DATA_DIR": str(logs / "data"),
        "MAGQB_QBO_REQUESTS_PER_MINUTE": "0", "MAGQB_QBO_REQUESTS_PER_SECOND": "0",
        # MAGQB_APP_ID is left at its default, as the session's stack's is not: the prefix alone keeps them apart.
    }
    s = Stack(env, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{sandbox_port}",
              f"http://127.0.0.1:{web_port}", logs)
    try:
        start(s, "sandbox", "sandbox", "--port", str(sandbox_port), "--quota-per-second", "0",
              "--quota-per-minute", "0")
        start(s, "ingress", "ingress", "--port", str(ingress_port))
        start(s, "worker", "worker", "--web-port", str(web_port))
        poll(lambda: http("GET", f"{s.ingress_url}/readyz")[0] == 200 and "worker ready" in s.log_tail("worker", 200),
             120, lambda: "the prefixed stack:\n" + s.log_tail("worker"))
        yield s
    finally:
        for proc in reversed(list(s.procs.values())):
            stop(proc)


async def _names(bootstrap: str) -> tuple[list[str], list[str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics(), [g[0] for g in await admin.list_consumer_groups()]
    finally:
        await admin.close()


def test_two_installations_on_one_cluster_book_only_their_own_orders(stack: Stack, prefixed: Stack,
                                                                     kafka_bootstrap: str) -> None:
    prefix = prefixed.env["MAGQB_TOPIC_PREFIX"]
    base = 950_000 + int(uuid.uuid4().int % 10_000) * 10
    mine = [make_order(base + n, f"shop2.{base + n}@example.com", [("SHOP2-1", 1, "10.00")]) for n in range(2)]
    theirs = make_order(base + 5, f"shop1.{base + 5}@example.com", [("SHOP1-1", 1, "10.00")])
    for order in mine:
        assert prefixed.post_order(order)[0] == 202
    assert stack.post_order(theirs)[0] == 202
    poll(lambda: prefixed.count("SalesReceipt", f"DocNumber = 'MAG-{mine[1]['increment_id']}'") == 1
         and prefixed.count("SalesReceipt", f"DocNumber = 'MAG-{mine[0]['increment_id']}'") == 1, 90,
         lambda: "the prefixed stack's orders:\n" + prefixed.log_tail("worker"))
    poll(lambda: stack.count("SalesReceipt", f"DocNumber = 'MAG-{theirs['increment_id']}'") == 1, 90,
         "the session stack's order")
    # Each company has only its own installation's documents: the prefixed one books just its two orders (the
    # session's broker holds thousands of others on the unprefixed topics).
    assert prefixed.sandbox_stats()["documents_created"] == {"Customer": 2, "Item": 1, "SalesReceipt": 2}
    assert stack.count("SalesReceipt", f"DocNumber = 'MAG-{mine[0]['increment_id']}'") == 0
    topics, groups = asyncio.run(_names(kafka_bootstrap))
    for name in ("magento.orders", "qbo.commands", "qbo.results", "qbo.dead-letter", "qbo.retry.30s"):
        assert prefix + name in topics and name in topics
    assert f"{prefix}magqb" in groups and f"{prefix}magqb-order_state-changelog" in topics
