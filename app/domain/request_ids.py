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


def request_id(realm_id: str, kind: str, natural_key: str, salt: str = "") -> str:
    # The salt is "" for a first attempt: ids from before salts existed stay what they were.
    return _rid(kind, realm_id, kind, natural_key) if not salt else _rid(kind, realm_id, kind, natural_key, salt)


def customer_request_id(realm_id: str, email: str, salt: str = "") -> str:
    return request_id(realm_id, "cust", email.strip().lower(), salt)


def item_request_id(realm_id: str, name: str, salt: str = "") -> str:
    return request_id(realm_id, "item", name.lower(), salt)


def document_request_id(realm_id: str, doc_type: str, doc_number: str, body: bytes, salt: str = "") -> str:
    """Depends on the exact body sent: QBO answers a repeated requestid with its first answer, so a
    document mapped again (a fixed mapping, a refreshed customer id) must not reuse the old id —
    while every retry of the same body must."""
    digest = hashlib.sha256(body).hexdigest()
    return request_id(realm_id, "doc", f"{doc_type}:{doc_number}:{digest}", salt)


def derived(base: str, purpose: str) -> str:
    """A second, equally stable id for a follow-up request of the same intent (e.g. a renamed retry)."""
    return _rid(purpose, base, purpose)


def attempt_salt(retry_of: str | None, replay_id: str | None) -> str:
    """What a delivery mixes into its request ids: "" for a first attempt; the dead letter's id for `dlq
    retry`, the run's for a replay — so QBO does not answer with what it answered an earlier attempt (and a
    non-empty salt makes the dispatcher look first: that attempt may have landed)."""
    return retry_of or (f"replay:{replay_id}" if replay_id else "")
