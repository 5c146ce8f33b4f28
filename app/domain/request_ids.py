"""Deterministic QBO `requestid`s: one per intent, stable across retries, restarts and replays.

QBO answers a repeated requestid with the first response and creates nothing,
so the id must depend only on *what* is asked (realm + entity + natural key),
never on time, attempt or event id. ≤ 50 characters (QBO's limit).
"""

from __future__ import annotations

import hashlib

MAX_LEN = 50


def request_id(realm_id: str, kind: str, natural_key: str) -> str:
    digest = hashlib.sha256(f"{realm_id}\x1f{kind}\x1f{natural_key}".encode()).hexdigest()
    rid = f"mq-{kind[:8]}-{digest[:32]}"
    assert len(rid) <= MAX_LEN
    return rid


def customer_request_id(realm_id: str, email: str) -> str:
    return request_id(realm_id, "cust", email.strip().lower())


def item_request_id(realm_id: str, name: str) -> str:
    return request_id(realm_id, "item", name.lower())


def document_request_id(realm_id: str, doc_type: str, doc_number: str) -> str:
    return request_id(realm_id, "doc", f"{doc_type}:{doc_number}")


def derived(base: str, purpose: str) -> str:
    """A second, equally stable id for a follow-up request of the same intent (e.g. a renamed retry)."""
    digest = hashlib.sha256(f"{base}\x1f{purpose}".encode()).hexdigest()
    return f"mq-{purpose[:8]}-{digest[:32]}"
