"""Golden tests: each real Magento fixture → the exact QBO document we send, kept as JSON in tests/golden/.

Regenerate after an intended mapping change with `MAGQB_REGEN_GOLDEN=1 make test-unit`, then read the diff.
The same fixtures are booked in the sandbox by tests/integration/test_golden_in_sandbox.py.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app import jsonutil
from app.domain.mapping import MappingConfig, ResolvedRefs, customer_need, item_needs, map_order
from app.domain.money import to_cents
from schemas.magento import MagentoOrder, extract_order
from tests.conftest import MAGENTO_FIXTURES

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CFG = MappingConfig()


def fixture_order(path: Path) -> dict[str, Any]:
    body = json.loads(path.read_text())
    if isinstance(body, dict) and isinstance(body.get("items"), list) and body["items"] \
            and isinstance(body["items"][0], dict) and "items" in body["items"][0]:
        body = body["items"][0]  # a GET /V1/orders search result: its first order
    return extract_order(body)


def golden_document(path: Path) -> dict[str, Any]:
    order = MagentoOrder.model_validate(fixture_order(path))
    cust = customer_need(order, CFG)
    refs = ResolvedRefs(customer_id="C1", customer_name=cust.display_name,
                        item_ids={n.name: f"I{k}" for k, n in enumerate(item_needs(order, CFG), start=1)})
    mapped = map_order(order, refs, CFG)
    return {
        "doc_type": mapped.doc_type,
        "customer": {"key": cust.key, "display_name": cust.display_name},
        "items": [{"name": n.name, "type": n.item_type} for n in item_needs(order, CFG)],
        "document": jsonutil.loads_decimal(jsonutil.dumps(mapped.document.to_qbo())),
        "computed_total": mapped.document.computed_total(),
        "magento_grand_total": to_cents(order.grand_total),
    }


@pytest.mark.parametrize("path", MAGENTO_FIXTURES, ids=lambda p: p.name[:60])
def test_fixture_maps_to_its_golden_document(path: Path) -> None:
    got = golden_document(path)
    golden = GOLDEN / (path.stem + ".qbo.json")
    if os.environ.get("MAGQB_REGEN_GOLDEN") == "1":
        golden.write_bytes(jsonutil.dumps(got, indent=True) + b"\n")
    expected = jsonutil.loads_decimal(golden.read_bytes())
    assert got == expected
    # Every real order books exactly Magento's grand total.
    assert got["computed_total"] == got["magento_grand_total"]


def test_every_fixture_has_a_golden_file() -> None:
    assert sorted(p.name.removesuffix(".qbo.json") for p in GOLDEN.glob("*.qbo.json")) == \
        sorted(p.stem for p in MAGENTO_FIXTURES)


def test_golden_totals_are_decimal_cents() -> None:
    for golden in GOLDEN.glob("*.qbo.json"):
        data = jsonutil.loads_decimal(golden.read_bytes())
        assert isinstance(data["computed_total"], Decimal)
        assert data["computed_total"] == data["computed_total"].quantize(Decimal("0.01"))
