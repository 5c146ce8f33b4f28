"""The four services as real processes on real sockets: Kafka (from `make test`), the QBO
sandbox, the ingress and a worker. One stack per session; tests use their own order ids."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import TEST_ENV, free_port
from tests.e2e.harness import PollTimeout, Stack, http, poll, start, stop


@pytest.fixture(scope="session")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("stack")
    sandbox_port, ingress_port, web_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAGQB_", "QUICKBOOKS_", "MAGENTO_"))},
        **TEST_ENV,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "QUICKBOOKS_API_BASE_URL": f"http://127.0.0.1:{sandbox_port}",
        "QUICKBOOKS_TOKEN_URL": f"http://127.0.0.1:{sandbox_port}/oauth2/v1/tokens/bearer",
        "MAGQB_DATA_DIR": str(logs / "data"),
        "MAGQB_APP_ID": f"magqb-e2e-{uuid.uuid4().hex[:8]}",
        # The sandbox's quotas are off here, so the worker's pacer is too (the chaos suite tests both).
        "MAGQB_QBO_REQUESTS_PER_MINUTE": "0",
        "MAGQB_QBO_REQUESTS_PER_SECOND": "0",
    }
    s = Stack(env, f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{sandbox_port}",
              f"http://127.0.0.1:{web_port}", logs)
    try:
        # QBO's quotas are off here: pacing the dispatcher within them is issue #4's chaos suite.
        start(s, "sandbox", "sandbox", "--port", str(sandbox_port), "--quota-per-second", "0",
               "--quota-per-minute", "0")
        start(s, "ingress", "ingress", "--port", str(ingress_port))
        start(s, "worker", "worker", "--web-port", str(web_port))

        def ready() -> bool:
            for name, proc in s.procs.items():
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}:\n{s.log_tail(name)}")
            return (http("GET", f"{s.ingress_url}/readyz")[0] == 200
                    and http("GET", f"{s.sandbox_url}/_sandbox/stats")[0] == 200
                    and "worker ready" in s.log_tail("worker", 200))

        try:
            poll(ready, 90, "the stack to be ready")
        except PollTimeout:
            tails = "\n".join(f"--- {n}.log ---\n{s.log_tail(n, 25)}" for n in s.procs)
            pytest.fail(f"the stack did not become ready in 90s:\n{tails}")
        yield s
    finally:
        for proc in reversed(list(s.procs.values())):
            stop(proc)
