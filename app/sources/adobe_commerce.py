"""Adobe Commerce Webhooks (`magento/commerce-webhooks`, Commerce 2.4.4+): synchronous hooks.

`x-adobe-commerce-webhook-signature` is base64 of an RSA-SHA256 (PKCS#1 v1.5) signature over the
**base64 of the raw body** (the module signs `base64_encode(json)`; Adobe's page calls it HMAC). The
body is `{"eventName": …, "data": {"order": {…}}}` for an observer hook, `{"order": {…}}` for a
plugin hook. The answer Commerce understands is `200 {"op": "success"}`.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from app.sources import rsa as rsa_sig

PATH = "/webhooks/adobe-commerce"
SOURCE = "adobe-commerce-webhook"
SIGNATURE_HEADER = "x-adobe-commerce-webhook-signature"
SUCCESS = {"op": "success"}


def verify(key: rsa.RSAPublicKey, body: bytes, signature: str | None) -> bool:
    return rsa_sig.verify(key, base64.b64encode(body), signature)


def extract_order(parsed: Any) -> Any:
    """The order of an observer (`data.order`) or plugin (`order`) hook body, else the body itself."""
    if isinstance(parsed, dict):
        data = parsed.get("data")
        if isinstance(data, dict) and isinstance(data.get("order"), dict):
            return data["order"]
        if isinstance(parsed.get("order"), dict):
            return parsed["order"]
    return parsed
