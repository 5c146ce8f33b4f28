"""Every real Magento fixture booked in the sandbox through the dispatcher, read back over HTTP:
one document, its lines as mapped, and QBO's own TotalAmt equal to Magento's grand_total."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app import jsonutil
from app.domain import request_ids
from app.domain.mapping import MappingConfig, ResolvedRefs, customer_need, item_needs, map_order
from app.domain.money import to_cents
from app.jsonutil import loads_decimal
from schemas.commands import CreateDocument, EnsureCustomer, EnsureItem
from schemas.events import CustomerResolved, DocumentCreated, ItemResolved
from schemas.magento import MagentoOrder
from tests.conftest import MAGENTO_FIXTURES
from tests.integration.conftest import REALM
from tests.integration.test_dispatch_against_sandbox import make_dispatcher
from tests.unit.test_golden import fixture_order

CFG = MappingConfig()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def book(sb, session, tmp_path: Path, order: MagentoOrder, cfg: MappingConfig) -> tuple[Any, dict]:
    """Resolve the order's customer and items, map, create — as the worker does — and read the document back."""
    common = {"order_id": order.key, "order_ref": order.order_ref, "realm_id": REALM}
    dispatcher, tokens = make_dispatcher(sb, session, tmp_path)
    need = customer_need(order, cfg)
    cust = await dispatcher.handle(EnsureCustomer(
        **common, request_id=request_ids.customer_request_id(REALM, need.key), email=need.email, key=need.key,
        currency=need.currency, display_name=need.display_name, given_name=need.given_name,
        family_name=need.family_name))
    assert isinstance(cust, CustomerResolved)
    ids = {}
    for item in item_needs(order, cfg):
        res = await dispatcher.handle(EnsureItem(
            **common, request_id=request_ids.item_request_id(REALM, item.name), name=item.name, sku=item.sku,
            description=item.description, item_type=item.item_type, income_account_id=cfg.income_account_id))
        assert isinstance(res, ItemResolved)
        ids[item.name] = res.item_id

    mapped = map_order(order, ResolvedRefs(cust.customer_id, cust.display_name, ids), cfg)
    assert mapped.mismatch is None
    doc = mapped.document
    result = await dispatcher.handle(CreateDocument(
        **common, request_id=request_ids.document_request_id(REALM, mapped.doc_type, doc.DocNumber, jsonutil.dumps(doc.to_qbo())),
        doc_type=mapped.doc_type, document=doc, magento_grand_total=order.grand_total))
    assert isinstance(result, DocumentCreated) and result.created

    async with session.get(f"{sb.url}/v3/company/{REALM}/query", params={
        "query": f"SELECT * FROM {mapped.doc_type} WHERE DocNumber = '{doc.DocNumber}'"},
            headers={"Authorization": f"Bearer {await tokens.access_token()}", "Accept": "application/json"}) as resp:
        assert resp.status == 200
        body = loads_decimal(await resp.read())
    [booked] = body["QueryResponse"][mapped.doc_type]
    assert booked["CustomerRef"]["value"] == cust.customer_id
    return mapped, booked


@pytest.mark.parametrize("path", MAGENTO_FIXTURES, ids=lambda p: p.name[:60])
async def test_fixture_is_booked_at_magentos_grand_total(path: Path, qbo_sandbox, session, tmp_path) -> None:
    order = MagentoOrder.model_validate(fixture_order(path))
    mapped, booked = await book(qbo_sandbox, session, tmp_path, order, CFG)
    assert booked["TotalAmt"] == to_cents(order.grand_total)
    sales_lines = [ln for ln in booked["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
    assert [ln["Amount"] for ln in sales_lines] == \
        [ln.Amount for ln in mapped.document.Line if ln.DetailType == "SalesItemLineDetail"]
    assert booked["CurrencyRef"]["value"] == order.order_currency_code


@pytest.mark.parametrize("prices", ["TaxExcluded", "TaxInclusive"])
async def test_a_vat_company_books_the_polish_order_with_its_tax_codes(prices: str, sandbox_factory, session,
                                                                       tmp_path) -> None:
    """A non-US company (tax codes 5 = 23 % VAT, 7 = 0 %): the real PL VAT fixture books at its grand total."""
    sb = await sandbox_factory(quota_per_minute=0, quota_per_second=0, tax_codes={"5": "23% VAT", "7": "0% VAT"})
    cfg = MappingConfig(tax_mode="global", tax_prices=prices, tax_codes={"23": "5", "0": "7"})  # type: ignore[arg-type]
    order = MagentoOrder.model_validate(fixture_order(next(p for p in MAGENTO_FIXTURES if "vuestorefront" in p.name)))
    _, booked = await book(sb, session, tmp_path, order, cfg)
    assert booked["TotalAmt"] == Decimal("28.00") == to_cents(order.grand_total)
    assert booked["GlobalTaxCalculation"] == prices
    codes = [ln["SalesItemLineDetail"]["TaxCodeRef"]["value"] for ln in booked["Line"]
             if ln["DetailType"] == "SalesItemLineDetail"]
    assert codes == ["5", "7"]
    tee = booked["Line"][0]["Amount"]
    assert tee == (Decimal("22.00") if prices == "TaxExcluded" else Decimal("26.30"))  # 22 + 4.30 VAT
