"""The mapping file: how Magento orders become QuickBooks documents, without code.

One TOML file, its path in `MAGQB_MAPPING_FILE`; every key has a default, so no file
at all is a valid configuration (`docs/mapping.example.toml` lists them all). A bad
file stops start-up with the offending key and the reason.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.domain.mapping import DOC_NUMBER_PREFIX_MAX, MappingConfig, PaymentRule, StoreNumbers, normalise_rate
from app.domain.naming import ITEM_NAME_MAX

TAX_RATE_HELP = "a Magento tax rate in percent, e.g. \"23\" or \"8.25\""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Accounts(_Section):
    deposit: str = Field("4", min_length=1, description="SalesReceipt DepositToAccountRef (4 = Undeposited Funds)")
    deposit_name: str = "Undeposited Funds"
    discount: str = Field("86", min_length=1, description="DiscountLineDetail DiscountAccountRef")
    income: str = Field("79", min_length=1, description="IncomeAccountRef of items magqb creates")


class Items(_Section):
    type: Literal["NonInventory", "Service"] = "NonInventory"
    shipping: str = Field("Shipping", min_length=1, max_length=ITEM_NAME_MAX)
    adjustment: str = Field("Rounding Adjustment", min_length=1, max_length=ITEM_NAME_MAX)
    refund_adjustment: str = Field("Refund Adjustment", min_length=1, max_length=ITEM_NAME_MAX)
    refund_fee: str = Field("Refund Fee", min_length=1, max_length=ITEM_NAME_MAX)


class Customers(_Section):
    guests: Literal["per_email", "single"] = "per_email"
    guest_name: str = Field("Web Store Guest", min_length=1, max_length=500)


class Tax(_Section):
    mode: Literal["us", "global"] = "us"
    prices: Literal["TaxExcluded", "TaxInclusive"] = "TaxExcluded"
    codes: dict[str, str] = Field(default_factory=dict)
    zero_rate_code: str | None = None

    @field_validator("codes")
    @classmethod
    def _rates(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for rate, code in v.items():
            try:
                value = Decimal(rate)
            except ArithmeticError:
                value = Decimal("NaN")
            if not value.is_finite() or value < 0 or value > 100:
                raise ValueError(f"key {rate!r} is not {TAX_RATE_HELP}")
            key = normalise_rate(value)
            if not str(code).strip():
                raise ValueError(f"rate {rate!r} maps to an empty tax code")
            out[key] = str(code).strip()
        return out


class Totals(_Section):
    adjustment_tolerance: Decimal = Field(Decimal("0.05"), ge=0, le=1)


class Payment(_Section):
    document: Literal["SalesReceipt", "Invoice"] = "SalesReceipt"
    deposit_account: str | None = None
    refund_account: str | None = None
    payment_method: str | None = None
    terms: str | None = None
    due_days: int | None = Field(None, ge=0, le=3650)


DEFAULT_METHODS = {"purchaseorder": Payment(document="Invoice")}


class Payments(_Section):
    default: Payment = Payment()
    # Merged over the built-in rules: naming another method does not drop purchaseorder → Invoice.
    methods: dict[str, Payment] = Field(default_factory=lambda: dict(DEFAULT_METHODS))

    @field_validator("methods")
    @classmethod
    def _over_defaults(cls, v: dict[str, Payment]) -> dict[str, Payment]:
        return {**DEFAULT_METHODS, **v}


PREFIX = r"^[A-Za-z0-9_.#/-]*$"


class Store(_Section):
    """`[stores.<store_id>]`: a store's own number prefixes, for stores whose increment ids collide
    (two store views on one numbering, or sequences reset per store)."""

    doc_number_prefix: str | None = Field(None, max_length=DOC_NUMBER_PREFIX_MAX, pattern=PREFIX)
    refund_number_prefix: str | None = Field(None, max_length=DOC_NUMBER_PREFIX_MAX, pattern=PREFIX)
    payment_number_prefix: str | None = Field(None, max_length=DOC_NUMBER_PREFIX_MAX, pattern=PREFIX)


class MappingFile(_Section):
    # ≤ 8: a shortened DocNumber needs 13 characters of hash within QBO's 21.
    doc_number_prefix: str = Field("MAG-", max_length=DOC_NUMBER_PREFIX_MAX, pattern=r"^[A-Za-z0-9_.#/-]*$")
    refund_number_prefix: str = Field("MAG-CM-", max_length=DOC_NUMBER_PREFIX_MAX, pattern=r"^[A-Za-z0-9_.#/-]*$")
    payment_number_prefix: str = Field("MAG-PAY-", max_length=DOC_NUMBER_PREFIX_MAX, pattern=r"^[A-Za-z0-9_.#/-]*$")
    store_timezone: str = "UTC"
    home_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    accounts: Accounts = Accounts()
    items: Items = Items()
    customers: Customers = Customers()
    tax: Tax = Tax()
    totals: Totals = Totals()
    payment: Payments = Payments()
    stores: dict[str, Store] = Field(default_factory=dict)

    @field_validator("stores")
    @classmethod
    def _store_ids(cls, v: dict[str, Store]) -> dict[str, Store]:
        for key in v:
            if not key.isdigit():
                raise ValueError(f"[stores.{key}]: a store is named by its Magento store_id (a number)")
        return v

    @model_validator(mode="after")
    def _distinct_numbers(self) -> MappingFile:
        # A refund's DocNumber lives in the sales forms' number space: it must never be a sale's.
        if self.refund_number_prefix == self.doc_number_prefix:
            raise ValueError("refund_number_prefix must differ from doc_number_prefix (a RefundReceipt shares the "
                             "sales forms' DocNumbers)")
        for key, store in self.stores.items():
            doc = store.doc_number_prefix or self.doc_number_prefix
            if (store.refund_number_prefix or self.refund_number_prefix) == doc:
                raise ValueError(f"[stores.{key}]: its refund_number_prefix must differ from its doc_number_prefix")
        return self

    @field_validator("store_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Warsaw)") from None
        return v

    def to_config(self) -> MappingConfig:
        def rule(p: Payment) -> PaymentRule:
            return PaymentRule(document=p.document, deposit_account_id=p.deposit_account,
                               refund_account_id=p.refund_account, payment_method_id=p.payment_method,
                               terms_id=p.terms, due_days=p.due_days)

        return MappingConfig(
            doc_number_prefix=self.doc_number_prefix,
            deposit_account_id=self.accounts.deposit,
            deposit_account_name=self.accounts.deposit_name,
            discount_account_id=self.accounts.discount,
            income_account_id=self.accounts.income,
            item_type=self.items.type,
            shipping_item_name=self.items.shipping,
            adjustment_item_name=self.items.adjustment,
            refund_adjustment_item_name=self.items.refund_adjustment,
            refund_fee_item_name=self.items.refund_fee,
            refund_number_prefix=self.refund_number_prefix,
            payment_number_prefix=self.payment_number_prefix,
            adjustment_tolerance=self.totals.adjustment_tolerance,
            store_timezone=self.store_timezone,
            home_currency=self.home_currency,
            guest_policy=self.customers.guests,
            guest_customer_name=self.customers.guest_name,
            tax_mode=self.tax.mode,
            tax_prices=self.tax.prices,
            tax_codes=dict(self.tax.codes),
            zero_rate_code=self.tax.zero_rate_code,
            default_payment=rule(self.payment.default),
            payment_rules={method: rule(p) for method, p in self.payment.methods.items()},
            stores={int(k): StoreNumbers(v.doc_number_prefix, v.refund_number_prefix, v.payment_number_prefix)
                    for k, v in self.stores.items()},
        )


class MappingFileError(Exception):
    """The mapping file cannot be used; the message names the file, the key and why."""


def load_mapping(path: Path | None) -> MappingConfig:
    if path is None:
        return MappingFile().to_config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingFileError(f"mapping file {path} (MAGQB_MAPPING_FILE) does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingFileError(f"mapping file {path} is not valid TOML: {exc}") from None
    try:
        return MappingFile.model_validate(raw).to_config()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {reason}")
        raise MappingFileError(f"mapping file {path}: " + "; ".join(problems)) from None
