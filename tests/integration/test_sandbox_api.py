"""The local QBO answers like the real one: shapes from reference/fixtures/qbo, faults, tokens, idempotency."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp

from app import jsonutil
from tests.conftest import QBO_FIXTURES
from tests.integration.conftest import RunningSandbox


def fixture(name: str) -> Any:
    return json.loads((QBO_FIXTURES / name).read_text())


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    return type(value).__name__


async def token(http: aiohttp.ClientSession, sb: RunningSandbox, refresh_token: str | None = None) -> dict[str, Any]:
    async with http.post(sb.token_url, data={"grant_type": "refresh_token",
                                             "refresh_token": refresh_token or sb.config.refresh_token},
                         headers={"Authorization": sb.basic_auth(), "Accept": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def call(http: aiohttp.ClientSession, sb: RunningSandbox, access: str, method: str, path: str,
               body: Any = None, **params: str) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with http.request(method, f"{sb.api}/{path}", params={"minorversion": "75", **params},
                            data=jsonutil.dumps(body) if body is not None else None,
                            headers={"Authorization": f"Bearer {access}", "Content-Type": "application/json",
                                     "Accept": "application/json"}) as resp:
        return resp.status, jsonutil.loads_decimal(await resp.read()), resp.headers


async def test_refresh_token_rotation_keeps_the_previous_token_valid(http, qbo_sandbox) -> None:
    first = await token(http, qbo_sandbox)
    assert first["token_type"] == "bearer" and first["expires_in"] == 3600
    assert first["refresh_token"] != qbo_sandbox.config.refresh_token
    # A second client still holding the initial token works too (24 h grace).
    second = await token(http, qbo_sandbox)
    assert second["access_token"] != first["access_token"]
    third = await token(http, qbo_sandbox, first["refresh_token"])
    assert third["refresh_token"] not in (first["refresh_token"], second["refresh_token"])


async def test_unknown_refresh_token_and_bad_client(http, qbo_sandbox) -> None:
    async with http.post(qbo_sandbox.token_url, data={"grant_type": "refresh_token", "refresh_token": "nope"},
                         headers={"Authorization": qbo_sandbox.basic_auth()}) as resp:
        assert resp.status == 400
        assert await resp.json() == {"error_description": "Token invalid", "error": "invalid_grant"}
    async with http.post(qbo_sandbox.token_url, data={"grant_type": "refresh_token", "refresh_token": "x"},
                         auth=aiohttp.BasicAuth("wrong", "creds")) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"


async def test_expired_access_token_gets_the_real_401(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    qbo_sandbox.sandbox.tokens.access_tokens[access] = 0.0  # expire it now
    status, body, headers = await call(http, qbo_sandbox, access, "GET", "query", query="SELECT * FROM Customer")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="Intuit", error="invalid_token"'
    assert shape(body) == shape(fixture("minimul-qbo_api__fault_401_token_expired.json"))
    assert body["fault"]["error"][0]["code"] == "3200"
    assert "intuit_tid" in headers


async def test_customer_create_has_the_real_shape_and_duplicate_name_faults(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Doe5, Jane"})
    assert status == 200
    real = fixture("minimul-qbo_api__customer_create_response.json")
    assert shape(body) == shape(real)
    assert body["Customer"]["DisplayName"] == "Doe5, Jane" and body["Customer"]["SyncToken"] == "0"
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "doe5, JANE"})
    assert status == 400
    assert shape(body) == shape(fixture("minimul-qbo_api__fault_6240_duplicate_name.json"))
    assert body["Fault"]["Error"][0]["code"] == "6240"


async def test_query_shapes_hit_empty_and_invalid(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    status, body, _ = await call(http, qbo_sandbox, access, "GET", "query",
                                 query="SELECT * FROM Customer WHERE DisplayName = 'nobody'")
    assert (status, shape(body)) == (200, shape(fixture("minimul-qbo_api__query_empty_response.json")))
    status, body, _ = await call(http, qbo_sandbox, access, "GET", "query", query="SELECT * FROM Custmoer")
    assert status == 400
    assert shape(body) == shape(fixture("minimul-qbo_api__fault_4001_invalid_query.json"))
    assert body["Fault"]["Error"][0]["Detail"] == "QueryValidationError: invalid context declaration: Custmoer"


def receipt(customer_id: str, item_id: str, doc_number: str, amount: str = "20.00", qty: int = 2,
            price: str = "10.00", tax: str = "1.60") -> dict[str, Any]:
    return {
        "Line": [{"Amount": Decimal(amount), "DetailType": "SalesItemLineDetail",
                  "SalesItemLineDetail": {"ItemRef": {"value": item_id}, "Qty": qty, "UnitPrice": Decimal(price),
                                          "TaxCodeRef": {"value": "TAX"}}},
                 {"Amount": Decimal("2.00"), "DetailType": "DiscountLineDetail",
                  "DiscountLineDetail": {"PercentBased": False, "DiscountAccountRef": {"value": "86"}}}],
        "CustomerRef": {"value": customer_id}, "DocNumber": doc_number,
        "TxnTaxDetail": {"TotalTax": Decimal(tax)}, "DepositToAccountRef": {"value": "4"},
    }


async def test_sales_receipt_total_subtotal_line_and_read_back(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    _, cust, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Jane Doe"})
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt",
                                 receipt(cust["Customer"]["Id"], "1", "MAG-1"))
    assert status == 200, body
    sr = body["SalesReceipt"]
    assert sr["TotalAmt"] == Decimal("19.60")  # 20.00 − 2.00 + 1.60
    assert sr["Line"][-1] == {"Amount": Decimal("20.00"), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}
    assert sr["DepositToAccountRef"] == {"value": "4", "name": "Undeposited Funds"}
    assert sr["CustomerRef"] == {"value": cust["Customer"]["Id"], "name": "Jane Doe"}
    status, read, _ = await call(http, qbo_sandbox, access, "GET", f"salesreceipt/{sr['Id']}")
    assert status == 200 and read["SalesReceipt"]["TotalAmt"] == Decimal("19.60")
    real = fixture("minimul-qbo_api__salesreceipt_query_response.json")["QueryResponse"]["SalesReceipt"][0]
    assert set(real) - set(sr) <= {"CustomField", "ShipAddr", "BillAddr", "PaymentMethodRef", "CustomerMemo",
                                   "ApplyTaxAfterDiscount", "BillEmail", "PaymentRefNum", "PrivateNote"}


async def test_validation_faults_6140_6070_2500_2050(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    _, cust, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Fault Tester"})
    cid = cust["Customer"]["Id"]
    status, first, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt", receipt(cid, "1", "D-1"))
    assert status == 200
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "invoice", receipt(cid, "1", "D-1"))
    err = body["Fault"]["Error"][0]
    assert (status, err["code"]) == (400, "6140")
    assert err["Detail"].endswith(f"DocNumber=D-1 is assigned to TxnType=Sales Receipt with TxnId={first['SalesReceipt']['Id']}")
    status, _, _ = await call(http, qbo_sandbox, access, "POST", "invoice", receipt(cid, "1", "D-1"),
                              include="allowduplicatedocnum")
    assert status == 200
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt",
                                 receipt(cid, "1", "D-2", amount="1861.07", qty=1, price="1861.075"))
    assert (status, body["Fault"]["Error"][0]["code"]) == (400, "6070")
    assert body["Fault"]["Error"][0]["Detail"] == "Amount is not equal to UnitPrice * Qty. Supplied value:1,861.07"
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt", receipt(cid, "999", "D-3"))
    assert (status, body["Fault"]["Error"][0]["code"]) == (400, "2500")
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt", receipt(cid, "1", "X" * 22))
    assert (status, body["Fault"]["Error"][0]["code"], body["Fault"]["Error"][0]["element"]) == (400, "2050", "DocNumber")


async def test_repeated_requestid_returns_the_first_answer_and_creates_nothing(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    results = await asyncio.gather(*(
        call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Once Only"}, requestid="req-1")
        for _ in range(50)
    ))
    assert {r[0] for r in results} == {200}
    assert len({r[1]["Customer"]["Id"] for r in results}) == 1
    _, count, _ = await call(http, qbo_sandbox, access, "GET", "query",
                             query="SELECT COUNT(*) FROM Customer WHERE DisplayName = 'Once Only'")
    assert count["QueryResponse"] == {"totalCount": 1}
    assert qbo_sandbox.sandbox.created["Customer"] == 1


async def test_unknown_route_is_a_400_unsupported_operation(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    status, body, _ = await call(http, qbo_sandbox, access, "GET", "customer/1/5")
    assert (status, body["Fault"]["Error"][0]["code"]) == (400, "500")


async def test_name_rules_for_customers_and_items(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    for body in ({"DisplayName": "Acme: West"}, {"DisplayName": "Tab\there"}, {"DisplayName": "New\nline"}):
        status, answer, _ = await call(http, qbo_sandbox, access, "POST", "customer", body)
        assert (status, answer["Fault"]["Error"][0]["code"]) == (400, "6000")
    status, answer, _ = await call(http, qbo_sandbox, access, "POST", "item",
                                   {"Name": "x" * 101, "Type": "NonInventory", "IncomeAccountRef": {"value": "79"}})
    assert (status, answer["Fault"]["Error"][0]["code"], answer["Fault"]["Error"][0]["element"]) == (400, "2050", "Name")
    status, answer, _ = await call(http, qbo_sandbox, access, "POST", "item",
                                   {"Name": "shipping", "Type": "Service", "IncomeAccountRef": {"value": "79"}})
    assert (status, answer["Fault"]["Error"][0]["code"]) == (400, "6240")  # "Shipping" exists, case-insensitively


async def test_read_of_a_missing_object_is_610(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    status, answer, headers = await call(http, qbo_sandbox, access, "GET", "invoice/9999")
    assert (status, answer["Fault"]["Error"][0]["code"]) == (400, "610")
    assert "intuit_tid" in headers


async def test_deleting_a_sales_form_frees_its_doc_number(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    _, cust, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Deleter"})
    _, inv, _ = await call(http, qbo_sandbox, access, "POST", "invoice", receipt(cust["Customer"]["Id"], "1", "DEL-1"))
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "invoice",
                                 {"Id": inv["Invoice"]["Id"], "SyncToken": "0"}, operation="delete")
    assert (status, body["Invoice"]) == (200, {"domain": "QBO", "status": "Deleted", "Id": inv["Invoice"]["Id"]})
    status, _, _ = await call(http, qbo_sandbox, access, "POST", "salesreceipt",
                              receipt(cust["Customer"]["Id"], "1", "DEL-1"))
    assert status == 200
    status, body, _ = await call(http, qbo_sandbox, access, "POST", "invoice", {"Id": "9999", "SyncToken": "0"},
                                 operation="delete")
    assert (status, body["Fault"]["Error"][0]["code"]) == (400, "610")
