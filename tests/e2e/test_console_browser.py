"""Issue 21: the console in a real browser (Debian's headless Chromium through its chromedriver), on the real
broker, sandbox, ingress and worker. Steps run in order on one stack: a viewer finds an order; an order parked
for an unmapped tax code is found on Problems, the mapping fixed, retried from the page and seen booked; a
viewer's retry and a form without its CSRF token are refused; nobody gets a page without logging in; an
operator connects the QuickBooks company through the consent page and lands back on the console.

Screenshots of each page land in the test's directory, or in docs/screenshots/ with MAGQB_SCREENSHOTS=1 (how the
guide's pictures are made)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.adapters.token_topic import new_key
from tests.conftest import free_port, make_order
from tests.e2e.chaos import ChaosPlan, ChaosRun
from tests.e2e.harness import MAGQB, http, poll, start
from tests.webdriver import Browser

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "a console password"
MAPPING = """
[tax]
mode = "global"
prices = "TaxExcluded"

[tax.codes]
"0" = "7"
"""


class Console:
    def __init__(self, run: ChaosRun, url: str, browser: Browser, shots: Path, mapping: Path) -> None:
        self.run, self.url, self.browser, self.shots, self.mapping = run, url, browser, shots, mapping

    def log_in(self, name: str) -> None:
        b = self.browser
        b.open(f"{self.url}/login")
        b.type("#name", name)
        b.type("#password", PASSWORD)
        b.click("#login")
        b.wait_for(lambda: f"{name} (" in b.source, 15, f"{name} to be logged in")

    def log_out(self) -> None:
        self.browser.click("header form.who button")
        self.browser.wait_for(lambda: "/login" in self.browser.url, 15, "the login page")

    def reload_until(self, path: str, check: str, timeout: float, what: str) -> None:
        """Open the page again until its source shows `check` (what a bookkeeper does with F5)."""
        def shown() -> bool:
            self.browser.open(self.url + path)
            return check in self.browser.source

        self.browser.wait_for(shown, timeout, what)

    def shot(self, name: str) -> None:
        self.browser.screenshot(self.shots / f"{name}.png")


def placed_now() -> str:
    """Magento's created_at of an order placed now (the reconcile step reconciles today)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def taxed_order(entity_id: int) -> dict[str, Any]:
    """An order with a 10 % rate the mapping file has no QuickBooks tax code for (yet)."""
    order = make_order(entity_id, "tia@example.com", [("MUG-10", 1, "100.00")], created_at=placed_now())
    order["items"][0].update({"tax_percent": 10, "tax_amount": 10})
    order.update({"tax_amount": 10, "grand_total": 115})
    return order


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Console]:
    subprocess.run([str(REPO / "ops/browser/install")], check=True, timeout=900)
    workdir = tmp_path_factory.mktemp("console")
    mapping = workdir / "mapping.toml"
    mapping.write_text(MAPPING)
    run = ChaosRun(ChaosPlan(orders=0, fail_rate=0.0, throttle_rate=0.0, commit_then_fail_rate=0.0, token_ttl=3600,
                             # The token shared as in production (the sealed topic): the console sees the workers'.
                             partitions=2, extra_env={"MAGQB_MAPPING_FILE": str(mapping), "MAGQB_TOKEN_KEY": new_key()},
                             sandbox_args=["--tax-code", "7=Zero rate", "--tax-code", "8=Ten percent"]), workdir)
    run.start()
    assert run.stack is not None
    port = free_port()
    env = {"MAGQB_DATA_DIR": str(workdir / "console-data"),
           "MAGQB_CONSOLE_METRICS_URLS": f"http://127.0.0.1:{run.web_ports['worker0']}/metrics",
           "QUICKBOOKS_AUTHORIZE_URL": f"{run.stack.sandbox_url}/connect/oauth2"}  # its consent answers at once
    for name, role in (("vera", "viewer"), ("otto", "operator")):
        subprocess.run([MAGQB, "console", "add-user", name, "--role", role], input=PASSWORD + "\n", text=True,
                       env={**run.stack.env, **env}, check=True, capture_output=True, timeout=60)
    start(run.stack, "console", "console", "serve", "--port", str(port), env=env)
    url = f"http://127.0.0.1:{port}"
    poll(lambda: http("GET", f"{url}/healthz")[0] == 200, 60, lambda: "the console:\n" + run.stack.log_tail("console"))
    shots = REPO / "docs/screenshots" if os.environ.get("MAGQB_SCREENSHOTS") else workdir / "screenshots"
    browser = Browser(workdir)
    try:
        yield Console(run, url, browser, shots, mapping)
    finally:
        browser.quit()
        run.stop()
        run.cleanup()


def test_1_nobody_gets_a_page_without_logging_in(console: Console) -> None:
    b = console.browser
    for path in ("/", "/orders", "/orders/1", "/problems"):
        b.open(console.url + path)
        b.wait_for(lambda: "/login" in b.url, 15, f"{path} to send to the login")
        assert "Log in" in b.source
    console.shot("login")


def test_2_a_viewer_finds_an_order_by_its_increment_id(console: Console) -> None:
    run = console.run
    order = make_order(71001, "vic@example.com", [("MUG-0", 2, "12.50")], created_at=placed_now())
    run.orders.append(order)
    run.post(order)
    poll(lambda: run.created("SalesReceipt") >= 1, 90, "the order booked")
    b = console.browser
    console.log_in("vera")
    realm = run.stack.env["QUICKBOOKS_REALM_ID"]
    assert int(b.text(f"#requests-{realm}")) >= 3  # customer, item, receipt: QuickBooks' quota at work
    console.shot("overview")
    b.open(f"{console.url}/orders")
    b.type("#q", "000071001")
    b.click("#search")
    b.wait_for(lambda: "/orders/71001" in b.url, 15, "the order's page")
    assert b.text("#order-ref") == "000071001" and b.text("#order-state") == "synced"
    assert "SalesReceipt" in b.text("#document") and b.text("#net-qbo") == "30.00"
    console.shot("order")
    b.open(f"{console.url}/orders?q=vic%40example")  # booked: found through its customer's e-mail
    assert "000071001" in b.text("#orders")


def test_3_a_viewer_sees_a_problem_explained_but_cannot_retry_it(console: Console) -> None:
    run = console.run
    order = taxed_order(71002)
    run.post(order)
    b = console.browser
    console.reload_until("/problems", "reason-mapping", 90, "the parked order on Problems")
    assert "tax code for the 10 % rate" in b.text("#reason-mapping")
    assert "class=\"retry\"" not in b.source  # no buttons for a viewer
    # ... and no way around them: the same form, posted by hand with the page's own CSRF token.
    token = b.script("return document.querySelector('input[name=csrf_token]').value")
    status = b.script("""
        const body = new URLSearchParams({csrf_token: arguments[0], reason: 'mapping'});
        return fetch('/problems/retry', {method: 'POST', body}).then(r => r.status);""", token)
    assert status == 403
    console.log_out()


def test_4_a_form_without_its_csrf_token_is_refused(console: Console) -> None:
    b = console.browser
    console.log_in("otto")
    b.open(f"{console.url}/problems")
    status = b.script("""
        const body = new URLSearchParams({reason: 'mapping'});
        return fetch('/problems/retry', {method: 'POST', body}).then(r => r.status);""")
    assert status == 403


def test_5_the_mapping_fixed_a_retry_from_the_page_books_the_parked_order(console: Console) -> None:
    run, b = console.run, console.browser
    b.open(f"{console.url}/problems")
    b.wait_for(lambda: "reason-mapping" in b.source, 30, "the problem")
    console.shot("problems")
    console.mapping.write_text(MAPPING + '"10" = "8"\n')  # the line the page named
    run.term_worker("worker0")  # the workers read the mapping file when they start
    run.start_worker("worker0")
    poll(lambda: "worker ready" in run.stack.log_tail("worker0", 50), 90, "the worker back")
    b.click("#reason-mapping button.retry")
    b.wait_for(lambda: "Done: retried 1." in b.source, 30, "the retry to be taken")
    poll(lambda: run.created("SalesReceipt") >= 2, 120,
         lambda: "the retried order booked:\n" + run.stack.log_tail("worker0", 30))
    console.reload_until("/orders/71002", 'id="order-state">synced', 60, "the order's page to say booked")
    assert b.text("#net-qbo") == "115.00"
    assert "otto (operator): retry" in b.text("#actions")  # the action, on the order's page
    console.shot("order-retried")


def test_6_an_operator_connects_quickbooks_and_lands_back_on_the_console(console: Console) -> None:
    b = console.browser
    b.open(f"{console.url}/quickbooks")
    assert b.text("#token-state") == "connected"  # the workers' token, from the sealed topic
    assert "connected-at" not in b.source  # it came from the environment, never through a consent
    assert b.text("#connect") == "Reconnect QuickBooks"
    b.click("#connect")  # → the sandbox's consent page (Intuit's, in production) → back with a code
    b.wait_for(lambda: "/quickbooks?done=connected" in b.url, 30, "the console after the consent")
    assert b.text("#token-state") == "connected" and b.text("#connected-at") and b.text("#hard-expiry")
    assert "RT1-" not in b.source and "eyJ" not in b.source  # no token on the page
    console.shot("quickbooks")
    b.open(f"{console.url}/quickbooks/callback?code=forged&state=forged&realmId=1")  # a callback nobody asked for
    assert "does not match" in b.text("#error")


def test_7_reconcile_finds_a_document_gone_from_quickbooks_and_its_fix_books_it_again(console: Console) -> None:
    run, b = console.run, console.browser
    assert run.stack is not None
    today = run.stack.query("SELECT * FROM SalesReceipt WHERE DocNumber = 'MAG-000071001'")["SalesReceipt"][0]
    b.open(f"{console.url}/reconcile?since={time.strftime('%Y-%m-%d', time.gmtime())}")
    assert "the books match" in b.text("#verdict")
    status, _ = run.stack.api("POST", "salesreceipt", {"Id": today["Id"], "SyncToken": today["SyncToken"]},
                              operation="delete")  # someone deleted it in QuickBooks
    assert status == 200
    b.click("#run")
    b.wait_for(lambda: "1 missing" in b.source, 30, "the finding")
    assert "000071001" in b.text("#findings") and "QuickBooks has no document" in b.text("#findings")
    csv = b.script("return fetch(document.querySelector('#csv').href).then(r => r.text())")
    assert csv.splitlines()[0] == "kind,order_id,order_ref,doc_number,magento_total,qbo_total,qbo_ids,detail"
    assert csv.splitlines()[1].startswith("missing,71001,000071001,MAG-000071001,30.00,")
    console.shot("reconcile")
    b.click("#fix")
    b.wait_for(lambda: "re-drove 1" in b.source, 30, "the fix to be taken")
    poll(lambda: run.stack.count("SalesReceipt", "DocNumber = 'MAG-000071001'") == 1, 120,
         lambda: "the order booked again:\n" + run.stack.log_tail("worker0", 30))
    b.click("#run")
    b.wait_for(lambda: "the books match" in b.source, 30, "the books to match again")
    b.open(f"{console.url}/orders/71001")
    assert "otto (operator): fix reconcile" in b.text("#actions")
