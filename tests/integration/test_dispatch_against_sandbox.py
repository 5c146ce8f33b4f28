"""The dispatcher's QBO calls against the sandbox over HTTP: idempotent resolution, tokens, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from app import jsonutil
from app.adapters.oauth import TokenManager
from app.adapters.qbo_client import QboClient
from app.adapters.realm_gate import RealmGate
from app.adapters.token_store import TokenStore
from app.dispatch import Dispatcher, GiveUp, RealmBlocked, RetryLater
from app.domain import request_ids
from app.domain.circuit import CircuitBreaker
from app.domain.mapping import MappingConfig, ResolvedRefs, StoreNumbers, customer_need, map_order
from app.domain.pacing import Pacer
from schemas.commands import CreateDocument, EnsureCustomer, EnsureItem
from schemas.events import CustomerResolved, DocumentCreated, ItemResolved
from schemas.magento import MagentoOrder
from tests.conftest import blueprint_order
from tests.integration.conftest import REALM, RunningSandbox

COMMON = {"order_id": "100000001", "order_ref": "100000001", "realm_id": REALM}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_dispatcher(sb: RunningSandbox, session: aiohttp.ClientSession, data: Path) -> tuple[Dispatcher, TokenManager]:
    store = TokenStore(data / "tokens.sqlite3")
    tokens = TokenManager(session, sb.token_url, sb.config.client_id, SecretStr(sb.config.client_secret), REALM,
                          store, SecretStr(sb.config.refresh_token))
    client = QboClient(session, sb.url, REALM, tokens)
    return Dispatcher(client), tokens


def ensure_customer(email: str, name: str) -> EnsureCustomer:
    return EnsureCustomer(**COMMON, request_id=request_ids.customer_request_id(REALM, email), email=email,
                          display_name=name, given_name=name.split()[0])


async def test_customer_is_resolved_once_across_fresh_dispatchers(qbo_sandbox, session, tmp_path) -> None:
    first, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    second, _ = make_dispatcher(qbo_sandbox, session, tmp_path)  # a restarted worker: empty caches
    cmd = ensure_customer("o'brien@example.com", "Sean O'Brien")
    a = await first.handle(cmd)
    b = await second.handle(cmd)
    assert isinstance(a, CustomerResolved) and isinstance(b, CustomerResolved)
    assert (a.created, b.created) == (True, False)
    assert a.customer_id == b.customer_id
    assert qbo_sandbox.sandbox.created["Customer"] == 1


async def test_duplicate_display_name_of_the_same_customer_is_reused(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    existing = qbo_sandbox.sandbox.company.create(
        "Customer", {"DisplayName": "Jane Doe", "PrimaryEmailAddr": {"Address": "Jane.Doe@example.com"}})
    # Found by e-mail first; this is the path where an earlier create committed under another requestid.
    dispatcher._customers.clear()
    result = await dispatcher._create_customer(ensure_customer("jane.doe@example.com", "Jane Doe"), "Jane Doe",
                                               "mq-test-1")
    assert (result[0]["Id"], result[1]) == (existing["Id"], False)


async def test_a_namesake_gets_a_disambiguated_display_name(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    other = qbo_sandbox.sandbox.company.create(
        "Customer", {"DisplayName": "Jane Doe", "PrimaryEmailAddr": {"Address": "jane@elsewhere.example"}})
    result = await dispatcher.handle(ensure_customer("jane.doe@example.com", "Jane Doe"))
    assert isinstance(result, CustomerResolved) and result.created
    assert result.customer_id != other["Id"]
    assert result.display_name == "Jane Doe (jane.doe@example.com)"
    # A restarted worker finds the same customer again (by e-mail), creating nothing.
    again, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    second = await again.handle(ensure_customer("jane.doe@example.com", "Jane Doe"))
    assert isinstance(second, CustomerResolved) and (second.customer_id, second.created) == (result.customer_id, False)
    assert qbo_sandbox.sandbox.created["Customer"] == 1  # over the API; the namesake was there before
    assert len(qbo_sandbox.sandbox.company.rows("Customer")) == 2


async def test_guests_share_one_customer_under_the_single_guest_policy(qbo_sandbox, session, tmp_path) -> None:
    cfg = MappingConfig(guest_policy="single")
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    ids = set()
    for email in ("a@guest.example", "b@guest.example"):
        order = MagentoOrder.model_validate({**blueprint_order(), "customer_email": email, "customer_is_guest": 1,
                                             "customer_id": None})
        need = customer_need(order, cfg)
        cmd = EnsureCustomer(**COMMON, request_id=request_ids.customer_request_id(REALM, need.key), email=need.email,
                             key=need.key, display_name=need.display_name)
        fresh, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
        result = await fresh.handle(cmd)
        assert isinstance(result, CustomerResolved) and result.key == "guest:web store guest"
        ids.add(result.customer_id)
    assert len(ids) == 1 and qbo_sandbox.sandbox.created["Customer"] == 1
    [row] = qbo_sandbox.sandbox.company.rows("Customer")
    assert row["DisplayName"] == "Web Store Guest" and "PrimaryEmailAddr" not in row


async def test_items_and_document_once_even_when_an_earlier_attempt_committed(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001")
    assert qbo_sandbox.sandbox.created["Item"] == 2  # Shipping exists in a new company
    # An earlier attempt committed but its answer was lost: the document already exists.
    qbo_sandbox.sandbox.company.create("SalesReceipt", cmd.document.to_qbo())
    fresh, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    result = await fresh.handle(cmd)
    assert isinstance(result, DocumentCreated)
    assert (result.created, result.doc_number, result.total_amt) == (False, "MAG-100000001", Decimal("53.60"))
    assert len(qbo_sandbox.sandbox.company.rows("SalesReceipt")) == 1


async def _booked_order_command(sb: RunningSandbox, dispatcher: Dispatcher, increment_id: str,
                                cfg: MappingConfig | None = None, **order: Any) -> CreateDocument:
    """The blueprint order's CreateDocument, its customer and items resolved through `dispatcher`."""
    cust = await dispatcher.handle(ensure_customer("jane.doe@example.com", "Jane Doe"))
    assert isinstance(cust, CustomerResolved)
    ids = {}
    for name in ("PROD001", "PROD002", "Shipping"):
        res = await dispatcher.handle(EnsureItem(**COMMON, request_id=request_ids.item_request_id(REALM, name),
                                                 name=name, sku=name, income_account_id="79"))
        assert isinstance(res, ItemResolved)
        ids[name] = res.item_id
    order = MagentoOrder.model_validate({**blueprint_order(), "increment_id": increment_id, **order})
    mapped = map_order(order, ResolvedRefs(cust.customer_id, cust.display_name, ids), cfg or MappingConfig())
    body = jsonutil.dumps(mapped.document.to_qbo())
    return CreateDocument(**{**COMMON, "order_ref": increment_id, "order_id": order.key, "store_id": order.store_id},
                          request_id=request_ids.document_request_id(REALM, "SalesReceipt",
                                                                     mapped.document.DocNumber, body),
                          doc_type="SalesReceipt", document=mapped.document, magento_grand_total=order.grand_total)


async def test_a_doc_number_held_by_another_orders_document_is_never_adopted(qbo_sandbox, session,
                                                                            tmp_path) -> None:
    """Two orders whose DocNumbers coincide (or a person who typed ours): the holder's PrivateNote does not
    name this order, so this order is not marked booked with it — it is given up as docnumber_taken."""
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001")
    stray = qbo_sandbox.sandbox.company.create("SalesReceipt", {
        **cmd.document.to_qbo(), "PrivateNote": "Magento Order ID: 1000000012 (another order)"})
    result = await dispatcher.handle(cmd)
    assert isinstance(result, GiveUp) and result.error_class == "docnumber_taken"
    assert f"SalesReceipt Id={stray['Id']}" in result.message and "MAG-100000001" in result.message
    assert len(qbo_sandbox.sandbox.company.rows("SalesReceipt")) == 1  # nothing created, nothing adopted


async def test_two_stores_orders_with_one_increment_id_are_two_orders(qbo_sandbox, session, tmp_path) -> None:
    """Store 2's order 100000001 is not store 1's: it is parked naming the holder and the mapping line
    that gives store 2 numbers of its own; with that line it is booked under its store's number."""
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    first = await _booked_order_command(qbo_sandbox, dispatcher, "100000001", entity_id=501, store_id=1)
    booked = await dispatcher.handle(first)
    assert isinstance(booked, DocumentCreated) and booked.created
    second = await _booked_order_command(qbo_sandbox, dispatcher, "100000001", entity_id=502, store_id=2)
    assert second.document.DocNumber == first.document.DocNumber == "MAG-100000001"
    result = await dispatcher.handle(second)
    assert isinstance(result, GiveUp) and result.error_class == "docnumber_taken"
    assert "it is order 100000001 of another store (store 1, entity 501)" in result.message
    assert '[stores.2] doc_number_prefix = "..."), then `magqb dlq retry`' in result.message
    assert len(qbo_sandbox.sandbox.company.rows("SalesReceipt")) == 1  # not adopted, nothing created

    own = MappingConfig(stores={2: StoreNumbers(doc_number_prefix="S2-")})
    retried = await _booked_order_command(qbo_sandbox, dispatcher, "100000001", own, entity_id=502, store_id=2)
    result = await dispatcher.handle(retried)
    assert isinstance(result, DocumentCreated) and result.created
    docs = {r["DocNumber"]: r["PrivateNote"] for r in qbo_sandbox.sandbox.company.rows("SalesReceipt")}
    assert docs == {"MAG-100000001": "Magento Order ID: 100000001 [store 1, entity 501]",
                    "S2-100000001": "Magento Order ID: 100000001 [store 2, entity 502]"}


async def test_a_document_an_older_magqb_booked_is_still_this_orders(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001", entity_id=501, store_id=1)
    old = qbo_sandbox.sandbox.company.create("SalesReceipt", {**cmd.document.to_qbo(),
                                                             "PrivateNote": "Magento Order ID: 100000001"})
    result = await dispatcher.handle(cmd)
    assert isinstance(result, DocumentCreated) and (result.qbo_id, result.created) == (old["Id"], False)


async def test_a_doc_number_held_by_another_kind_of_form_names_it(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001")
    invoice = qbo_sandbox.sandbox.company.create("Invoice", {**cmd.document.to_qbo(), "PrivateNote": "by hand"})
    result = await dispatcher.handle(cmd)
    assert isinstance(result, GiveUp) and result.error_class == "docnumber_taken"
    assert result.fault is not None and result.fault["code"] == "6140"
    assert f"TxnId={invoice['Id']}" in result.message


async def test_a_document_of_this_order_found_by_its_doc_number_is_adopted(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001")
    ours = qbo_sandbox.sandbox.company.create("SalesReceipt", cmd.document.to_qbo())  # an attempt whose answer was lost
    result = await dispatcher.handle(cmd)
    assert isinstance(result, DocumentCreated) and (result.qbo_id, result.created) == (ours["Id"], False)


async def test_an_inactive_cached_customer_is_reported_as_a_stale_reference(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001")
    company = qbo_sandbox.sandbox.company
    customer = company.get("Customer", cmd.document.CustomerRef.value)
    assert customer is not None
    company.update("Customer", {"Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True,
                                "Active": False})
    result = await dispatcher.handle(cmd)
    assert isinstance(result, GiveUp) and result.error_class == "stale_reference"
    assert result.fault is not None and result.fault["code"] == "2500"
    # Resolved again (fresh): QBO no longer lists the inactive customer, its name is free: a new one.
    again = await dispatcher.handle(ensure_customer("jane.doe@example.com", "Jane Doe").model_copy(
        update={"fresh": True, "request_id": "mq-cust-fresh-1"}))
    assert isinstance(again, CustomerResolved) and again.created and again.customer_id != customer["Id"]
    assert company.get("Customer", customer["Id"])["DisplayName"] == "Jane Doe (deleted)"


async def test_expired_access_token_is_refreshed_once_and_rotation_persisted(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, tokens = make_dispatcher(qbo_sandbox, session, tmp_path)
    await dispatcher.handle(ensure_customer("a@example.com", "A Person"))
    assert tokens.refreshes == 1
    for access in list(qbo_sandbox.sandbox.tokens.access_tokens):
        qbo_sandbox.sandbox.tokens.access_tokens[access] = 0.0  # QBO says: expired
    result = await dispatcher.handle(ensure_customer("b@example.com", "B Person"))
    assert isinstance(result, CustomerResolved) and result.created
    assert tokens.refreshes == 2
    newest = [t for t, e in qbo_sandbox.sandbox.tokens.refresh_tokens.items() if e.superseded_at is None]
    assert await TokenStore(tmp_path / "tokens.sqlite3").get(REALM) == newest[0]


async def test_validation_fault_becomes_a_failed_result_with_the_fault(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    result = await dispatcher.handle(EnsureItem(**COMMON, request_id="mq-item-x", name="PROD001",
                                                income_account_id="99999"))
    assert isinstance(result, GiveUp)
    assert result.error_class == "permanent"
    assert result.fault is not None and (result.fault["status"], result.fault["code"]) == (400, "2500")


async def test_invalid_refresh_token_fails_clearly(qbo_sandbox, session, tmp_path) -> None:
    store = TokenStore(tmp_path / "tokens.sqlite3")
    await store.put(REALM, "revoked-token")  # the store wins over QUICKBOOKS_REFRESH_TOKEN
    tokens = TokenManager(session, qbo_sandbox.token_url, qbo_sandbox.config.client_id,
                          SecretStr(qbo_sandbox.config.client_secret), REALM, store,
                          SecretStr(qbo_sandbox.config.refresh_token))
    dispatcher = Dispatcher(QboClient(session, qbo_sandbox.url, REALM, tokens))
    with pytest.raises(RealmBlocked) as info:
        await dispatcher.handle(ensure_customer("c@example.com", "C Person"))
    assert "invalid_grant" in str(info.value)


async def test_a_blocked_realm_offers_a_refused_token_once_per_recheck_period(qbo_sandbox, session,
                                                                               tmp_path) -> None:
    """While a realm is blocked every waiting command asks for a token; QBO sees one probe per period,
    and a new token in the store is tried at once."""
    store = TokenStore(tmp_path / "tokens.sqlite3")
    await store.put(REALM, "revoked-token")
    tokens = TokenManager(session, qbo_sandbox.token_url, qbo_sandbox.config.client_id,
                          SecretStr(qbo_sandbox.config.client_secret), REALM, store,
                          SecretStr(qbo_sandbox.config.refresh_token), refused_recheck_seconds=3600)
    dispatcher = Dispatcher(QboClient(session, qbo_sandbox.url, REALM, tokens))
    before = qbo_sandbox.sandbox.requests["POST /oauth2/v1/tokens/bearer 400"]
    outcomes = await asyncio.gather(*(dispatcher.handle(ensure_customer(f"b{i}@example.com", f"B {i}"))
                                      for i in range(10)), return_exceptions=True)
    assert all(isinstance(o, RealmBlocked) for o in outcomes)
    assert qbo_sandbox.sandbox.requests["POST /oauth2/v1/tokens/bearer 400"] - before == 1
    await store.put(REALM, qbo_sandbox.config.refresh_token)  # the operator's fix
    result = await dispatcher.handle(ensure_customer("b0@example.com", "B 0"))
    assert isinstance(result, CustomerResolved) and result.created


def gated(sb: RunningSandbox, session: aiohttp.ClientSession, data: Path, per_second: int,
          backoff: float = 60.0) -> tuple[Dispatcher, RealmGate]:
    store = TokenStore(data / "tokens.sqlite3")
    tokens = TokenManager(session, sb.token_url, sb.config.client_id, SecretStr(sb.config.client_secret), REALM,
                          store, SecretStr(sb.config.refresh_token))
    gate = RealmGate(REALM, Pacer(per_minute=500, per_second=per_second), CircuitBreaker(), backoff)
    return Dispatcher(QboClient(session, sb.url, REALM, tokens, gate=gate)), gate


async def test_paced_dispatch_stays_inside_the_per_second_quota(sandbox_factory, session, tmp_path) -> None:
    sb = await sandbox_factory(quota_per_second=5, quota_per_minute=500)
    dispatcher, _ = gated(sb, session, tmp_path, per_second=5)
    results = await asyncio.gather(*(dispatcher.handle(ensure_customer(f"p{i}@example.com", f"Paced {i}"))
                                     for i in range(8)))
    assert all(isinstance(r, CustomerResolved) and r.created for r in results)
    assert sb.sandbox.throttled == 0
    assert len(sb.sandbox.company.rows("Customer")) == 8


async def test_a_429_pauses_the_realm_and_the_command_still_succeeds(sandbox_factory, session, tmp_path) -> None:
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, throttle_rate=0.5, seed=5)
    dispatcher, gate = gated(sb, session, tmp_path, per_second=0, backoff=0.05)
    results = [await dispatcher.handle(ensure_customer(f"t{i}@example.com", f"Throttled {i}")) for i in range(6)]
    assert all(isinstance(r, CustomerResolved) for r in results)
    assert sb.sandbox.injected["throttle"] >= 1
    assert gate.pacer.scale < 1.0  # slowed down after the 429s
    assert len(sb.sandbox.company.rows("Customer")) == 6


async def test_an_ambiguous_create_is_found_not_created_again(sandbox_factory, session, tmp_path) -> None:
    """Commit-then-fail: the customer exists but the answer was lost; the quick retry looks it up."""
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, commit_then_fail_rate=1.0, seed=2)
    dispatcher, _ = gated(sb, session, tmp_path, per_second=0)
    result = await dispatcher.handle(ensure_customer("ghost@example.com", "Ghost Writer"))
    assert isinstance(result, CustomerResolved) and result.created is False
    assert len(sb.sandbox.company.rows("Customer")) == 1


async def test_persistent_server_errors_become_retry_later(sandbox_factory, session, tmp_path) -> None:
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, fail_rate=1.0, seed=4)
    store = TokenStore(tmp_path / "tokens.sqlite3")
    tokens = TokenManager(session, sb.token_url, sb.config.client_id, SecretStr(sb.config.client_secret), REALM,
                          store, SecretStr(sb.config.refresh_token))
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    dispatcher = Dispatcher(QboClient(session, sb.url, REALM, tokens), sleep=no_wait)
    outcome = await dispatcher.handle(ensure_customer("down@example.com", "Down Time"))
    assert isinstance(outcome, RetryLater) and outcome.error_class == "retriable"
    assert slept == [0.5, 1.5]  # two quick retries in place, then the delay topic
    assert sb.sandbox.injected["fail"] == 3


async def test_a_foreign_currency_buyer_gets_a_customer_in_that_currency(qbo_sandbox, session, tmp_path) -> None:
    cfg = MappingConfig(home_currency="USD")
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    resolved = {}
    for currency in ("USD", "EUR", "USD", "EUR"):
        order = MagentoOrder.model_validate({**blueprint_order(), "order_currency_code": currency})
        need = customer_need(order, cfg)
        fresh, _ = make_dispatcher(qbo_sandbox, session, tmp_path)  # no cache: found again in QBO
        result = await fresh.handle(EnsureCustomer(
            **COMMON, request_id=request_ids.customer_request_id(REALM, need.key), email=need.email, key=need.key,
            currency=need.currency, display_name=need.display_name))
        assert isinstance(result, CustomerResolved)
        resolved.setdefault(currency, result.customer_id)
        assert result.customer_id == resolved[currency]
    assert resolved["USD"] != resolved["EUR"]
    rows = {r["Id"]: r for r in qbo_sandbox.sandbox.company.rows("Customer")}
    assert (rows[resolved["EUR"]]["DisplayName"], rows[resolved["EUR"]]["CurrencyRef"]["value"]) == ("Jane Doe (EUR)", "EUR")
    assert (rows[resolved["USD"]]["DisplayName"], rows[resolved["USD"]]["CurrencyRef"]["value"]) == ("Jane Doe", "USD")


async def test_our_document_with_another_total_is_not_taken_as_this_booking(qbo_sandbox, session,
                                                                            tmp_path) -> None:
    """An earlier version of the order (or of the mapping) was booked under the number: adopting it would mark
    the order booked at a total Magento no longer has."""
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001")
    body = cmd.document.to_qbo()
    older = qbo_sandbox.sandbox.company.create("SalesReceipt", {**body, "Line": body["Line"][:1]})
    result = await dispatcher.handle(cmd)
    assert isinstance(result, GiveUp) and result.error_class == "document_differs"
    assert f"Id={older['Id']}" in result.message and "53.60" in result.message


def _reads_and_writes(sb: RunningSandbox) -> tuple[int, int]:
    requests = sb.sandbox.requests
    reads = sum(n for k, n in requests.items() if k.startswith(("GET /v3/", "POST /v3/query")))
    writes = sum(n for k, n in requests.items() if k.startswith("POST /v3/") and not k.startswith("POST /v3/query"))
    return reads, writes


async def test_a_fresh_document_costs_one_write_and_no_read(qbo_sandbox, session, tmp_path) -> None:
    dispatcher, _ = make_dispatcher(qbo_sandbox, session, tmp_path)
    cmd = await _booked_order_command(qbo_sandbox, dispatcher, "100000001")
    assert await dispatcher.numbers_kept()  # the company's numbering: one read a process an hour, not a document
    before = _reads_and_writes(qbo_sandbox)
    result = await dispatcher.handle(cmd)
    assert isinstance(result, DocumentCreated) and result.created
    reads, writes = _reads_and_writes(qbo_sandbox)
    assert (reads - before[0], writes - before[1]) == (0, 1)
    again = await dispatcher.handle(cmd)  # the same command delivered twice to this process: no call at all
    assert isinstance(again, DocumentCreated) and again.qbo_id == result.qbo_id
    assert _reads_and_writes(qbo_sandbox) == (reads, writes)


async def test_commit_then_fail_books_once_even_when_qbo_forgets_the_requestid(sandbox_factory, session,
                                                                               tmp_path) -> None:
    """Intuit's requestid de-duplication is not always honoured: with the sandbox forgetting every requestid,
    the lookup that follows an ambiguous failure alone keeps the document single."""
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, seed=3)
    dispatcher, _ = make_dispatcher(sb, session, tmp_path)
    cmd = await _booked_order_command(sb, dispatcher, "100000001")
    sb.sandbox.faults.commit_then_fail_rate = 1.0
    sb.sandbox.faults.requestid_forget_rate = 1.0
    result = await dispatcher.handle(cmd)
    assert isinstance(result, DocumentCreated) and result.created is False  # found by its DocNumber
    assert len(sb.sandbox.company.rows("SalesReceipt")) == 1
    # Without the lookup, the same command sent twice does make two documents here: the switch is real.
    sb.sandbox.faults.commit_then_fail_rate = 0.0
    other = await _booked_order_command(sb, dispatcher, "100000002")
    status = []
    async with aiohttp.ClientSession() as s:
        token = (await (await s.post(sb.token_url, data={"grant_type": "refresh_token",
                                                         "refresh_token": sb.config.refresh_token},
                                     headers={"Authorization": sb.basic_auth()})).json())["access_token"]
        for _ in range(2):
            async with s.post(f"{sb.api}/salesreceipt", params={"requestid": other.request_id},
                              data=jsonutil.dumps({**other.document.to_qbo(), "DocNumber": "FORGOT-1"}),
                              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}) as r:
                status.append(r.status)
    assert status == [200, 400]  # the second one is refused only by the duplicate-DocNumber check (6140)
    assert sb.sandbox.injected["requestid_forgotten"] >= 1


async def test_a_worker_that_lost_the_realm_sends_nothing_to_quickbooks_not_even_a_token_refresh(
        qbo_sandbox, session, tmp_path) -> None:
    """The ownership fence sits right before each request leaves (after the token, quota and concurrency waits,
    where a frozen worker wakes): a fenced call never reaches QuickBooks, and the dispatcher lets it go as
    abandoned — not as a failure of the command (no dead letter, no retry rung)."""
    from app.adapters.transient import Abandoned

    fenced = []

    async def lost() -> None:
        fenced.append(1)
        raise Abandoned

    store = TokenStore(tmp_path / "tokens.sqlite3")
    tokens = TokenManager(session, qbo_sandbox.token_url, qbo_sandbox.config.client_id,
                          SecretStr(qbo_sandbox.config.client_secret), REALM, store,
                          SecretStr(qbo_sandbox.config.refresh_token), before_send=lost)
    dispatcher = Dispatcher(QboClient(session, qbo_sandbox.url, REALM, tokens, before_send=lost))
    with pytest.raises(Abandoned):
        await dispatcher.handle(ensure_customer("zombie@example.com", "Zed Zombie"))
    assert fenced == [1] and sum(qbo_sandbox.sandbox.requests.values()) == 0  # not even the token endpoint
    live_tokens = TokenManager(session, qbo_sandbox.token_url, qbo_sandbox.config.client_id,
                               SecretStr(qbo_sandbox.config.client_secret), REALM, store,
                               SecretStr(qbo_sandbox.config.refresh_token))
    await live_tokens.access_token()  # a token in hand: the API call itself is what is fenced
    live = Dispatcher(QboClient(session, qbo_sandbox.url, REALM, live_tokens, before_send=lost))
    with pytest.raises(Abandoned):
        await live.handle(ensure_customer("zombie@example.com", "Zed Zombie"))
    assert qbo_sandbox.sandbox.created["Customer"] == 0
    assert [k for k in qbo_sandbox.sandbox.requests if "/v3/" in k] == []


async def test_a_call_that_waited_past_its_access_token_goes_with_a_fresh_one_not_a_401(
        sandbox_factory, session, tmp_path) -> None:
    """The quota and concurrency waits can outlast the access token taken before them (a deep queue, a 429
    pause): the token is taken again right before the request leaves, so no 401 costs a request of the quota."""
    sb = await sandbox_factory(quota_per_minute=0, quota_per_second=0, token_ttl=3)

    class SlowGate:  # the realm's gate, holding the call longer than the token lives
        async def before_call(self) -> None:
            await asyncio.sleep(3.5)

        def after_call(self, status: int, retry_after: str | None) -> None:
            pass

        def not_sent(self) -> None:
            pass

    store = TokenStore(tmp_path / "tokens.sqlite3")
    tokens = TokenManager(session, sb.token_url, sb.config.client_id, SecretStr(sb.config.client_secret), REALM,
                          store, SecretStr(sb.config.refresh_token))
    client = QboClient(session, sb.url, REALM, tokens, gate=SlowGate())  # type: ignore[arg-type]
    result = await Dispatcher(client).handle(ensure_customer("late@example.com", "Lou Late"))
    assert isinstance(result, CustomerResolved)
    assert not [k for k in sb.sandbox.requests if k.endswith(" 401")], sb.sandbox.requests
    api_calls = sum(n for k, n in sb.sandbox.requests.items() if "/v3/" in k)
    assert api_calls >= 1 and tokens.refreshes == 1 + api_calls  # the first token, then a fresh one after each wait
