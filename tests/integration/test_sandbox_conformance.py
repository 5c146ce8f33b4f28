"""For every real QBO sample in tests/fixtures/qbo, the sandbox's answer to the same request has the
same keys, JSON types and envelope. Keys that only exist for some company data (custom fields,
addresses, a project, tax rates) are named explicitly."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from tests.conftest import QBO_FIXTURES
from tests.integration.test_sandbox_api import call, token

# Keys present in a sample because of that company's data or settings, not because of QBO's shape.
DATA_DEPENDENT = {"CustomField", "BillAddr", "ShipAddr", "ProjectRef", "SalesTermRef", "CustomerMemo",
                  "TxnTaxCodeRef", "TaxLine", "BillEmail", "PaymentMethodRef", "PaymentRefNum", "PrivateNote",
                  "Description", "ClassRef", "DiscountLineDetail", "LinkedTxn", "DiscountPercent"}


def json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float | Decimal):
        return "number"
    return type(v).__name__


def conforms(ours: Any, real: Any, path: str = "") -> list[str]:
    """Differences: keys the real answer has that ours lacks, and type mismatches."""
    problems: list[str] = []
    if json_type(ours) != json_type(real):
        return [f"{path or '(root)'}: {json_type(ours)} != {json_type(real)}"]
    if isinstance(real, dict):
        for key, value in real.items():
            if key in DATA_DEPENDENT:
                continue
            if key not in ours:
                problems.append(f"{path}.{key}: missing")
            else:
                problems += conforms(ours[key], value, f"{path}.{key}")
    elif isinstance(real, list) and real and ours:
        problems += conforms(ours[0], real[0], f"{path}[0]")
    return problems


def sample(name: str) -> Any:
    return json.loads((QBO_FIXTURES / name).read_text())


async def test_invoice_create_matches_the_real_minimal_invoice(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    _, cust, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Amy's Bird Sanctuary"})
    body = {"Line": [{"Amount": Decimal("100.0"), "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}}}],
            "CustomerRef": {"value": cust["Customer"]["Id"]}}
    status, answer, _ = await call(http, qbo_sandbox, access, "POST", "invoice", body)
    assert status == 200
    assert conforms(answer, sample("minimul-qbo_api__invoice_create_response.json")) == []
    inv = answer["Invoice"]
    assert (inv["TotalAmt"], inv["Balance"], inv["Line"][0]["SalesItemLineDetail"]["TaxCodeRef"]) == (
        Decimal("100.00"), Decimal("100.00"), {"value": "NON"})
    assert "Qty" not in inv["Line"][0]["SalesItemLineDetail"]  # QBO does not invent Qty/UnitPrice


async def test_us_taxable_invoice_matches_the_documented_object(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    _, cust, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Sonnenschein"})
    lines = [(Decimal("275.0"), 1, Decimal("275")), (Decimal("12.75"), 1, Decimal("12.75")),
             (Decimal("47.5"), 5, Decimal("9.5"))]
    body = {"Line": [{"Amount": a, "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": q, "UnitPrice": p,
                                              "TaxCodeRef": {"value": "TAX"}}} for a, q, p in lines],
            "CustomerRef": {"value": cust["Customer"]["Id"]}, "TxnTaxDetail": {"TotalTax": Decimal("26.82")},
            "TxnDate": "2014-09-19"}
    status, answer, _ = await call(http, qbo_sandbox, access, "POST", "invoice", body)
    assert status == 200
    assert conforms(answer, sample("intuit-docs-mirror__invoice_us_taxable_object.json")) == []
    assert answer["Invoice"]["TotalAmt"] == Decimal("362.07")  # 335.25 + 26.82, as in the sample
    assert answer["Invoice"]["DueDate"] == "2014-10-19"


async def test_inventory_item_create_matches_the_documented_response(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    body = {"Name": "Garden Supplies", "Type": "Inventory", "TrackQtyOnHand": True, "QtyOnHand": 10,
            "InvStartDate": "2015-01-01", "IncomeAccountRef": {"value": "79"}, "AssetAccountRef": {"value": "81"},
            "ExpenseAccountRef": {"value": "80"}}
    status, answer, _ = await call(http, qbo_sandbox, access, "POST", "item", body)
    assert status == 200
    assert conforms(answer, sample("intuit-docs-mirror__item_create_inventory_response.json")) == []
    assert answer["Item"]["AssetAccountRef"] == {"value": "81", "name": "Inventory Asset"}


async def test_sales_receipt_query_matches_the_real_query_response(http, qbo_sandbox) -> None:
    access = (await token(http, qbo_sandbox))["access_token"]
    _, cust, _ = await call(http, qbo_sandbox, access, "POST", "customer", {"DisplayName": "Query Me"})
    body = {"Line": [{"Amount": Decimal("87.50"), "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": Decimal("3.5"),
                                              "UnitPrice": Decimal("25")}},
                     {"Amount": Decimal("8.75"), "DetailType": "DiscountLineDetail",
                      "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": 10,
                                             "DiscountAccountRef": {"value": "86"}}}],
            "CustomerRef": {"value": cust["Customer"]["Id"]}, "PaymentRefNum": "10264"}
    assert (await call(http, qbo_sandbox, access, "POST", "salesreceipt", body))[0] == 200
    status, answer, _ = await call(http, qbo_sandbox, access, "GET", "query",
                                   query="SELECT * FROM SalesReceipt MAXRESULTS 1000 STARTPOSITION 1")
    assert status == 200
    assert conforms(answer, sample("minimul-qbo_api__salesreceipt_query_response.json")) == []
    assert answer["QueryResponse"]["SalesReceipt"][0]["TotalAmt"] == Decimal("78.75")  # 87.50 − 10 %
    assert answer["QueryResponse"]["maxResults"] == 1


def test_every_sample_has_a_conformance_test() -> None:
    """A new sample in tests/fixtures/qbo must come with a test here or in test_sandbox_api/test_sandbox_rig."""
    covered = {
        "minimul-qbo_api__customer_create_response.json", "minimul-qbo_api__invoice_create_response.json",
        "minimul-qbo_api__salesreceipt_query_response.json", "minimul-qbo_api__batch_mixed_response.json",
        "minimul-qbo_api__query_empty_response.json", "minimul-qbo_api__fault_6240_duplicate_name.json",
        "minimul-qbo_api__fault_401_token_expired.json", "minimul-qbo_api__fault_4001_invalid_query.json",
        "intuit-docs-mirror__item_create_inventory_response.json",
        "intuit-docs-mirror__invoice_us_taxable_object.json",
    }
    assert {p.name for p in QBO_FIXTURES.glob("*.json")} == covered
