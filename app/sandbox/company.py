"""One QBO company (realm) in memory: its lists, its sales forms and QBO's create rules.

Responses follow the real shapes in reference/fixtures/qbo/: string Ids and
SyncTokens, MetaData, `domain`/`sparse`, a SubTotal line on sales forms,
TotalAmt computed by the server, ref names filled in.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from app.sandbox import faults
from app.sandbox.faults import COMPANY_TZ, meta_time

CURRENCY_NAMES = {"USD": "United States Dollar", "EUR": "Euro", "GBP": "British Pound Sterling",
                  "CAD": "Canadian Dollar", "PLN": "Polish Zloty", "AUD": "Australian Dollar"}


def currency_ref(code: str) -> dict[str, str]:
    return {"value": code, "name": CURRENCY_NAMES.get(code, code)}


ENTITIES = ("Account", "Customer", "Vendor", "Item", "TaxCode", "SalesReceipt", "Invoice", "RefundReceipt", "CreditMemo",
            "Payment")
NAME_LISTS = {"Account", "Customer", "Vendor", "Item", "TaxCode"}
# DisplayName is unique across these name lists (Employee is not simulated).
PEOPLE = ("Customer", "Vendor")
# The sales forms share one DocNumber space (6140 names the holder's TxnType).
SALES_FORMS = {"SalesReceipt": "Sales Receipt", "Invoice": "Invoice", "RefundReceipt": "Refund Receipt",
               "CreditMemo": "Credit Memo"}
# What `?operation=void` applies to (reference/qbo.md: not CreditMemo).
VOIDABLE = {"SalesReceipt", "Invoice", "RefundReceipt", "Payment"}
URL_ENTITIES = {e.lower(): e for e in ENTITIES}
CREATABLE = {"customer": "Customer", "vendor": "Vendor", "item": "Item", "salesreceipt": "SalesReceipt",
             "invoice": "Invoice", "refundreceipt": "RefundReceipt", "creditmemo": "CreditMemo", "payment": "Payment"}

_BAD_NAME_CHARS = re.compile(r"[:\t\n]")
CENT = Decimal("0.01")


def _money(value: Any, element: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise faults.request_body_invalid(f'{element} must be a number')
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise faults.request_body_invalid(f'{element} must be a number') from None
    if not d.is_finite():
        raise faults.request_body_invalid(f'{element} must be finite')
    return d


def _amount(d: Decimal) -> Decimal:
    """QBO prints non-zero amounts with scale 2 and zero as 0."""
    return Decimal(0) if d == 0 else d.quantize(CENT, rounding=ROUND_HALF_UP)


def _thousands(d: Decimal) -> str:
    return f"{d:,}"


@dataclass
class Company:
    realm_id: str
    entities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {e: {} for e in ENTITIES})
    next_id: dict[str, int] = field(default_factory=dict)
    doc_numbers: dict[str, tuple[str, str]] = field(default_factory=dict)  # DocNumber → (TxnType, Id)
    next_doc_number: int = 1001
    dirty: set[tuple[str, str]] = field(default_factory=set)  # (entity, Id) changed since the last flush
    # Sales tax codes beyond TAX/NON, Id → Name (a non-US company's VAT/GST codes): --tax-code 5="23% VAT"
    extra_tax_codes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not any(self.entities.values()):
            self._seed()

    # ------------------------------------------------------------ a new US sandbox company

    def _seed(self) -> None:
        now = meta_time()
        meta = {"CreateTime": now, "LastUpdatedTime": now}

        def account(id_: str, name: str, type_: str, sub: str) -> None:
            self.entities["Account"][id_] = {
                "Name": name, "SubAccount": False, "FullyQualifiedName": name, "Active": True,
                "Classification": "Revenue" if type_ == "Income" else "Asset", "AccountType": type_,
                "AccountSubType": sub, "CurrentBalance": 0, "CurrentBalanceWithSubAccounts": 0,
                "CurrencyRef": currency_ref("USD"),
                "domain": "QBO", "sparse": False, "Id": id_, "SyncToken": "0", "MetaData": dict(meta),
            }

        # The Ids a new QBO sandbox company uses for these accounts.
        account("4", "Undeposited Funds", "Other Current Asset", "UndepositedFunds")
        account("35", "Checking", "Bank", "Checking")
        account("1", "Services", "Income", "ServiceFeeIncome")
        account("79", "Sales of Product Income", "Income", "SalesOfProductIncome")
        account("86", "Discounts given", "Income", "DiscountsRefundsGiven")
        account("80", "Cost of Goods Sold", "Cost of Goods Sold", "SuppliesMaterialsCogs")
        account("81", "Inventory Asset", "Other Current Asset", "Inventory")
        for code, name in (("TAX", "TAX"), ("NON", "NON"), *self.extra_tax_codes.items()):
            self.entities["TaxCode"][code] = {
                "Name": name, "Description": name, "Active": True, "Taxable": code != "NON", "TaxGroup": False,
                "domain": "QBO", "sparse": False, "Id": code, "SyncToken": "0", "MetaData": dict(meta),
            }
        self.next_id = {"Account": 100, "Customer": 1, "Item": 1, "SalesReceipt": 1, "Invoice": 130, "TaxCode": 1}
        self._store_item({"Name": "Services", "Type": "Service", "IncomeAccountRef": {"value": "1"}})
        self._store_item({"Name": "Shipping", "Type": "Service", "IncomeAccountRef": {"value": "79"},
                          "Description": "Shipping and handling"})
        self.all_dirty()

    # ------------------------------------------------------------ helpers

    def _new_id(self, entity: str) -> str:
        n = self.next_id.get(entity, 1)
        self.next_id[entity] = n + 1
        return str(n)

    def _base(self, entity: str) -> dict[str, Any]:
        now = meta_time()
        return {"domain": "QBO", "sparse": False, "Id": self._new_id(entity), "SyncToken": "0",
                "MetaData": {"CreateTime": now, "LastUpdatedTime": now}}

    def _put(self, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.entities[entity][obj["Id"]] = obj
        self.dirty.add((entity, obj["Id"]))
        return obj

    def meta(self) -> dict[str, Any]:
        return {"next_id": self.next_id, "doc_numbers": self.doc_numbers, "next_doc_number": self.next_doc_number}

    def load(self, entities: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
        self.entities = {e: dict(entities.get(e, {})) for e in ENTITIES}
        self.next_id = {k: int(v) for k, v in meta["next_id"].items()}
        self.doc_numbers = {k: (v[0], v[1]) for k, v in meta["doc_numbers"].items()}
        self.next_doc_number = int(meta["next_doc_number"])
        self.dirty.clear()

    def all_dirty(self) -> None:
        self.dirty = {(e, i) for e, rows in self.entities.items() for i in rows}

    def current(self, entity: str, body: Any) -> dict[str, Any]:
        """The stored object an update, delete or void names by {"Id", "SyncToken"}: 610 when there is
        none, 5010 when the SyncToken is not the current one."""
        id_ = str(body.get("Id", "")) if isinstance(body, dict) else ""
        existing = self.entities[entity].get(id_)
        if existing is None:
            raise faults.object_not_found(entity, id_)
        if str(body.get("SyncToken")) != existing["SyncToken"]:
            raise faults.stale_object()
        return existing

    def delete(self, entity: str, body: Any) -> dict[str, Any]:
        """`POST /<entity>?operation=delete` with {"Id", "SyncToken"}: the sales form is gone, its
        DocNumber free again."""
        existing = self.current(entity, body)
        id_ = existing["Id"]
        del self.entities[entity][id_]
        number = existing.get("DocNumber")
        if number is not None and self.doc_numbers.get(number, ("", ""))[1] == id_:
            del self.doc_numbers[number]
        self.dirty.add((entity, id_))
        return {"domain": "QBO", "status": "Deleted", "Id": id_}

    def update(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /customer|/item` with {"Id", "SyncToken", "sparse": true, …}: the fields given replace
        the stored ones (a full update is taken as sparse here). Making a customer or item inactive
        renames it "<name> (deleted)", as QBO does, which frees its name (reference/qbo.md)."""
        existing = self.current(entity, body)
        changes = {k: v for k, v in body.items() if k not in ("Id", "SyncToken", "sparse", "domain", "MetaData")}
        updated = {**existing, **changes, "SyncToken": str(int(existing["SyncToken"]) + 1),
                   "MetaData": {**existing["MetaData"], "LastUpdatedTime": meta_time()}}
        if changes.get("Active") is False and existing.get("Active", True):
            key = "DisplayName" if entity in PEOPLE else "Name"
            updated[key] = f"{existing[key]} (deleted)"
            if entity == "Item":
                updated["FullyQualifiedName"] = updated[key]
        return self._put(entity, updated)

    def get(self, entity: str, id_: str) -> dict[str, Any] | None:
        return self.entities[entity].get(id_)

    def rows(self, entity: str) -> list[dict[str, Any]]:
        return list(self.entities[entity].values())

    def _ref(self, entity: str, ref: Any, element: str, name_key: str) -> dict[str, Any]:
        if not isinstance(ref, dict) or not ref.get("value"):
            raise faults.required_missing(element)
        target = self.entities[entity].get(str(ref["value"]))
        if target is None or not target.get("Active", True):
            raise faults.invalid_reference(element, str(ref["value"]))
        return {"value": target["Id"], "name": target.get(name_key, "")}

    def _name_taken(self, entity_types: tuple[str, ...], key: str, name: str) -> bool:
        wanted = name.strip().lower()
        return any(
            str(e.get(key, "")).strip().lower() == wanted and e.get("Active", True)
            for t in entity_types
            for e in self.entities[t].values()
        )

    # ------------------------------------------------------------ create

    def create(self, entity: str, body: dict[str, Any], allow_duplicate_docnum: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise faults.request_body_invalid("request body must be a JSON object")
        if entity in PEOPLE:
            return self._create_person(entity, body)
        if entity == "Item":
            return self._create_item(body)
        if entity == "Payment":
            return self._create_payment(body)
        return self._create_sales_form(entity, body, allow_duplicate_docnum)

    # ------------------------------------------------------------ payments, balances, void

    def _customer_balance(self, customer_id: str | None, delta: Decimal) -> None:
        """What the customer owes: Invoices add, CreditMemos and Payments take away (voids undo)."""
        customer = self.entities["Customer"].get(customer_id) if customer_id else None
        if customer is None or delta == 0:
            return
        balance = Decimal(str(customer.get("Balance", 0))) + delta
        customer["Balance"] = customer["BalanceWithJobs"] = _amount(balance)
        self.dirty.add(("Customer", customer["Id"]))

    def _create_payment(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /payment`: money received from a customer; Lines with LinkedTxn settle Invoices (their
        Balance drops, they list the Payment in their LinkedTxn). What no line applies is UnappliedAmt."""
        ref = self._ref("Customer", body.get("CustomerRef"), "CustomerRef", "DisplayName")
        if body.get("TotalAmt") is None:
            raise faults.required_missing("TotalAmt")
        total = _money(body["TotalAmt"], "TotalAmt")
        if total < 0:
            raise faults.business_validation("TotalAmt must not be negative", "TotalAmt")
        lines_in = body.get("Line") or []
        if not isinstance(lines_in, list):
            raise faults.request_body_invalid("Line must be a list")
        settled: list[tuple[dict[str, Any], Decimal]] = []
        applied = Decimal(0)
        lines = []
        for raw in lines_in:
            if not isinstance(raw, dict) or "Amount" not in raw:
                raise faults.required_missing("Line.Amount")
            amount = _money(raw["Amount"], "Line.Amount")
            linked = raw.get("LinkedTxn") or []
            if not isinstance(linked, list) or len(linked) != 1 or not isinstance(linked[0], dict):
                raise faults.required_missing("Line.LinkedTxn")
            txn_id, txn_type = str(linked[0].get("TxnId", "")), linked[0].get("TxnType")
            if txn_type != "Invoice":
                raise faults.request_body_invalid(f"LinkedTxn.TxnType {str(txn_type)[:20]!r} is not supported")
            invoice = self.entities["Invoice"].get(txn_id)
            if invoice is None:
                raise faults.object_not_found("Invoice", txn_id)
            if invoice["CustomerRef"]["value"] != ref["value"]:
                raise faults.business_validation(f"Invoice {txn_id} is not customer {ref['value']}'s", "LinkedTxn")
            if amount > Decimal(str(invoice.get("Balance", 0))):
                raise faults.business_validation(
                    f"The payment amount {_thousands(amount)} is more than the open balance of Invoice {txn_id}",
                    "Line.Amount")
            settled.append((invoice, amount))
            applied += amount
            lines.append({"Amount": _amount(amount), "LinkedTxn": [{"TxnId": txn_id, "TxnType": "Invoice"}]})
        if applied > total:
            raise faults.business_validation("The lines apply more than the payment's TotalAmt", "TotalAmt")
        base = self._base("Payment")
        payment = {
            "domain": base.pop("domain"), "sparse": base.pop("sparse"), **base,
            "CustomerRef": ref, "TotalAmt": _amount(total), "UnappliedAmt": _amount(total - applied),
            "TxnDate": body.get("TxnDate") or datetime.now(COMPANY_TZ).date().isoformat(), "Line": lines,
            "CurrencyRef": currency_ref(str((body.get("CurrencyRef") or {}).get("value", "USD")).upper()),
            "ProcessPayment": False,
        }
        deposit = body.get("DepositToAccountRef") or {"value": "4"}
        payment["DepositToAccountRef"] = self._ref("Account", deposit, "DepositToAccountRef", "Name")
        for key in ("PaymentMethodRef",):
            if isinstance(body.get(key), dict) and body[key].get("value") is not None:
                payment[key] = {"value": str(body[key]["value"])}
        if body.get("PaymentRefNum") is not None:
            payment["PaymentRefNum"] = str(body["PaymentRefNum"])[:21]
        if body.get("PrivateNote") is not None:
            payment["PrivateNote"] = str(body["PrivateNote"])
        self._put("Payment", payment)
        for invoice, amount in settled:
            invoice["Balance"] = _amount(Decimal(str(invoice["Balance"])) - amount)
            invoice.setdefault("LinkedTxn", []).append({"TxnId": payment["Id"], "TxnType": "Payment"})
            self._bump(invoice)
            self.dirty.add(("Invoice", invoice["Id"]))
        self._customer_balance(ref["value"], -total)
        return payment

    def _bump(self, obj: dict[str, Any]) -> None:
        obj["SyncToken"] = str(int(obj["SyncToken"]) + 1)
        obj.setdefault("MetaData", {})["LastUpdatedTime"] = datetime.now(COMPANY_TZ).isoformat(timespec="seconds")

    def void(self, entity: str, body: Any) -> dict[str, Any]:
        """`POST /<entity>?operation=void` with {"Id", "SyncToken"}: the document stays, its amounts become 0,
        its PrivateNote "Voided", SyncToken + 1; a stale SyncToken is 5010. A voided Invoice's open balance,
        a voided Payment's money, leave the customer's balance; a voided Payment reopens its Invoices."""
        if entity not in VOIDABLE:
            raise faults.unsupported_operation(f"/{entity.lower()}?operation=void")
        doc = self.current(entity, body)
        id_ = doc["Id"]
        if doc.get("PrivateNote") == "Voided":
            return doc
        customer = (doc.get("CustomerRef") or {}).get("value")
        if entity == "Invoice":
            if any(t.get("TxnType") == "Payment" for t in doc.get("LinkedTxn", [])):
                raise faults.business_validation("This invoice has payments applied to it: void or delete them "
                                                 "first", "LinkedTxn")
            self._customer_balance(customer, -Decimal(str(doc.get("Balance", 0))))
        if entity == "Payment":
            for line in doc.get("Line", []):
                for txn in line.get("LinkedTxn", []):
                    invoice = self.entities["Invoice"].get(str(txn.get("TxnId")))
                    if invoice is not None:
                        invoice["Balance"] = _amount(Decimal(str(invoice["Balance"])) + Decimal(str(line["Amount"])))
                        invoice["LinkedTxn"] = [t for t in invoice.get("LinkedTxn", []) if t.get("TxnId") != id_]
                        self._bump(invoice)
                        self.dirty.add(("Invoice", invoice["Id"]))
            self._customer_balance(customer, Decimal(str(doc.get("TotalAmt", 0))))
            doc["UnappliedAmt"] = 0
        for line in doc.get("Line", []):
            if "Amount" in line:
                line["Amount"] = 0
        doc["TotalAmt"] = 0
        if "Balance" in doc:
            doc["Balance"] = 0
        if "TxnTaxDetail" in doc:
            doc["TxnTaxDetail"] = {"TotalTax": 0}
        doc["PrivateNote"] = "Voided"
        self._bump(doc)
        self.dirty.add((entity, id_))
        return doc

    def _create_person(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        parts = [body.get(k) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")]
        display = body.get("DisplayName") or " ".join(str(p) for p in parts if p)
        if not display or not str(display).strip():
            raise faults.required_missing("DisplayName")
        display = str(display)
        if len(display) > 500:
            raise faults.too_long("DisplayName", 500, len(display))
        for key in ("DisplayName", "GivenName", "MiddleName", "FamilyName", "Title", "Suffix"):
            if key in body and isinstance(body[key], str) and _BAD_NAME_CHARS.search(body[key] if key != "DisplayName" else display):
                raise faults.invalid_name_chars(key)
        if self._name_taken(PEOPLE, "DisplayName", display):
            raise faults.duplicate_name()
        email = (body.get("PrimaryEmailAddr") or {}).get("Address")
        if email is not None and len(str(email)) > 100:
            raise faults.too_long("PrimaryEmailAddr.Address", 100, len(str(email)))
        if entity == "Customer":
            customer = {
                "Taxable": True, "Job": False, "BillWithParent": False, "Balance": 0, "BalanceWithJobs": 0,
                "CurrencyRef": currency_ref("USD"), "PreferredDeliveryMethod": "Print",
                **self._base(entity),
            }
        else:
            customer = {"Balance": 0, "Vendor1099": False,
                        "CurrencyRef": currency_ref("USD"), **self._base(entity)}
        for key in ("GivenName", "MiddleName", "FamilyName", "CompanyName", "Title", "Suffix", "PrimaryEmailAddr",
                    "BillAddr", "ShipAddr", "PrimaryPhone", "Notes"):
            if body.get(key) is not None:
                customer[key] = copy.deepcopy(body[key])
        currency = body.get("CurrencyRef")
        if isinstance(currency, dict) and str(currency.get("value", "")).strip():
            code = str(currency["value"]).upper()
            customer["CurrencyRef"] = currency_ref(code)
        if entity == "Customer":
            customer.update({"FullyQualifiedName": display, "DisplayName": display, "PrintOnCheckName": display,
                             "Active": True, "DefaultTaxCodeRef": {"value": "2"}})
        else:
            customer.update({"DisplayName": display, "PrintOnCheckName": display, "Active": True})
        return self._put(entity, customer)

    def _create_item(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("Name")
        if not name or not str(name).strip():
            raise faults.required_missing("Name")
        name = str(name)
        if len(name) > 100:
            raise faults.too_long("Name", 100, len(name))
        if _BAD_NAME_CHARS.search(name):
            raise faults.invalid_name_chars("Name")
        type_ = body.get("Type")
        if type_ not in ("Inventory", "Service", "NonInventory"):
            raise faults.required_missing("Type")
        if self._name_taken(("Item",), "Name", name):
            raise faults.duplicate_name()
        if body.get("IncomeAccountRef") is not None:
            self._ref("Account", body["IncomeAccountRef"], "IncomeAccountRef", "Name")
        elif type_ in ("Inventory", "Service"):
            raise faults.required_missing("IncomeAccountRef")
        if type_ == "Inventory":
            for required in ("QtyOnHand", "InvStartDate", "AssetAccountRef", "ExpenseAccountRef"):
                if body.get(required) is None:
                    raise faults.required_missing(required)
            self._ref("Account", body["AssetAccountRef"], "AssetAccountRef", "Name")
            self._ref("Account", body["ExpenseAccountRef"], "ExpenseAccountRef", "Name")
        return self._store_item(body)

    def _store_item(self, body: dict[str, Any]) -> dict[str, Any]:
        inventory = body["Type"] == "Inventory"
        item = {
            "Name": body["Name"], "Active": True, "FullyQualifiedName": body["Name"], "Taxable": False,
            "UnitPrice": body.get("UnitPrice", 0), "Type": body["Type"], "PurchaseCost": body.get("PurchaseCost", 0),
            "TrackQtyOnHand": inventory, **self._base("Item"),
        }
        for key in ("Sku", "Description", "PurchaseDesc", "QtyOnHand", "InvStartDate"):
            if body.get(key) is not None:
                item[key] = body[key]
        for key in ("IncomeAccountRef", "AssetAccountRef", "ExpenseAccountRef"):
            if body.get(key):
                acct = self.entities["Account"][str(body[key]["value"])]
                item[key] = {"value": acct["Id"], "name": acct["Name"]}
        return self._put("Item", item)

    def _create_sales_form(self, entity: str, body: dict[str, Any], allow_duplicate_docnum: bool) -> dict[str, Any]:
        lines_in = body.get("Line")
        if not isinstance(lines_in, list) or not lines_in:
            raise faults.required_missing("Line")
        doc_number = body.get("DocNumber")
        if doc_number is not None:
            doc_number = str(doc_number)
            if len(doc_number) > 21:
                raise faults.too_long("DocNumber", 21, len(doc_number))
            if doc_number in self.doc_numbers and not allow_duplicate_docnum:
                txn_type, txn_id = self.doc_numbers[doc_number]
                raise faults.duplicate_doc_number(doc_number, txn_type, txn_id)

        doc: dict[str, Any] = {}
        customer: dict[str, Any] | None = None
        if body.get("CustomerRef") is not None or entity == "Invoice":
            doc["CustomerRef"] = self._ref("Customer", body.get("CustomerRef"), "CustomerRef", "DisplayName")
            customer = self.entities["Customer"][doc["CustomerRef"]["value"]]

        lines: list[dict[str, Any]] = []
        subtotal = Decimal(0)
        discount = Decimal(0)
        for n, raw in enumerate(lines_in, start=1):
            if not isinstance(raw, dict):
                raise faults.request_body_invalid("Line must be an object")
            if "Amount" not in raw:
                raise faults.required_missing("Amount")
            amount = _money(raw["Amount"], "Line.Amount")
            detail_type = raw.get("DetailType")
            line: dict[str, Any] = {"Id": str(n), "LineNum": n}
            if raw.get("Description") is not None:
                line["Description"] = raw["Description"]
            if detail_type == "SalesItemLineDetail":
                d = raw.get("SalesItemLineDetail") or {}
                out: dict[str, Any] = {"ItemRef": self._ref("Item", d.get("ItemRef"), "SalesItemLineDetail.ItemRef", "Name")}
                qty = d.get("Qty")
                price = d.get("UnitPrice")
                if qty is not None and price is not None:
                    q, p = _money(qty, "Qty"), _money(price, "UnitPrice")
                    if (q * p).quantize(CENT, rounding=ROUND_HALF_UP) != amount.quantize(CENT, rounding=ROUND_HALF_UP):
                        raise faults.amount_mismatch(_thousands(amount))
                if price is not None:
                    out["UnitPrice"] = _money(price, "UnitPrice")
                if qty is not None:
                    out["Qty"] = _money(qty, "Qty")
                tax = d.get("TaxCodeRef") or {"value": "NON"}
                out["TaxCodeRef"] = {"value": self._ref("TaxCode", tax, "TaxCodeRef", "Name")["value"]}
                line.update({"Amount": _amount(amount), "DetailType": detail_type, "SalesItemLineDetail": out})
                subtotal += amount
            elif detail_type == "DiscountLineDetail":
                d = raw.get("DiscountLineDetail") or {}
                out = {"PercentBased": bool(d.get("PercentBased", False))}
                if d.get("DiscountPercent") is not None:
                    out["DiscountPercent"] = _money(d["DiscountPercent"], "DiscountPercent")
                if d.get("DiscountAccountRef") is not None:
                    out["DiscountAccountRef"] = self._ref("Account", d["DiscountAccountRef"], "DiscountAccountRef", "Name")
                line.update({"Amount": _amount(amount), "DetailType": detail_type, "DiscountLineDetail": out})
                discount += amount
            elif detail_type == "DescriptionOnly":
                line.update({"DetailType": detail_type, "DescriptionLineDetail": {}})
            else:
                raise faults.request_body_invalid(f"Line.DetailType {detail_type!r} is not supported")
            lines.append(line)
        lines.append({"Amount": _amount(subtotal), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})

        tax_detail = body.get("TxnTaxDetail") or {}
        total_tax = _money(tax_detail.get("TotalTax", 0), "TxnTaxDetail.TotalTax")
        calculation = body.get("GlobalTaxCalculation")
        if calculation not in (None, "TaxExcluded", "TaxInclusive", "NotApplicable"):
            raise faults.request_body_invalid(f"GlobalTaxCalculation {str(calculation)[:30]!r} is not supported")
        # With tax-inclusive prices the lines already hold the tax.
        total = subtotal - discount + (total_tax if calculation != "TaxInclusive" else 0)
        currency = body.get("CurrencyRef") or {"value": "USD"}
        if not isinstance(currency, dict) or not str(currency.get("value", "")).strip():
            raise faults.request_body_invalid("CurrencyRef must be an object with a value")
        code = str(currency["value"]).upper()

        base = self._base(entity)
        if entity == "Invoice":
            doc.update({"AllowIPNPayment": False, "AllowOnlinePayment": False, "AllowOnlineCreditCardPayment": False,
                        "AllowOnlineACHPayment": False})
        if doc_number is None:
            doc_number = str(self.next_doc_number)
            self.next_doc_number += 1
        txn_date = body.get("TxnDate") or datetime.now(COMPANY_TZ).date().isoformat()
        try:
            date.fromisoformat(str(txn_date))
        except ValueError:
            raise faults.request_body_invalid(f"TxnDate {str(txn_date)[:30]!r} is not a date (yyyy-MM-dd)") from None
        doc.update({
            "domain": base.pop("domain"), "sparse": base.pop("sparse"), **base,
            "DocNumber": doc_number, "TxnDate": txn_date,
            "CurrencyRef": currency_ref(code),
            "Line": lines,
            "TxnTaxDetail": {"TotalTax": _amount(total_tax)},
            "TotalAmt": _amount(total),
            "PrintStatus": "NotSet", "EmailStatus": "NotSet",
        })
        if body.get("PrivateNote") is not None:
            doc["PrivateNote"] = str(body["PrivateNote"])
        if body.get("ExchangeRate") is not None:
            doc["ExchangeRate"] = _money(body["ExchangeRate"], "ExchangeRate")
        if calculation is not None:
            doc["GlobalTaxCalculation"] = calculation
        for ref in ("PaymentMethodRef", "SalesTermRef"):
            if isinstance(body.get(ref), dict) and body[ref].get("value") is not None:
                doc[ref] = {"value": str(body[ref]["value"])}
        for addr in ("BillAddr", "ShipAddr"):
            source = body.get(addr) or (customer or {}).get(addr)
            if source:
                doc[addr] = copy.deepcopy(source)
        doc["ApplyTaxAfterDiscount"] = bool(body.get("ApplyTaxAfterDiscount", False))
        if entity in ("SalesReceipt", "RefundReceipt"):
            deposit = body.get("DepositToAccountRef")
            if deposit is None and entity == "RefundReceipt":
                raise faults.required_missing("DepositToAccountRef")  # the account the refund is paid from
            doc["DepositToAccountRef"] = self._ref("Account", deposit or {"value": "4"}, "DepositToAccountRef", "Name")
            doc["Balance"] = 0
        elif entity == "CreditMemo":
            if customer is None:
                raise faults.required_missing("CustomerRef")
            doc["RemainingCredit"] = _amount(total)
            doc["Balance"] = _amount(total)
            self._customer_balance(doc["CustomerRef"]["value"], -total)
        else:
            doc["LinkedTxn"] = []
            doc["PrintStatus"] = "NeedToPrint"
            doc["Deposit"] = 0
            doc["Balance"] = _amount(total)
            # The sandbox company's default terms: net 30 (observed DueDate = TxnDate + 30 d).
            doc["DueDate"] = body.get("DueDate") or (date.fromisoformat(txn_date) + timedelta(days=30)).isoformat()
            self._customer_balance(doc["CustomerRef"]["value"], total)
        self.doc_numbers.setdefault(doc_number, (SALES_FORMS[entity], doc["Id"]))
        return self._put(entity, doc)

