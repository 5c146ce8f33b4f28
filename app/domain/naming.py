"""Names QuickBooks accepts: no colon, tab or newline; HTML entities decoded; trimmed; length-capped."""

from __future__ import annotations

import html
import re

DISPLAY_NAME_MAX = 500
ITEM_NAME_MAX = 100

_FORBIDDEN = re.compile(r"[:\t\r\n\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s{2,}")


def clean_name(raw: str, max_len: int) -> str:
    text = html.unescape(raw)
    text = _FORBIDDEN.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    return text[:max_len].rstrip()


def with_qualifier(name: str, qualifier: str) -> str:
    """"Jane Doe" + "EUR" → "Jane Doe (EUR)": the name shortened, never the qualifier, to stay ≤ 500."""
    suffix = f" ({clean_name(qualifier, 200)})"
    return clean_name(name, DISPLAY_NAME_MAX - len(suffix)) + suffix


def customer_display_name(first: str | None, last: str | None, email: str) -> str:
    """"First Last" from the order, or the e-mail when a guest left no name."""
    full = " ".join(p.strip() for p in (first or "", last or "") if p and p.strip())
    name = clean_name(full, DISPLAY_NAME_MAX)
    return name or clean_name(email, DISPLAY_NAME_MAX)


def item_name(sku: str) -> str:
    """The QBO Item Name of a Magento product: its SKU (unique in Magento, stable, ≤ 100)."""
    return clean_name(sku, ITEM_NAME_MAX)


def qbo_quote(value: str) -> str:
    """A QBO query string literal: backslash-escape backslashes and apostrophes (O'Brien → O\\'Brien)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
