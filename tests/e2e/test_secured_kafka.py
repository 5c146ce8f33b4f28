"""A secured cluster, as managed Kafka offers it: every magqb client over SASL_SSL with SCRAM-SHA-512, against a
broker with a SASL_SSL listener (ops/kafka/start), its certificate signed by a CA this test makes. The right
credentials book an order; a wrong password or a certificate nobody trusts stop start-up with one line."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_ENV, blueprint_order, free_port
from tests.e2e.harness import REPO, Stack, http, magqb, poll, start, stop
from tests.tls_material import write_broker_material

pytestmark = pytest.mark.kafka
PASSWORD = "scram-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, str]]]:
    logs = tmp_path_factory.mktemp("secured")
    ca, keystore, stranger = write_broker_material(logs / "tls")
    port, controller, sasl_port = free_port(), free_port(), free_port()
    kafka_env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller),
                 "KAFKA_DATA_DIR": str(logs / "kafka"), "KAFKA_SASL_SSL_PORT": str(sasl_port),
                 "KAFKA_SSL_KEYSTORE_PEM": str(keystore), "KAFKA_SCRAM_USERS": f"magqb:{PASSWORD}"}
    subprocess.run([str(REPO / "ops/kafka/start")], env=kafka_env, check=True, capture_output=True, timeout=180)
    sandbox_port, ingress_port, web_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_", "KAFKA_"))},
        **TEST_ENV,
        # Only the secured listener: the plaintext one is the broker's own (inter-broker, readiness).
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{sasl_port}", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "magqb", "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CAFILE": str(ca),
        "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer",
        "MAGQB_APP_ID": f"magqb-secured-{uuid.uuid4().hex[:8]}", "MAGQB_DATA_DIR": str(logs / "data"),
        "MAGQB_QBO_REQUESTS_PER_MINUTE": "0", "MAGQB_QBO_REQUESTS_PER_SECOND": "0",
        "MAGQB_KAFKA_CONNECT_TIMEOUT": "20",
    }
    s = Stack(env, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{sandbox_port}",
              f"http://127.0.0.1:{web_port}", logs)
    try:
        start(s, "sandbox", "sandbox", "--port", str(sandbox_port), "--quota-per-second", "0", "--quota-per-minute",
              "0")
        start(s, "ingress", "ingress", "--port", str(ingress_port))
        start(s, "worker", "worker", "--web-port", str(web_port))
        poll(lambda: http("GET", f"{s.ingress_url}/readyz")[0] == 200 and "worker ready" in s.log_tail("worker", 200),
             120, lambda: "the secured stack:\n" + s.log_tail("ingress") + "\n" + s.log_tail("worker"))
        yield s, {"stranger": str(stranger)}
    finally:
        for proc in reversed(list(s.procs.values())):
            stop(proc)
        subprocess.run([str(REPO / "ops/kafka/stop")], env=kafka_env, capture_output=True, timeout=90)


def test_every_client_over_sasl_ssl_books_an_order_and_the_tools_read_it(secured) -> None:
    stack, _ = secured
    order = {**blueprint_order(), "entity_id": 4242, "increment_id": "000004242"}
    assert stack.post_order(order)[0] == 202
    poll(lambda: stack.count("SalesReceipt", "DocNumber = 'MAG-000004242'") == 1, 90,
         lambda: "the order booked over SASL_SSL:\n" + stack.log_tail("worker"))
    status = magqb(stack, "status", "4242")  # a tool: reads the changelog and the log over the same listener
    assert status.returncode == 0 and "synced" in status.stdout, status.stdout + status.stderr
    assert PASSWORD not in stack.log_tail("worker", 2000) + stack.log_tail("ingress", 2000) + status.stdout


@pytest.mark.parametrize(("setting", "value", "said"), [
    ("KAFKA_SASL_PASSWORD", "not-the-password", "refused the credentials of user 'magqb' (SCRAM-SHA-512)"),
    ("KAFKA_SSL_CAFILE", "stranger", "is not trusted (self-signed certificate in certificate chain)"),
    ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-1", "KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
], ids=["wrong-password", "untrusted-certificate", "unknown-mechanism"])
def test_a_refused_connection_stops_start_up_with_one_clear_line(secured, tmp_path: Path, setting: str, value: str,
                                                                  said: str) -> None:
    stack, files = secured
    for command in (["worker", "--web-port", str(free_port())], ["ingress", "--port", str(free_port())]):
        done = subprocess.run([str(REPO / ".venv/bin/magqb"), *command], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, env={**stack.env, setting: files.get(value, value),
                                               "MAGQB_DATA_DIR": str(tmp_path / "data")})
        assert done.returncode == 2, done.stderr
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and said in lines[0], done.stderr
        assert "Traceback" not in done.stderr
        assert PASSWORD not in done.stderr and "not-the-password" not in done.stderr  # a secret is never said
