"""Deterministic QBO `requestid`s: one per intent, stable across retries, restarts and replays.

QBO answers a repeated requestid with the first response and creates nothing,
so the id must depend only on *what* is asked (realm + entity + natural key),
never on time, attempt or event id. ≤ 50 characters (QBO's limit).
"""

from __future__ import annotations

import hashlib

MAX_LEN = 50


def _rid(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    rid = f"mq-{kind[:8]}-{digest[:32]}"
    assert len(rid) <= MAX_LEN
    return rid


def request_id(realm_id: str, kind: str, natural_key: str) -> str:
    return _rid(kind, realm_id, kind, natural_key)


def customer_request_id(realm_id: str, email: str) -> str:
    return request_id(realm_id, "cust", email.strip().lower())


def item_request_id(realm_id: str, name: str) -> str:
    return request_id(realm_id, "item", name.lower())


def document_request_id(realm_id: str, doc_type: str, doc_number: str) -> str:
    return request_id(realm_id, "doc", f"{doc_type}:{doc_number}")


def derived(base: str, purpose: str) -> str:
    """A second, equally stable id for a follow-up request of the same intent (e.g. a renamed retry)."""
    return _rid(purpose, base, purpose)
