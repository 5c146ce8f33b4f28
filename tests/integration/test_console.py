"""The console's locks and its Problems page over HTTP, on the real broker (the audit topic): nobody gets in
without logging in, a form without its CSRF token is refused, logins are throttled, a viewer cannot act, and an
operator's retry is recorded on Kafka and shown on the order's page. The services are the tools' own signatures,
fed fixed data here; tests/e2e/test_console_browser.py drives the whole stack in Chromium."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app import topics
from app.adapters.kafka_admin import ensure_topics
from app.console.audit import AuditLog
from app.console.security import LOGIN_FAILURES_ALLOWED
from app.console.server import Services, make_app
from app.console.users import UserStore
from app.tools.dead_letters import DeadLetterLog
from schemas.dead_letter import Attempt, DeadLetter
from schemas.state import HistoryEntry, OrderState

pytestmark = pytest.mark.kafka
NOW = datetime.now(UTC)
PASSWORD = "correct horse battery"


@pytest.fixture
def prefix() -> Iterator[str]:
    before = topics.PREFIX
    topics.configure(f"con-{uuid.uuid4().hex[:8]}.")
    yield topics.PREFIX
    topics.configure(before)


def parked_letter() -> DeadLetter:
    return DeadLetter(
        id="a1b2c3d4e5f6", order_id="1042", order_ref="000001042", realm_id="9130", command_type="create_document",
        command={}, reason="mapping", order_event={"event_id": "e1", "order": {"entity_id": 1042}},
        attempts=[Attempt(at=NOW, error_class="mapping",
                          message="item SKU-1: no QBO tax code for the 7.7 % rate (add it to [tax.codes] in the "
                                  "mapping file)")])


class Fixed:
    """The tools' service functions with fixed answers, recording what was asked of them."""

    def __init__(self) -> None:
        self.letters = [parked_letter()]
        self.retried: list[list[str]] = []
        self.purged: list[list[str]] = []
        booked = OrderState(status="synced", order_ref="000001001", event_id="e0", qbo_id="7", doc_type="SalesReceipt",
                            doc_number="MAG-000001001", total_amt=Decimal("96.10"), received_at=NOW,
                            history=[HistoryEntry(at=NOW, what="result", detail="SalesReceipt Id=7 created")])
        waiting = OrderState(status="requested", order_ref="000001002", event_id="e2",
                             received_at=NOW - timedelta(hours=2), order={"customer_email": "ann@example.com"})
        parked = OrderState(status="failed", order_ref="000001042", event_id="e1", received_at=NOW)
        self.states = {"1001": booked, "1002": waiting, "1042": parked}

    def services(self, settings: Any) -> Services:
        async def states() -> dict[str, OrderState]:
            return self.states

        async def order_status(wanted: str) -> dict[str, Any] | None:
            st = self.states.get(wanted)
            if st is None:
                return None
            return {"order_id": wanted, "order_ref": st.order_ref, "state": st.status, "later": [], "net": None,
                    "magento_net": None, "updated_at": st.updated_at.isoformat(), "error": st.error,
                    "document": None, "story": [], "dead_letters": []}

        async def dead_letters() -> DeadLetterLog:
            done = {i for batch in self.retried + self.purged for i in batch}
            return DeadLetterLog(list(self.letters), done, set(), 0)

        async def retry(letters: list[DeadLetter]) -> None:
            self.retried.append([d.id for d in letters])

        async def purge(letters: list[DeadLetter]) -> None:
            self.purged.append([d.id for d in letters])

        async def token_info() -> None:
            return None

        return Services(settings=settings, states=states, order_status=order_status, dead_letters=dead_letters,
                        retry=retry, purge=purge, token_info=token_info)


class Settings:
    quickbooks_realm_id = "9130"
    quickbooks_sandbox = True


@pytest.fixture
async def console(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> AsyncIterator[tuple[TestClient, Fixed]]:
    await ensure_topics(kafka_bootstrap, [t for t in topics.app_topics(1, 1) if t.name == topics.CONSOLE_AUDIT])
    users = UserStore(tmp_path / "users.sqlite3")
    await users.add("bea", PASSWORD, "viewer")
    await users.add("otto", PASSWORD, "operator")
    fixed = Fixed()
    app = make_app(fixed.services(Settings()), users, AuditLog(kafka_bootstrap), b"k" * 32)
    async with TestClient(TestServer(app)) as client:
        yield client, fixed


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


async def log_in(client: TestClient, name: str, password: str = PASSWORD, follow: bool = True) -> Any:
    form = await (await client.get("/login")).text()
    return await client.post("/login", data={"name": name, "password": password, "csrf_token": csrf(form),
                                             "next": "/"}, allow_redirects=follow)


@pytest.mark.parametrize("path", ["/", "/orders", "/orders/1001", "/problems"])
async def test_anyone_not_logged_in_is_sent_to_the_login(console: tuple[TestClient, Fixed], path: str) -> None:
    client, _ = console
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login?next=")
    assert "000001001" not in await resp.text()


async def test_a_login_gets_a_sealed_httponly_samesite_cookie_and_the_overview(
        console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    resp = await log_in(client, "bea", follow=False)
    assert resp.status == 302 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "bea" not in cookie
    page = await (await client.get("/")).text()
    assert re.search(r'id="booked-today">1<', page) and re.search(r'id="waiting">1<', page)
    assert re.search(r'id="parked">1<', page) and "000001002" in page  # the oldest order not booked


async def test_a_wrong_password_is_refused_and_after_five_even_the_right_one_waits(
        console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    for _ in range(LOGIN_FAILURES_ALLOWED):
        assert (await log_in(client, "otto", "wrong password!")).status == 401
    resp = await log_in(client, "otto")
    assert resp.status == 429 and "Too many failed logins" in await resp.text()


async def test_a_form_without_its_csrf_token_is_refused(console: tuple[TestClient, Fixed]) -> None:
    client, fixed = console
    await log_in(client, "otto")
    resp = await client.post("/problems/retry", data={"letter": "a1b2c3d4e5f6"})
    assert resp.status == 403
    resp = await client.post("/problems/retry", data={"letter": "a1b2c3d4e5f6", "csrf_token": "forged"})
    assert resp.status == 403 and fixed.retried == []


async def test_a_viewer_sees_the_problem_explained_but_cannot_retry_it(console: tuple[TestClient, Fixed]) -> None:
    client, fixed = console
    await log_in(client, "bea")
    page = await (await client.get("/problems")).text()
    assert "tax code for the 7.7 % rate" in page and '&#34;7.7&#34; = &#34;&lt;QuickBooks TaxCode Id&gt;&#34;' in page
    assert 'class="retry"' not in page  # no buttons for a viewer ...
    resp = await client.post("/problems/retry", data={"letter": "a1b2c3d4e5f6", "csrf_token": csrf(page)})
    assert resp.status == 403 and fixed.retried == []  # ... and no way around them


async def test_an_operators_retry_is_done_recorded_on_kafka_and_shown_on_the_orders_page(
        console: tuple[TestClient, Fixed]) -> None:
    client, fixed = console
    await log_in(client, "otto")
    page = await (await client.get("/problems")).text()
    resp = await client.post("/problems/retry", data={"letter": "a1b2c3d4e5f6", "csrf_token": csrf(page)})
    assert resp.status == 200 and "Done: retried 1." in await resp.text()
    assert fixed.retried == [["a1b2c3d4e5f6"]]
    order = await (await client.get("/orders/1042")).text()
    assert re.search(r"otto \(operator\): retry a1b2c3d4e5f6", order), order


async def test_a_purge_asks_first(console: tuple[TestClient, Fixed]) -> None:
    client, fixed = console
    await log_in(client, "otto")
    page = await (await client.get("/problems")).text()
    token = csrf(page)
    asked = await client.post("/problems/purge", data={"reason": "mapping", "csrf_token": token})
    assert asked.status == 200 and "Purge 1 problem?" in await asked.text() and fixed.purged == []
    await client.post("/problems/purge", data={"reason": "mapping", "confirm": "yes", "csrf_token": token})
    assert fixed.purged == [["a1b2c3d4e5f6"]]


async def test_search_goes_straight_to_an_order_named_exactly_and_lists_the_rest(
        console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    await log_in(client, "bea")
    resp = await client.get("/orders", params={"q": "000001001"}, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/orders/1001"
    listed = await (await client.get("/orders", params={"q": "ann@"})).text()
    assert "000001002" in listed and "000001001" not in listed
    failed = await (await client.get("/orders", params={"state": "failed"})).text()
    assert "000001042" in failed and "000001002" not in failed


async def test_after_logging_in_it_goes_only_to_a_page_of_its_own(console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    form = await (await client.get("/login")).text()
    resp = await client.post("/login", data={"name": "bea", "password": PASSWORD, "csrf_token": csrf(form),
                                             "next": "//evil.example.com/x"}, allow_redirects=False)
    assert resp.headers["Location"] == "/"


async def test_a_viewer_can_do_nothing_on_any_action_route(console: tuple[TestClient, Fixed]) -> None:
    client, fixed = console
    await log_in(client, "bea")
    token = csrf(await (await client.get("/problems")).text())
    for path, data in (("/problems/purge", {"reason": "mapping", "confirm": "yes"}),
                       ("/reconcile/fix", {"since": "2026-12-01", "until": "2026-12-02"}),
                       ("/quickbooks/connect", {})):
        resp = await client.post(path, data={**data, "csrf_token": token}, allow_redirects=False)
        assert resp.status == 403, path
    resp = await client.get("/quickbooks/callback", params={"code": "c", "state": "s", "realmId": "1"},
                            allow_redirects=False)
    assert resp.status == 403 and fixed.purged == []


async def test_logging_out_ends_the_session_a_copied_cookie_included(console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    await log_in(client, "otto")
    copied = {c.key: c.value for c in client.session.cookie_jar}
    token = csrf(await (await client.get("/")).text())
    await client.post("/logout", data={"csrf_token": token})
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies(copied)  # the cookie as it was before the logout
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login")


async def test_a_burst_of_parallel_logins_cannot_slip_under_the_limit(console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    form = await (await client.get("/login")).text()
    token = csrf(form)

    async def attempt() -> int:
        resp = await client.post("/login", data={"name": "otto", "password": "wrong password!", "csrf_token": token,
                                                 "next": "/"}, allow_redirects=False)
        return resp.status

    import asyncio

    statuses = await asyncio.gather(*(attempt() for _ in range(12)))
    assert statuses.count(401) <= LOGIN_FAILURES_ALLOWED and statuses.count(429) >= 12 - LOGIN_FAILURES_ALLOWED


async def test_another_host_name_is_refused_and_every_answer_carries_the_headers(
        console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    resp = await client.get("/login", headers={"Host": "rebound.attacker.example"})
    assert resp.status == 421
    redirect = await client.get("/", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in redirect.headers["Content-Security-Policy"]


async def test_reconcile_takes_a_quarter_at_most(console: tuple[TestClient, Fixed]) -> None:
    client, _ = console
    await log_in(client, "bea")
    resp = await client.get("/reconcile", params={"since": "2026-01-01", "until": "2026-12-01"})
    assert resp.status == 400 and "92 days" in await resp.text()
