import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.magento import MagentoOrder, extract_order
from tests.conftest import MAGENTO_FIXTURES, blueprint_order, magento_fixture


def _orders_in(path: Path) -> list[dict]:
    body = json.loads(path.read_text())
    if "total_count" in body and isinstance(body.get("items"), list):  # a GET /V1/orders search result
        return body["items"]
    return [extract_order(body)]


@pytest.mark.parametrize("path", MAGENTO_FIXTURES, ids=lambda p: p.name[:60])
def test_every_real_fixture_parses(path: Path) -> None:
    for raw in _orders_in(path):
        order = MagentoOrder.model_validate(raw)
        assert order.entity_id >= 1
        assert order.items and all(i.sku for i in order.items)
        assert isinstance(order.grand_total, Decimal)


def test_registered_customer_fixture_values() -> None:
    order = MagentoOrder.model_validate(magento_fixture("000000013_configurable"))
    assert order.entity_id == 9
    assert order.increment_id == "000000013"
    assert order.customer_id == 1 and order.customer_is_guest is False
    assert order.grand_total == Decimal("396.87")
    assert order.tax_amount == Decimal("29.87")
    assert [i.sku for i in order.items] == ["MH09-XS-Blue", "MH09-XS-Blue", "RACER"]


def test_guest_without_customer_id_or_names() -> None:
    order = MagentoOrder.model_validate(magento_fixture("000000019_guest"))
    assert order.customer_id is None
    assert order.customer_is_guest is True


def test_io_events_cloudevent_yields_the_order_with_string_numbers() -> None:
    body = magento_fixture("io_event")
    order = MagentoOrder.model_validate(extract_order(body))
    assert order.entity_id == 673  # from the items' order_id: the event data has no entity_id
    assert order.increment_id == "000000617"
    assert order.grand_total == Decimal("409.6")
    assert order.items[0].price == Decimal("505.75")
    assert order.billing_address is not None and order.billing_address.street == ["REDACTED line 1", "REDACTED line 2"]


def test_mage_os_data_wrapper_and_bare_order_give_the_same_order() -> None:
    bare = blueprint_order()
    assert extract_order({"data": bare}) == bare
    assert extract_order(bare) == bare


def test_numbers_as_strings_and_numbers_as_numbers_agree() -> None:
    raw = blueprint_order()
    as_strings = {**raw, "grand_total": "53.6000", "entity_id": "100000001",
                  "items": [{**i, "price": f"{i['price']:.4f}", "qty_ordered": "2.0000" if i["qty_ordered"] == 2 else "1"}
                            for i in raw["items"]]}
    a, b = MagentoOrder.model_validate(raw), MagentoOrder.model_validate(as_strings)
    assert a.grand_total == b.grand_total == Decimal("53.6")
    assert [i.price for i in a.items] == [i.price for i in b.items]
    assert a.entity_id == b.entity_id == 100000001


def test_increment_id_given_as_a_number_is_kept_as_text() -> None:
    order = MagentoOrder.model_validate({**blueprint_order(), "increment_id": 1000017})
    assert order.increment_id == "1000017"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"grand_total": "abc"}, "grand_total"),
        ({"items": []}, "items"),
        ({"customer_email": "not-an-email"}, "customer_email"),
        ({"entity_id": None}, "entity_id"),
    ],
)
def test_invalid_orders_name_the_failing_field(change: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        MagentoOrder.model_validate({**blueprint_order(), **change})
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


def test_missing_items_sku_names_the_nested_path() -> None:
    raw = blueprint_order()
    del raw["items"][1]["sku"]
    with pytest.raises(ValidationError) as info:
        MagentoOrder.model_validate(raw)
    assert [e["loc"] for e in info.value.errors()] == [("items", 1, "sku")]
