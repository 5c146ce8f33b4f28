"""Adobe I/O Events (Adobe Commerce's `commerce-eventing`): CloudEvents 1.0 pushed to a webhook.

- `recipientclientid` must be our client id (`MAGQB_ADOBE_IO_CLIENT_ID`);
- `x-adobe-digital-signature-1` or `-2` (base64 RSA-SHA256 over the raw body) must verify with the
  public key at `MAGQB_ADOBE_IO_KEY_URL` + `x-adobe-public-key1-path` / `-2-path`. Only paths of the
  documented form are fetched, only from that base (a header must not make us fetch anything else);
  keys are kept at most 24 h (Adobe rotates them);
- `GET ?challenge=X` answers X;
- delivery is at least once and unordered: the event id (`x-adobe-event-id`, the same on every retry)
  de-duplicates.

`com.adobe.commerce.observer.sales_order_save_commit_after` carries the order model's data (only the
subscribed fields, `_origData`): a notification. The order itself is fetched from the REST API.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from app.sources import rsa as rsa_sig

PATH = "/webhooks/adobe-io"
SOURCE = "adobe-io-events"
DEFAULT_KEY_URL = "https://static.adobeioevents.com"
KEY_PATH = re.compile(r"/prod/keys/pub-key-[A-Za-z0-9][A-Za-z0-9-]{0,63}\.pem")
KEY_TTL_SECONDS = 24 * 3600
# The order events a subscription may carry, each a notification of the order it names. Their types
# are com.adobe.commerce[.<app namespace>].observer.<event> (the starter kit's: …test_app.observer…).
ORDER_OBSERVERS = ("sales_order_save_commit_after", "sales_order_place_after", "sales_order_save_after")


def is_order_event(event_type: str) -> bool:
    head, sep, observer = event_type.rpartition(".observer.")
    return bool(sep) and head.startswith("com.adobe.commerce") and observer in ORDER_OBSERVERS
SIGNATURES = (("x-adobe-digital-signature-1", "x-adobe-public-key1-path"),
              ("x-adobe-digital-signature-2", "x-adobe-public-key2-path"))


class CloudEventError(ValueError):
    """A body that is not a CloudEvent (or a batch of them) we can read."""


def key_path_ok(path: str | None) -> bool:
    return bool(path) and KEY_PATH.fullmatch(path or "") is not None


class KeyUnavailable(Exception):
    """A public key that could not be had now (the key server down, or too many unknown paths asked for)."""


class KeyCache:
    """Adobe's public keys by path, fetched from one base URL, each kept at most `ttl` seconds.

    The paths come from unauthenticated headers: a failed path is not fetched again for a minute, and
    at most `max_fetches` unknown paths are fetched a minute, so nobody can make us a fetching proxy."""

    def __init__(self, base_url: str, fetch: Callable[[str], Awaitable[bytes]], ttl: float = KEY_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic, max_fetches: int = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._keys: dict[str, tuple[float, rsa.RSAPublicKey]] = {}
        self._failed: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._recent: list[float] = []
        self._max_fetches = max_fetches
        self.fetches = 0

    def _cached(self, path: str) -> rsa.RSAPublicKey | None:
        cached = self._keys.get(path)
        return cached[1] if cached is not None and self._clock() - cached[0] < self._ttl else None

    async def key(self, path: str) -> rsa.RSAPublicKey:
        """The key at base + path (a path of the documented form only: else ValueError; KeyUnavailable
        when it cannot be had now). A key that expired is still used while its refetch fails or is
        refused: requests of strangers must not cost the real sender its deliveries."""
        if not key_path_ok(path):
            raise ValueError("not a key path of the form /prod/keys/pub-key-<id>.pem")
        key = self._cached(path)
        if key is not None:
            return key
        now = self._clock()
        known = self._keys.get(path)
        if now - self._failed.get(path, -3600.0) < 60:
            if known is not None:
                return known[1]
            raise KeyUnavailable(f"key {path} failed less than a minute ago")
        if path not in self._locks:
            self._recent = [t for t in self._recent if now - t < 60]
            if len(self._recent) >= self._max_fetches:
                if known is not None:
                    return known[1]
                raise KeyUnavailable("too many key fetches this minute")
            self._recent.append(now)
        lock = self._locks.setdefault(path, asyncio.Lock())
        try:
            async with lock:
                key = self._cached(path)
                if key is not None:
                    return key
                self.fetches += 1
                try:
                    key = rsa_sig.parse_public_key(await self._fetch(self.base_url + path))
                except (OSError, TimeoutError, ValueError) as exc:
                    self._failed[path] = self._clock()
                    if len(self._failed) > 256:
                        self._failed.pop(next(iter(self._failed)))
                    if known is not None:
                        return known[1]
                    raise KeyUnavailable(f"key {path} could not be had ({exc.__class__.__name__})") from None
                self._keys[path] = (self._clock(), key)
                if len(self._keys) > 16:  # Adobe has two keys at a time; a rotation adds two more
                    oldest = min(self._keys, key=lambda p: self._keys[p][0])
                    self._keys.pop(oldest, None)
                return key
        finally:
            if not lock.locked():
                self._locks.pop(path, None)


@dataclass(frozen=True)
class Verdict:
    """Whether a delivery's signature holds: `ok`, or why not and whether Adobe should try again."""

    ok: bool
    retry: bool = False  # a key could not be had: 503, Adobe retries (a 4xx it would not)
    reason: str = ""


async def verify(body: bytes, headers: Any, keys: KeyCache) -> Verdict:
    """Either signature verifying is enough."""
    reasons: list[str] = []
    unavailable = False
    for sig_header, path_header in SIGNATURES:
        signature, path = headers.get(sig_header), headers.get(path_header)
        if not signature:
            continue
        if not key_path_ok(path):
            reasons.append(f"{path_header} is not a key path of the documented form")
            continue
        try:
            key = await keys.key(path)
        except KeyUnavailable as exc:
            unavailable = True
            reasons.append(str(exc))
            continue
        if rsa_sig.verify(key, body, signature):
            return Verdict(ok=True)
        reasons.append(f"{sig_header} does not verify")
    return Verdict(ok=False, retry=unavailable, reason="; ".join(reasons) or "no x-adobe-digital-signature-1/-2")


@dataclass(frozen=True)
class Notification:
    """One CloudEvent about an order: the order to fetch, and the event that said so."""

    event_id: str
    type: str
    entity_id: int | None


def events_of(parsed: Any) -> list[dict[str, Any]]:
    """The CloudEvents of a body: one object, or a batch (a JSON array)."""
    batch = parsed if isinstance(parsed, list) else [parsed]
    if not batch or not all(isinstance(e, dict) for e in batch):
        raise CloudEventError("expected a CloudEvent object or an array of them")
    for event in batch:
        if str(event.get("specversion", "")) != "1.0" or not event.get("type") or not (event.get("id") or
                                                                                        event.get("event_id")):
            raise CloudEventError("not a CloudEvent 1.0 (specversion, id and type are required)")
    return batch


def recipient(event: dict[str, Any]) -> str:
    return str(event.get("recipientclientid") or event.get("recipient_client_id") or "")


def notification(event: dict[str, Any], header_event_id: str | None = None) -> Notification:
    """The order a CloudEvent names. Its data is the model's (`{key, value: {…}, _metadata}`)."""
    event_id = str(header_event_id or event.get("eventid") or event.get("event_id") or event.get("id"))
    data = event.get("data")
    value = data.get("value") if isinstance(data, dict) else None
    entity: Any = None
    if isinstance(value, dict):
        entity = value.get("entity_id") or value.get("id")
        items = value.get("items")
        if entity is None and isinstance(items, list) and items and isinstance(items[0], dict):
            entity = items[0].get("order_id")  # a subscription without entity_id: its items name the order
    try:
        entity_id = int(str(entity)) if entity is not None and not isinstance(entity, bool) else None
    except ValueError:
        entity_id = None
    if entity_id is not None and entity_id < 1:
        entity_id = None
    return Notification(event_id=event_id, type=str(event["type"]), entity_id=entity_id)


class SeenEvents:
    """Event ids published lately (Adobe retries for 24 h with the same id): a bounded LRU."""

    def __init__(self, size: int = 20_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)
