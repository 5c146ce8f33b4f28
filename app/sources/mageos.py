"""Mage-OS async events (`mage-os/mageos-async-events`): one subscription, and one URL, per event.

Each POST is `{"data": <the order as GET /V1/orders/{id} returns it>}` with `x-magento-signature` =
hex HMAC-SHA256 of the body, keyed with the subscription's `verification_token`. The body is loaded
when Mage-OS's queue sends it, so it may already carry later changes: the order's `updated_at` and
state decide, not the event's name.
"""

from __future__ import annotations

from typing import Literal

PATH = "/webhooks/mageos/{event}"


def source(event: str) -> str:
    """The envelope's source: the event it came as (an update is a change feed, a creation is not)."""
    return f"mageos/{event}"

# What each event becomes: an order event, a cancellation (the order must be `canceled`), an order
# whose invoices may now be paid, or a note in the order's story that books nothing.
MageOsWhat = Literal["order", "cancellation", "paid", "notice"]
EVENTS: dict[str, MageOsWhat] = {
    "sales.order.created": "order",
    "sales.order.updated": "order",
    "sales.order.paid": "paid",
    "sales.order.cancelled": "cancellation",
    "sales.order.holded": "notice",
}


def parse_event_secrets(spec: str) -> dict[str, str]:
    """`MAGQB_MAGEOS_EVENT_SECRETS`: `sales.order.paid=token1,sales.order.created=token2` — the
    verification_token of a subscription that does not use MAGENTO_WEBHOOK_SECRET."""
    secrets: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, token = part.partition("=")
        name = name.strip()
        if not sep or not token.strip():
            # Never echo the entry: without its "=" it may be the token itself.
            raise ValueError(f"entry {len(secrets) + 1} is not event=token")
        if name not in EVENTS:
            raise ValueError(f"entry {len(secrets) + 1}: not a Mage-OS order event (known: {', '.join(EVENTS)})")
        secrets[name] = token.strip()
    return secrets
