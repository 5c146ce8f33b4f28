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

MASK = "[redacted]"
MIN_SECRET_LEN = 6  # shorter values would mask ordinary words

_known: set[str] = set()
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
    """Remember secret values to mask from now on (tokens as they are issued)."""
    with _lock:
        for value in values:
            if value and len(value) >= MIN_SECRET_LEN:
                _known.add(value)


def scrub(text: str) -> str:
    if not text:
        return text
    for value in sorted(_known, key=len, reverse=True):
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
