"""Secrets never leave the process in text we write: logs, dead letters, retry headers, answers.

Two layers. Known values — the webhook secret, the client secret, every refresh and access
token this process has held — are registered as they appear and replaced wherever they
occur. Patterns catch what we never held: QBO's 401 detail echoes the presented token
("Token expired: eyJ…"), bearer headers, `refresh_token=` in a form or JSON.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

MASK = "[redacted]"
MIN_SECRET_LEN = 6  # shorter values would mask ordinary words
# Tokens come and go (an access token an hour per realm, a refresh token at each rotation): the newest this
# many are kept. A token forgotten is long expired; the patterns below still catch its shape. Settings'
# secrets (`register_permanent`) are never forgotten.
ROTATING_KEPT = 2048

_permanent: set[str] = set()
_rotating: OrderedDict[str, None] = OrderedDict()
_ordered: list[str] = []  # every known value, longest first: what scrub() walks
_lock = threading.Lock()
_PATTERNS = (
    # QBO's gateway: "Token invalid: <token>", "Token expired: <token>"
    (re.compile(r"(Token (?:invalid|expired|revoked)\s*:\s*)\S+", re.I), r"\1" + MASK),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{6,}", re.I), r"\1" + MASK),
    (re.compile(r"""((?:refresh_token|access_token|client_secret|id_token)["']?\s*[:=]\s*["']?)[^"'&\s,}]+""", re.I),
     r"\1" + MASK),
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), MASK),  # a JWT
)


def register(*values: str | None) -> None:
    """Remember secret values to mask from now on (tokens as they are issued); the newest ROTATING_KEPT stay."""
    global _ordered
    with _lock:
        for value in values:
            if value and len(value) >= MIN_SECRET_LEN and value not in _permanent:
                _rotating[value] = None
                _rotating.move_to_end(value)
        while len(_rotating) > ROTATING_KEPT:
            _rotating.popitem(last=False)
        _ordered = sorted({*_permanent, *_rotating}, key=len, reverse=True)


def register_permanent(*values: str | None) -> None:
    """Secrets of the settings (webhook and client secrets, passwords): masked for the process's whole life."""
    global _ordered
    with _lock:
        for value in values:
            if value and len(value) >= MIN_SECRET_LEN:
                _permanent.add(value)
                _rotating.pop(value, None)
        _ordered = sorted({*_permanent, *_rotating}, key=len, reverse=True)


def known_count() -> int:
    return len(_ordered)


def scrub(text: str) -> str:
    if not text:
        return text
    for value in _ordered:  # sorted once per registration, not once per log line
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """On a handler: every record's final text — message, arguments and traceback — is scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = scrub(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True
