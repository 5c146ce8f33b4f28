"""Money rules: Decimal everywhere, rounded half-up to cents exactly once, where QBO needs it."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0")


def to_cents(amount: Decimal) -> Decimal:
    """Round half-up to two places, as QBO does (1861.075 → 1861.08)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def line_product(qty: Decimal, unit_price: Decimal) -> Decimal:
    """What QBO checks a line's Amount against (fault 6070 when they differ)."""
    return to_cents(qty * unit_price)
