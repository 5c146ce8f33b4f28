"""RSA-SHA256 (PKCS#1 v1.5) signatures, as Adobe Commerce webhooks and Adobe I/O Events send them."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class PublicKeyError(ValueError):
    """A configured or fetched public key that is not an RSA public key in PEM."""


def load_public_key(pem_or_path: str) -> rsa.RSAPublicKey:
    """The PEM itself, or a path to a file holding it."""
    text = pem_or_path.strip()
    if not text.startswith("-----BEGIN"):
        path = Path(text).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise PublicKeyError(f"cannot read the public key file {path}: {exc.strerror}") from None
    return parse_public_key(text.encode())


def parse_public_key(pem: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem.strip())
    except (ValueError, UnsupportedAlgorithm):
        raise PublicKeyError("not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PublicKeyError("not an RSA public key")
    return key


def verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str | None) -> bool:
    """Whether `signature_b64` (base64) is the key's RSA-SHA256 signature of `message`."""
    if not signature_b64 or not signature_b64.isascii():
        return False
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
