"""QuickBooks Online documents as we send them (Accounting API v3 field names).

Amounts are Decimal; `app.jsonutil.dumps` writes them as exact JSON numbers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Qbo(BaseModel):
    model_config = ConfigDict(frozen=True)


class Ref(_Qbo):
    value: str
    name: str | None = None


class SalesItemDetail(_Qbo):
    ItemRef: Ref
    Qty: Decimal | None = None
    UnitPrice: Decimal | None = None
    TaxCodeRef: Ref | None = None


class DiscountDetail(_Qbo):
    PercentBased: bool = False
    DiscountAccountRef: Ref | None = None


class DocLine(_Qbo):
    Amount: Decimal
    DetailType: Literal["SalesItemLineDetail", "DiscountLineDetail"]
    Description: str | None = None
    SalesItemLineDetail: SalesItemDetail | None = None
    DiscountLineDetail: DiscountDetail | None = None


class TaxDetail(_Qbo):
    TotalTax: Decimal


DocType = Literal["SalesReceipt", "Invoice"]  # what an order books
RefundType = Literal["RefundReceipt", "CreditMemo"]  # what a credit memo books, by its order's DocType
FormType = Literal["SalesReceipt", "Invoice", "RefundReceipt", "CreditMemo"]


def lines_total(lines: list[DocLine], total_tax: Decimal, tax_inclusive: bool) -> Decimal:
    """What QBO computes as TotalAmt: item lines − discounts + tax (already in the lines when
    prices include tax)."""
    total = sum((-ln.Amount if ln.DetailType == "DiscountLineDetail" else ln.Amount for ln in lines), Decimal("0"))
    return total if tax_inclusive else total + total_tax


class SalesDocument(_Qbo):
    """A SalesReceipt, Invoice, RefundReceipt or CreditMemo body (the shared fields; the type says which
    endpoint). A RefundReceipt is a SalesReceipt paid out, a CreditMemo an Invoice taken back."""

    Line: list[DocLine]
    CustomerRef: Ref
    TxnDate: str | None = None  # yyyy-MM-dd; QBO uses its own date when absent
    DocNumber: str
    PrivateNote: str
    TxnTaxDetail: TaxDetail | None = None
    DepositToAccountRef: Ref | None = None  # SalesReceipt; RefundReceipt: the account it is paid from
    PaymentMethodRef: Ref | None = None  # SalesReceipt only
    SalesTermRef: Ref | None = None  # Invoice only
    DueDate: str | None = None  # Invoice only, yyyy-MM-dd
    GlobalTaxCalculation: Literal["TaxExcluded", "TaxInclusive", "NotApplicable"] | None = None  # non-US companies
    CurrencyRef: Ref | None = None  # when the order currency is not the company's home currency
    ExchangeRate: Decimal | None = None  # home-currency units per unit of CurrencyRef

    def to_qbo(self) -> dict[str, Any]:
        """The request body: None fields left out, Decimals kept for exact JSON numbers."""
        return self.model_dump(exclude_none=True, mode="python")

    def computed_total(self) -> Decimal:
        """What QBO will compute as TotalAmt (see `lines_total`)."""
        tax = self.TxnTaxDetail.TotalTax if self.TxnTaxDetail is not None else Decimal("0")
        return lines_total(self.Line, tax, self.GlobalTaxCalculation == "TaxInclusive")


class PaymentLine(_Qbo):
    Amount: Decimal
    LinkedTxn: list[dict[str, str]]  # [{"TxnId": the Invoice's Id, "TxnType": "Invoice"}]


class PaymentDocument(_Qbo):
    """A QBO `Payment` (the "Receive Payment" form): money in from a customer, applied to an Invoice."""

    CustomerRef: Ref
    TotalAmt: Decimal
    Line: list[PaymentLine]
    TxnDate: str | None = None
    PaymentRefNum: str  # ≤ 21 characters: the magqb number that finds it again
    PrivateNote: str
    DepositToAccountRef: Ref | None = None
    PaymentMethodRef: Ref | None = None
    CurrencyRef: Ref | None = None
    ExchangeRate: Decimal | None = None

    def to_qbo(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, mode="python")
