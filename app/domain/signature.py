"""Webhook signatures: `X-Magento-Signature` = lowercase hex HMAC-SHA256 of the raw body.

This is what Mage-OS async events send (HttpNotifier.php); the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Magento-Signature"


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str | None, secret: str) -> bool:
    if not signature or not signature.isascii():  # compare_digest refuses non-ASCII text: not a hex digest anyway
        return False
    # Senders differ in hex case; the digest itself is what must match.
    return hmac.compare_digest(sign(body, secret), signature.strip().lower())
