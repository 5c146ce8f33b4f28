"""Every real Magento fixture booked in the sandbox through the dispatcher, read back over HTTP:
one document, its lines as mapped, and QBO's own TotalAmt equal to Magento's grand_total."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from app.domain import request_ids
from app.jsonutil import loads_decimal
from app.domain.mapping import MappingConfig, ResolvedRefs, customer_need, item_needs, map_order
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


@pytest.mark.parametrize("path", MAGENTO_FIXTURES, ids=lambda p: p.name[:60])
async def test_fixture_is_booked_at_magentos_grand_total(path: Path, qbo_sandbox, session, tmp_path) -> None:
    order = MagentoOrder.model_validate(fixture_order(path))
    common = {"order_id": order.key, "order_ref": order.order_ref, "realm_id": REALM}
    dispatcher, tokens = make_dispatcher(qbo_sandbox, session, tmp_path)

    need = customer_need(order, CFG)
    cust = await dispatcher.handle(EnsureCustomer(
        **common, request_id=request_ids.customer_request_id(REALM, need.key), email=need.email, key=need.key,
        display_name=need.display_name, given_name=need.given_name, family_name=need.family_name))
    assert isinstance(cust, CustomerResolved)
    ids = {}
    for item in item_needs(order, CFG):
        res = await dispatcher.handle(EnsureItem(
            **common, request_id=request_ids.item_request_id(REALM, item.name), name=item.name, sku=item.sku,
            description=item.description, item_type=item.item_type, income_account_id=CFG.income_account_id))
        assert isinstance(res, ItemResolved)
        ids[item.name] = res.item_id

    mapped = map_order(order, ResolvedRefs(cust.customer_id, cust.display_name, ids), CFG)
    assert mapped.mismatch is None
    doc = mapped.document
    result = await dispatcher.handle(CreateDocument(
        **common, request_id=request_ids.document_request_id(REALM, mapped.doc_type, doc.DocNumber),
        doc_type=mapped.doc_type, document=doc, magento_grand_total=order.grand_total))
    assert isinstance(result, DocumentCreated) and result.created

    async with session.get(f"{qbo_sandbox.url}/v3/company/{REALM}/query", params={
        "query": f"SELECT * FROM {mapped.doc_type} WHERE DocNumber = '{doc.DocNumber}'"},
            headers={"Authorization": f"Bearer {await tokens.access_token()}",
                     "Accept": "application/json"}) as resp:
        assert resp.status == 200
        body = loads_decimal(await resp.read())
    [booked] = body["QueryResponse"][mapped.doc_type]
    assert booked["TotalAmt"] == Decimal(str(order.grand_total)).quantize(Decimal("0.01"))
    assert booked["CustomerRef"]["value"] == cust.customer_id
    sales_lines = [ln for ln in booked["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
    assert [ln["Amount"] for ln in sales_lines] == \
        [ln.Amount for ln in doc.Line if ln.DetailType == "SalesItemLineDetail"]
    assert booked["CurrencyRef"]["value"] == order.order_currency_code
