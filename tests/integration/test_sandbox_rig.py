"""The sandbox as QBO under load and failure: quotas, 429 shapes, batch, injected faults, persistence."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from app import jsonutil
from app.domain.faults import ErrorClass, classify, parse_fault
from tests.conftest import QBO_FIXTURES
from tests.integration.conftest import RunningSandbox
from tests.integration.test_sandbox_api import call, receipt, shape, token


def fixture(name: str) -> Any:
    return json.loads((QBO_FIXTURES / name).read_text())


async def test_quota_per_second_answers_the_real_throttle_fault(http, sandbox_factory) -> None:
    sb = await sandbox_factory(quota_per_second=3, quota_per_minute=0)
    access = (await token(http, sb))["access_token"]
    answers = await asyncio.gather(*(call(http, sb, access, "GET", "query", query="SELECT * FROM Item")
                                     for _ in range(5)))
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200, 200, 200, 429, 429]
    status, body, headers = next(a for a in answers if a[0] == 429)
    assert body["Fault"]["type"] == "SERVICE"
    assert body["Fault"]["Error"][0] == {"Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                                         "Detail": "The request limit was reached.  Try again later", "code": "3001"}
    assert "Retry-After" not in headers
    assert sb.sandbox.throttled == 2


async def test_throttle_in_xml_with_retry_after(http, sandbox_factory) -> None:
    sb = await sandbox_factory(quota_per_second=1, quota_per_minute=0, retry_after=True, throttle_xml=True)
    access = (await token(http, sb))["access_token"]
    await call(http, sb, access, "GET", "query", query="SELECT * FROM Item")
    async with http.get(f"{sb.api}/query", params={"query": "SELECT * FROM Item"},
                        headers={"Authorization": f"Bearer {access}"}) as resp:
        raw = await resp.read()
        assert (resp.status, resp.headers["Retry-After"], resp.headers["Content-Type"]) == (429, "60", "application/xml")
    fault = parse_fault(429, raw)
    assert (fault.code, classify(fault)) == ("3001", ErrorClass.THROTTLED)


async def test_batch_mixed_items_conform_to_the_real_batch(http, sandbox_factory) -> None:
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=40)
    access = (await token(http, sb))["access_token"]
    body = {"BatchItemRequest": [
        {"bId": "bid1", "operation": "create", "Vendor": {"DisplayName": "Boraski Family Store"}},
        {"bId": "bid2", "operation": "delete", "Invoice": {"Id": "129", "SyncToken": "0"}},
        {"bId": "bid3", "operation": "create", "Customer": {"DisplayName": "Boraski family store"}},
        {"bId": "bid4", "Query": "select * from Item where Name = 'Shipping'"},
    ]}
    status, answer, _ = await call(http, sb, access, "POST", "batch", body)
    assert status == 200
    items = answer["BatchItemResponse"]
    assert [i["bId"] for i in items] == ["bid1", "bid2", "bid3", "bid4"]
    real = fixture("minimul-qbo_api__batch_mixed_response.json")["BatchItemResponse"]
    assert shape(items[0]) == shape(real[0])  # a created Vendor
    assert shape(items[1]) == shape(real[1])  # 610 Object Not Found
    assert items[1]["Fault"]["Error"][0]["code"] == "610"
    assert items[2]["Fault"]["Error"][0]["code"] == "6240"  # DisplayName is unique across name lists
    assert set(items[3]["QueryResponse"]) == set(real[3]["QueryResponse"]) - {"SalesReceipt"} | {"Item"}
    # Every item counts like a call: 4 of the 40 per minute are spent.
    assert sb.sandbox.quota.minute.room(40) == 36
    await call(http, sb, access, "GET", "query", query="SELECT * FROM Item")
    assert sb.sandbox.quota.minute.room(40) == 35


async def test_batch_over_30_items_is_refused(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    items = [{"bId": f"b{i}", "Query": "SELECT * FROM Item"} for i in range(31)]
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "batch", {"BatchItemRequest": items})
    assert (status, body["Fault"]["Error"][0]["code"]) == (400, "6000")


async def test_injected_failures_by_rate(http, sandbox_factory) -> None:
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, fail_rate=1.0, seed=3)
    access = (await token(http, sb))["access_token"]
    answers = [await call_raw(http, sb, access) for _ in range(20)]
    assert {s for s, _ in answers} == {500, 503}
    assert all(classify(parse_fault(s, b)) is ErrorClass.RETRIABLE for s, b in answers)
    assert sb.sandbox.injected["fail"] == 20


async def call_raw(http: aiohttp.ClientSession, sb: RunningSandbox, access: str) -> tuple[int, bytes]:
    async with http.get(f"{sb.api}/query", params={"query": "SELECT * FROM Item"},
                        headers={"Authorization": f"Bearer {access}"}) as resp:
        return resp.status, await resp.read()


async def test_spurious_throttles_and_seeded_reproducibility(http, sandbox_factory) -> None:
    runs = []
    for _ in range(2):
        sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, throttle_rate=0.5, seed=42)
        access = (await token(http, sb))["access_token"]
        runs.append([(await call_raw(http, sb, access))[0] for _ in range(30)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 429}


async def test_commit_then_fail_creates_the_document_but_answers_an_error(http, sandbox_factory) -> None:
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, commit_then_fail_rate=1.0, seed=1)
    access = (await token(http, sb))["access_token"]
    outcomes: list[int | str] = []
    for n in range(6):
        try:
            async with http.post(f"{sb.api}/customer", data=jsonutil.dumps({"DisplayName": f"Ghost {n}"}),
                                 headers={"Authorization": f"Bearer {access}"}) as resp:
                await resp.read()
                outcomes.append(resp.status)
        except aiohttp.ClientError:
            outcomes.append("dropped")
    assert all(o in (500, 503, "dropped") for o in outcomes)
    assert "dropped" in outcomes and any(o != "dropped" for o in outcomes)
    assert len(sb.sandbox.company.rows("Customer")) == 6  # every one was committed


async def test_hang_past_the_client_timeout(sandbox_factory) -> None:
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, hang_rate=1.0, hang_seconds=5)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as http:
        access = (await token(http, sb))["access_token"]
        with pytest.raises(asyncio.TimeoutError):
            await call_raw(http, sb, access)


async def test_latency_is_added(http, sandbox_factory) -> None:
    sb = await sandbox_factory(quota_per_second=0, quota_per_minute=0, latency_ms=150)
    access = (await token(http, sb))["access_token"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await call_raw(http, sb, access)
    assert loop.time() - started >= 0.15


async def test_faults_admin_endpoint_reads_and_changes_settings(http, qbo_sandbox) -> None:
    url = f"{qbo_sandbox.url}/_sandbox/faults"
    async with http.put(url, json={"fail_rate": 0.25, "token_ttl": 20, "seed": 9}) as resp:
        assert resp.status == 200
    async with http.get(url) as resp:
        current = await resp.json()
    assert (current["fail_rate"], current["token_ttl"], current["seed"], current["quota_per_second"]) == (0.25, 20, 9, 0)
    assert (await token(http, qbo_sandbox))["expires_in"] == 20
    async with http.put(url, json={"fail_rate": 2, "bogus": 1}) as resp:
        assert resp.status == 422
        fields = sorted(e["field"] for e in (await resp.json())["errors"])
    assert fields == ["bogus", "fail_rate"]
    async with http.get(url) as resp:
        assert (await resp.json())["fail_rate"] == 0.25  # a bad update changes nothing


async def test_stats_and_reset(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Counted"})
    async with http.get(f"{qbo_sandbox.url}/_sandbox/stats") as resp:
        stats = await resp.json()
    assert stats["documents_created"] == {"Customer": 1}
    assert stats["requests"]["POST /v3/customer 200"] == 1
    assert stats["throttled"] == 0
    async with http.post(f"{qbo_sandbox.url}/_sandbox/reset") as resp:
        assert resp.status == 200
    assert qbo_sandbox.sandbox.company.rows("Customer") == []


async def test_concurrent_identical_sales_receipts_with_one_requestid_create_one(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    _, cust, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Concurrent"})
    body = receipt(cust["Customer"]["Id"], "1", "CC-1")
    answers = await asyncio.gather(*(call(http, qbo_sandbox, access, "POST", "salesreceipt", body,
                                          requestid="same-request") for _ in range(50)))
    assert {a[0] for a in answers} == {200}
    assert len({a[1]["SalesReceipt"]["Id"] for a in answers}) == 1
    assert len(qbo_sandbox.sandbox.company.rows("SalesReceipt")) == 1


async def test_persistence_survives_a_restart(http, sandbox_factory, tmp_path) -> None:
    db = tmp_path / "company.sqlite3"
    sb = await sandbox_factory(db=db, quota_per_second=0, quota_per_minute=0)
    first = await token(http, sb)
    access = first["access_token"]
    _, cust, _ = await call(http, sb, access, "POST", "customer", {"DisplayName": "Persisted"})
    _, doc, _ = await call(http, sb, access, "POST", "salesreceipt", receipt(cust["Customer"]["Id"], "1", "P-1"),
                           requestid="persist-1")
    await sb.runner.cleanup()  # stop: the last flush happens here

    again = await sandbox_factory(db=db, quota_per_second=0, quota_per_minute=0)
    fresh = await token(http, again, first["refresh_token"])  # the rotated token is still known
    status, read, _ = await call(http, again, fresh["access_token"], "GET", f"salesreceipt/{doc['SalesReceipt']['Id']}")
    assert status == 200 and read["SalesReceipt"]["TotalAmt"] == Decimal("19.60")
    # The requestid answer survived too: the repeat creates nothing.
    _, repeat, _ = await call(http, again, fresh["access_token"], "POST", "salesreceipt",
                              receipt(cust["Customer"]["Id"], "1", "P-1"), requestid="persist-1")
    assert repeat["SalesReceipt"]["Id"] == doc["SalesReceipt"]["Id"]
    status, dup, _ = await call(http, again, fresh["access_token"], "POST", "salesreceipt",
                                receipt(cust["Customer"]["Id"], "1", "P-1"))
    assert dup["Fault"]["Error"][0]["code"] == "6140"
    _, created, _ = await call(http, again, fresh["access_token"], "POST", "customer", {"DisplayName": "Next"})
    assert int(created["Customer"]["Id"]) == int(cust["Customer"]["Id"]) + 1
