from decimal import Decimal
from pathlib import Path

import pytest

from app import jsonutil
from app.domain.mapping import (
    MappingConfig,
    PaymentRule,
    ResolvedRefs,
    booked_items,
    customer_need,
    doc_number,
    item_needs,
    map_order,
)
from schemas.magento import MagentoOrder
from schemas.qbo import Ref
from tests.conftest import blueprint_order, magento_fixture

CFG = MappingConfig()
REFS = ResolvedRefs(customer_id="4", customer_name="Jane Doe",
                    item_ids={"PROD001": "1", "PROD002": "2", "Shipping": "3"})


def _blueprint() -> MagentoOrder:
    return MagentoOrder.model_validate(blueprint_order())


def test_blueprint_sample_becomes_the_blueprint_sales_receipt() -> None:
    mapped = map_order(_blueprint(), REFS, CFG)
    body = jsonutil.loads_decimal(jsonutil.dumps(mapped.document.to_qbo()))

    assert mapped.doc_type == "SalesReceipt"
    assert body["Line"] == [
        {"Amount": Decimal("20.00"), "DetailType": "SalesItemLineDetail", "Description": "Product A",
         "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "PROD001"}, "Qty": 2,
                                 "UnitPrice": 10, "TaxCodeRef": {"value": "TAX"}}},
        {"Amount": Decimal("25.00"), "DetailType": "SalesItemLineDetail", "Description": "Product B",
         "SalesItemLineDetail": {"ItemRef": {"value": "2", "name": "PROD002"}, "Qty": 1,
                                 "UnitPrice": 25, "TaxCodeRef": {"value": "TAX"}}},
        {"Amount": Decimal("5.00"), "DetailType": "SalesItemLineDetail",
         "SalesItemLineDetail": {"ItemRef": {"value": "3", "name": "Shipping"}, "Qty": 1,
                                 "UnitPrice": Decimal("5.00"), "TaxCodeRef": {"value": "NON"}}},
    ]
    assert body["TxnTaxDetail"] == {"TotalTax": Decimal("3.60")}
    assert body["CustomerRef"] == {"value": "4", "name": "Jane Doe"}
    assert body["DepositToAccountRef"] == {"value": "4", "name": "Undeposited Funds"}
    assert body["DocNumber"] == "MAG-100000001"
    assert body["PrivateNote"] == "Magento Order ID: 100000001 [entity 100000001]"  # the blueprint has no store_id
    assert body["TxnDate"] == "2023-10-26"
    assert "TotalAmt" not in body  # read-only in QBO: it computes it


def test_amounts_are_exact_json_numbers_never_floats() -> None:
    raw = jsonutil.dumps(map_order(_blueprint(), REFS, CFG).document.to_qbo())
    assert b'"Amount":20.00' in raw and b'"TotalTax":3.60' in raw


def test_the_blueprint_documents_own_total_mismatch_is_reported_not_hidden() -> None:
    # reference/seed-blueprint.txt's sample says grand_total 48.60 while its lines, tax and shipping make 53.60.
    order = MagentoOrder.model_validate({**blueprint_order(), "grand_total": 48.60})
    mapped = map_order(order, REFS, CFG)
    assert mapped.document.computed_total() == Decimal("53.60")
    assert mapped.mismatch is not None
    assert mapped.mismatch.magento_grand_total == Decimal("48.60")
    assert mapped.mismatch.difference == Decimal("5.00")


def test_a_rounding_difference_becomes_an_explicit_adjustment_line() -> None:
    order = MagentoOrder.model_validate({**blueprint_order(), "grand_total": 53.58})
    refs = ResolvedRefs("4", "Jane Doe", {**REFS.item_ids, "Rounding Adjustment": "9"})
    assert [n.name for n in item_needs(order, CFG)] == ["PROD001", "PROD002", "Shipping", "Rounding Adjustment"]
    mapped = map_order(order, refs, CFG)
    adjustment = mapped.document.Line[-1]
    assert adjustment.Amount == Decimal("-0.02")
    assert adjustment.SalesItemLineDetail is not None
    assert adjustment.SalesItemLineDetail.ItemRef == Ref(value="9", name="Rounding Adjustment")
    assert adjustment.SalesItemLineDetail.TaxCodeRef == Ref(value="NON")
    assert mapped.document.computed_total() == Decimal("53.58")
    assert mapped.mismatch is None


def test_no_adjustment_item_is_needed_when_the_totals_agree() -> None:
    order = MagentoOrder.model_validate({**blueprint_order(), "grand_total": 53.60})
    assert "Rounding Adjustment" not in [n.name for n in item_needs(order, CFG)]
    assert map_order(order, REFS, CFG).mismatch is None


def test_a_difference_beyond_the_tolerance_is_a_mismatch_without_adjustment() -> None:
    order = MagentoOrder.model_validate({**blueprint_order(), "grand_total": 53.54})
    mapped = map_order(order, REFS, MappingConfig(adjustment_tolerance=Decimal("0.05")))
    assert mapped.mismatch is not None and mapped.mismatch.difference == Decimal("0.06")
    assert len(mapped.document.Line) == 3


def test_configurable_child_line_is_not_booked_again() -> None:
    order = MagentoOrder.model_validate(magento_fixture("000000013_configurable"))
    assert [(i.item_id, i.sku) for i in booked_items(order.items)] == [(16, "MH09-XS-Blue"), (18, "RACER")]
    refs = ResolvedRefs("7", "Veronica Costello", {"MH09-XS-Blue": "10", "RACER": "11", "Shipping": "3"})
    mapped = map_order(order, refs, CFG)
    assert [line.Amount for line in mapped.document.Line] == [Decimal("138.00"), Decimal("224.00"), Decimal("5.00")]
    assert mapped.document.computed_total() == Decimal("396.87")
    assert mapped.mismatch is None


def test_dynamic_bundle_books_its_priced_children_not_the_parent() -> None:
    order = MagentoOrder.model_validate(magento_fixture("AdobeDocs"))
    booked = booked_items(order.items)
    assert all(i.product_type != "bundle" for i in booked)
    assert sum(i.row_total for i in booked) == order.subtotal


def test_item_needs_list_each_sku_once_plus_shipping() -> None:
    order = MagentoOrder.model_validate(magento_fixture("000000013_configurable"))
    assert [(n.name, n.item_type) for n in item_needs(order, CFG)] == [
        ("MH09-XS-Blue", "NonInventory"), ("RACER", "NonInventory"), ("Shipping", "Service")]


def test_guest_customer_name_falls_back_to_billing_address() -> None:
    order = MagentoOrder.model_validate(magento_fixture("000000019_guest"))
    need = customer_need(order)
    assert need.email == order.customer_email.lower()
    bill = order.billing_address
    assert bill is not None
    assert need.display_name == f"{bill.firstname} {bill.lastname}"


def test_doc_number_is_at_most_21_characters_and_deterministic() -> None:
    order = MagentoOrder.model_validate({**blueprint_order(), "increment_id": "2000000123456789012345-1"})
    number = doc_number(order, "MAG-")
    assert len(number) == 21
    assert number == doc_number(order, "MAG-")
    assert number == "MAG-200-TC5YPE0E4H1J5"  # the id's head, then 65 bits of its SHA-256 in base32
    other = MagentoOrder.model_validate({**blueprint_order(), "increment_id": "2000000123456789012345-2"})
    assert doc_number(other, "MAG-") != number
    eight = doc_number(order, "WEBSHOP-")  # the longest prefix the mapping file allows
    assert len(eight) == 21 and eight == "WEBSHOP-TC5YPE0E4H1J5"


def test_long_order_ids_with_a_common_head_never_share_a_doc_number() -> None:
    """16 bits of hash collided after a few hundred orders; 65 bits do not in 200,000."""
    from app.domain.mapping import doc_number as number_of

    class Ref:
        def __init__(self, ref: str) -> None:
            self.order_ref = ref

    numbers = {number_of(Ref(f"EU-STORE-2026-{n:012d}"), "MAG-") for n in range(200_000)}  # type: ignore[arg-type]
    assert len(numbers) == 200_000
    assert {len(n) for n in numbers} == {21}


def test_only_a_note_naming_the_order_proves_a_document_is_ours() -> None:
    from app.domain.mapping import note_names_order

    assert note_names_order("Magento Order ID: 10000001", "10000001")
    assert note_names_order("Magento Order ID: 000000013-1 (edit of order 000000013)", "000000013-1")
    assert not note_names_order("Magento Order ID: 100000012", "10000001")  # a longer id with our head
    assert not note_names_order("Magento Order ID: 000000013-1", "000000013")
    assert not note_names_order("booked by hand", "10000001")
    assert not note_names_order(None, "10000001")


def test_a_note_names_the_store_and_entity_so_another_stores_order_is_not_ours() -> None:
    from app.domain.mapping import note_identity, note_names_order, private_note

    mine = private_note(MagentoOrder.model_validate({**blueprint_order(), "entity_id": 57, "increment_id": "100000001",
                                                  "store_id": 2}))
    assert mine == "Magento Order ID: 100000001 [store 2, entity 57]"
    assert note_names_order(mine, "100000001", "57")
    assert not note_names_order(mine, "100000001", "58")  # store 1's order 100000001 (entity 58) is another order
    assert note_identity(mine) == ("2", "57")
    edit = "Magento Order ID: 000000013-1 (edit of order 000000013) [store 1, entity 10]"
    assert note_names_order(edit, "000000013-1", "10") and not note_names_order(edit, "000000013", "9")
    # A document booked by an older magqb names the increment id only: still ours (totals are compared after).
    assert note_names_order("Magento Order ID: 100000001", "100000001", "58")
    assert note_identity("Magento Order ID: 100000001") is None


def test_a_store_can_have_its_own_number_prefixes(tmp_path: Path) -> None:
    from app.mapping_file import MappingFileError, load_mapping

    def load_mapping_text(text: str) -> MappingConfig:
        path = tmp_path / "mapping.toml"
        path.write_text(text)
        return load_mapping(path)

    cfg = load_mapping_text('[stores.2]\ndoc_number_prefix = "S2-"\nrefund_number_prefix = "S2CM-"\n')
    two = MagentoOrder.model_validate({**blueprint_order(), "store_id": 2})
    one = MagentoOrder.model_validate({**blueprint_order(), "store_id": 1})
    assert doc_number(two, cfg.doc_prefix(two.store_id)) == "S2-100000001"
    assert doc_number(one, cfg.doc_prefix(one.store_id)) == "MAG-100000001"  # Magento's default numbering: unchanged
    assert (cfg.refund_prefix(2), cfg.payment_prefix(2), cfg.refund_prefix(None)) == ("S2CM-", "MAG-PAY-", "MAG-CM-")
    assert cfg.doc_prefixes == ("MAG-", "MAG-CM-", "S2-", "S2CM-")
    with pytest.raises(MappingFileError, match=r"stores\.x.*store_id"):
        load_mapping_text('[stores.x]\ndoc_number_prefix = "X-"\n')
    with pytest.raises(MappingFileError, match=r"stores\.3.*must differ"):
        load_mapping_text('[stores.3]\ndoc_number_prefix = "MAG-CM-"\n')


def test_purchase_order_payment_books_an_invoice_without_deposit_account() -> None:
    raw = blueprint_order()
    raw["payment"] = {"method": "purchaseorder"}
    mapped = map_order(MagentoOrder.model_validate(raw), REFS, CFG)
    assert mapped.doc_type == "Invoice"
    assert mapped.document.DepositToAccountRef is None


def test_amount_without_exact_unit_price_is_sent_alone() -> None:
    raw = blueprint_order()
    raw["items"][0].update({"qty_ordered": 3, "price": 3.33, "row_total": 10.00})
    mapped = map_order(MagentoOrder.model_validate(raw), REFS, CFG)
    line = mapped.document.Line[0]
    assert line.Amount == Decimal("10.00")
    assert line.SalesItemLineDetail is not None
    assert line.SalesItemLineDetail.Qty is None and line.SalesItemLineDetail.UnitPrice is None
    assert line.Description == "Product A (qty 3)"


def test_payment_rules_choose_the_document_and_its_refs() -> None:
    cfg = MappingConfig(payment_rules={
        "checkmo": PaymentRule(document="SalesReceipt", deposit_account_id="35", payment_method_id="2"),
        "purchaseorder": PaymentRule(document="Invoice", terms_id="3", due_days=14)})
    receipt = map_order(_blueprint(), REFS, cfg)
    assert receipt.doc_type == "SalesReceipt"
    assert (receipt.document.DepositToAccountRef, receipt.document.PaymentMethodRef) == (Ref(value="35"), Ref(value="2"))
    invoice = map_order(MagentoOrder.model_validate({**blueprint_order(), "payment": {"method": "purchaseorder"}}),
                        REFS, cfg)
    assert invoice.doc_type == "Invoice" and invoice.document.DepositToAccountRef is None
    assert (invoice.document.SalesTermRef, invoice.document.DueDate) == (Ref(value="3"), "2023-11-09")
    other = map_order(MagentoOrder.model_validate({**blueprint_order(), "payment": {"method": "braintree"}}), REFS, cfg)
    assert other.doc_type == "SalesReceipt" and other.document.DepositToAccountRef == Ref(value="4", name="Undeposited Funds")


def test_txn_date_is_the_store_day_not_utcs() -> None:
    late = MagentoOrder.model_validate({**blueprint_order(), "created_at": "2024-03-31 22:30:00"})
    assert map_order(late, REFS, CFG).document.TxnDate == "2024-03-31"
    assert map_order(late, REFS, MappingConfig(store_timezone="Europe/Warsaw")).document.TxnDate == "2024-04-01"
    assert map_order(late, REFS, MappingConfig(store_timezone="America/Los_Angeles")).document.TxnDate == "2024-03-31"


def test_foreign_currency_carries_currency_ref_and_exchange_rate() -> None:
    eur = MagentoOrder.model_validate({**blueprint_order(), "order_currency_code": "EUR", "base_currency_code": "USD",
                                       "base_to_order_rate": 0.8})
    doc = map_order(eur, REFS, CFG).document
    assert (doc.CurrencyRef, doc.ExchangeRate) == (Ref(value="EUR"), Decimal("1.25"))
    home = map_order(_blueprint(), REFS, CFG).document
    assert (home.CurrencyRef, home.ExchangeRate) == (Ref(value="USD"), None)
    # Base currency not the home currency: QBO applies its own rate for the day.
    gbp = MagentoOrder.model_validate({**blueprint_order(), "order_currency_code": "EUR", "base_currency_code": "GBP",
                                       "base_to_order_rate": 1.17})
    assert map_order(gbp, REFS, CFG).document.ExchangeRate is None


def test_non_us_tax_codes_by_rate() -> None:
    order = MagentoOrder.model_validate(magento_fixture("vuestorefront")["items"][0])  # a search result
    cfg = MappingConfig(tax_mode="global", tax_prices="TaxExcluded", tax_codes={"23": "PL23", "0": "PL0"})
    needs = item_needs(order, cfg)
    refs = ResolvedRefs("1", "Piotr Karwatka", {n.name: n.name for n in needs})
    mapped = map_order(order, refs, cfg)
    assert mapped.document.GlobalTaxCalculation == "TaxExcluded"
    codes = [ln.SalesItemLineDetail.TaxCodeRef.value for ln in mapped.document.Line if ln.SalesItemLineDetail]
    assert codes == ["PL23", "PL0"]  # the tee at 23 %, shipping untaxed
    assert mapped.document.computed_total() == Decimal("28.00") and mapped.mismatch is None
