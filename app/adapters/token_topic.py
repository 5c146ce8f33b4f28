"""The realms' refresh tokens on a compacted topic every worker host reads, sealed with MAGQB_TOKEN_KEY.

Intuit rotates a realm's refresh token and may refuse the one before. When the realm's partition moves
to another host, the new owner must refresh with the newest token, so the token lives on Kafka (the
one place every host reads), not in one host's file. Each record is keyed by realm and sealed with
AES-256-GCM; the topic and the realm are its associated data, so a record copied under another realm's
key does not open.

Compare-and-set on a log: a write names the offset of the record it replaces (`based_on`). Reading the
topic in order, a record counts only if it replaces the one that counts at that point; `CREATE` counts
only where none does yet (a first refresh, a token moved from a host's file); `None` replaces whatever
is there (`magqb connect`, `magqb token set`: an operator's token always wins). Two hosts replacing the
same record both write; every reader takes the first in the log, and the second writer learns it lost
by reading back: its token is not used. Whoever reads a realm whose newest record lost writes the
winner again, so that the newest record is the winner's when compaction keeps only the newest
(min.compaction.lag.ms of a day leaves every reader, hourly at least, the time).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from aiokafka.errors import KafkaError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import jsonutil, topics
from app.adapters import kafka_io
from app.adapters.kafka_admin import BrokerUnavailable, TopicLayoutError, ensure_topics
from app.adapters.token_store import TokenInfo, TokenStore

log = logging.getLogger("magqb.tokens")

KEY_HINT = "32 random bytes in URL-safe base64; make one with `magqb token new-key`"
CREATE = -1  # a record's `based_on`: only if the realm has no token yet
ROTATIONS_KEPT = 10


class TokenKeyError(Exception):
    """MAGQB_TOKEN_KEY is missing, malformed, or does not open the records: only an operator can help."""


class TokenRecordUnreadable(TokenKeyError):
    """A record the key opens but this version cannot read (a newer magqb wrote it): upgrade this host. Not
    skipped: folding without it would make this host use, and write on, a token the others have replaced."""


def parse_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode() + b"=" * (-len(text.strip()) % 4))
    except (ValueError, TypeError):
        raise TokenKeyError(f"MAGQB_TOKEN_KEY is not base64 ({KEY_HINT})") from None
    if len(key) != 32:
        raise TokenKeyError(f"MAGQB_TOKEN_KEY is {len(key)} bytes, not 32 ({KEY_HINT})")
    return key


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def digest(token: str) -> str:
    """A token's name in the rotation history: enough to tell tokens apart, nothing to refresh with."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: datetime
    replaced: str  # digest of the token this one replaced
    by: str  # the host (and process) that stored it


class TokenRecord(BaseModel):
    """What a sealed record holds (the plaintext). Crosses hosts: every field is declared."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    realm_id: str
    refresh_token: str = Field(min_length=1, repr=False)
    based_on: int | None  # the offset of the record it replaces; CREATE: none; None: replaces whatever is there
    updated_at: datetime
    expires_at: datetime | None = None
    hard_expires_at: datetime | None = None
    connected_at: datetime | None = None
    rotations: list[Rotation] = []
    writer: str = ""

    def info(self) -> TokenInfo:
        return TokenInfo(self.realm_id, self.updated_at, self.expires_at, self.hard_expires_at, self.connected_at)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1
    nonce: str
    sealed: str


@dataclass(frozen=True)
class Current:
    offset: int
    record: TokenRecord


@dataclass
class Fold:
    """One realm's records read in order: the one that counts, and which offsets counted when written."""

    current: Current | None = None
    accepted: set[int] = field(default_factory=set)
    last_lost: bool = False  # the realm's newest record lost its compare-and-set

    def add(self, offset: int, record: TokenRecord) -> None:
        # After compaction the first record left may name one now gone: it counts (compaction kept the newest).
        if record.based_on is None or self.current is None or record.based_on == self.current.offset:
            self.current = Current(offset, record)
            self.accepted.add(offset)
            self.last_lost = False
        else:
            self.last_lost = True


def seal(key: bytes, topic: str, record: TokenRecord) -> bytes:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, jsonutil.dumps(record.model_dump(mode="json")), _aad(topic, record.realm_id))
    return jsonutil.dumps(Envelope(nonce=base64.b64encode(nonce).decode(),
                                   sealed=base64.b64encode(sealed).decode()).model_dump())


def unseal(key: bytes, topic: str, realm_id: str, value: bytes) -> TokenRecord:
    """The record, or TokenKeyError when the key does not open it; ValueError when it is not one of ours."""
    try:
        envelope = Envelope.model_validate_json(value)
        nonce, sealed = base64.b64decode(envelope.nonce), base64.b64decode(envelope.sealed)
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"not a sealed token record ({exc.__class__.__name__})") from None
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, _aad(topic, realm_id))
    except InvalidTag:
        raise TokenKeyError(f"MAGQB_TOKEN_KEY does not open the token of realm {realm_id} on topic {topic}: it was "
                            "sealed with another key. Set the key the other hosts use") from None
    try:
        record = TokenRecord.model_validate_json(plain)
    except ValidationError as exc:  # never its text: that is the sealed plaintext
        fields = ", ".join(".".join(map(str, e["loc"])) or "?" for e in exc.errors(include_input=False))
        raise TokenRecordUnreadable(f"the token of realm {realm_id} on topic {topic} cannot be read by this version "
                                    f"of magqb ({fields}): a newer one wrote it; upgrade this host") from None
    if record.realm_id != realm_id:
        raise ValueError("the record names another realm than its key")
    return record


def _aad(topic: str, realm_id: str) -> bytes:
    return f"{topic}\0{realm_id}".encode()


def writer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class TopicTokenStore:
    """The token store of a worker with MAGQB_TOKEN_KEY: the topic decides, the file under MAGQB_DATA_DIR is a
    copy of what this host last read or wrote (what `magqb token show` falls back to without the cluster).
    Every read takes the topic from its start: it holds a few records per realm, read once an hour or so."""

    def __init__(self, bootstrap: str, key: bytes, cache: TokenStore, timeout: float = 15.0) -> None:
        self.bootstrap = bootstrap
        self._key = key
        self.cache = cache
        self._timeout = timeout
        self._topic_ready = False

    @property
    def topic(self) -> str:
        return topics.TOKENS

    async def _folds(self) -> dict[str, Fold]:
        c = kafka_io.consumer(self.bootstrap, "magqb-tokens")
        await c.start()
        try:
            folds: dict[str, Fold] = {}
            spans = await kafka_io.whole(c, self.topic)
            async for batch in kafka_io.read_spans(c, spans, idle_timeout=self._timeout):
                for r in batch:
                    if r.key is None or r.value is None:
                        continue  # a tombstone: nothing of ours writes one
                    realm = r.key.decode(errors="replace")
                    try:
                        record = unseal(self._key, self.topic, realm, r.value)
                    except ValueError as exc:  # not sealed by magqb at all (the key opens nothing of it)
                        log.error("realm=%s a record on %s@%d that magqb did not write is ignored (%s)", realm,
                                  self.topic, r.offset, exc.__class__.__name__)
                        continue
                    folds.setdefault(realm, Fold()).add(r.offset, record)
            return folds
        finally:
            await kafka_io.close(c)

    async def _current(self, realm_id: str) -> Current | None:
        fold = (await self._folds()).get(realm_id) or Fold()
        await self._heal(fold)
        return fold.current

    async def _heal(self, fold: Fold) -> None:
        """The realm's newest record lost its compare-and-set (its writer crashed before writing the winner
        again): write the winner again, so compaction keeps the winner's."""
        if fold.last_lost and fold.current is not None:
            winner = fold.current
            log.warning("realm=%s the newest token record lost to an earlier one: writing the one that counts again",
                        winner.record.realm_id)
            await self._write(winner.record.model_copy(update={"based_on": winner.offset}))

    async def _write(self, record: TokenRecord) -> int:
        if not self._topic_ready:
            try:
                await ensure_topics(self.bootstrap, [topics.tokens_spec()], timeout=self._timeout)
            except (BrokerUnavailable, TopicLayoutError) as exc:  # as any Kafka trouble: asked again
                raise KafkaError(str(exc)) from None
            self._topic_ready = True
        p = kafka_io.producer(self.bootstrap, "magqb-tokens")
        await p.start()
        try:
            meta = await p.send_and_wait(self.topic, key=record.realm_id.encode(),
                                         value=seal(self._key, self.topic, record))
            return int(meta.offset)
        finally:
            await kafka_io.close(p)

    async def _mirror(self, record: TokenRecord) -> None:
        try:
            await self.cache.put(record.realm_id, record.refresh_token, record.expires_at, record.hard_expires_at,
                                 connected=record.connected_at is not None and record.based_on is None)
        except (OSError, sqlite3.Error) as exc:  # the copy is a convenience: the topic holds the token
            log.warning("realm=%s the local copy of the token could not be written (%s)", record.realm_id, exc)

    async def get(self, realm_id: str) -> str | None:
        current = await self._current(realm_id)
        if current is not None:
            return current.record.refresh_token
        # None on the topic yet: a host that kept its token in the file before MAGQB_TOKEN_KEY was set moves it.
        kept = await self.cache.get(realm_id)
        if kept is None:
            return None
        info = await self.cache.info(realm_id)
        record = TokenRecord(realm_id=realm_id, refresh_token=kept, based_on=CREATE, updated_at=datetime.now(UTC),
                             expires_at=info.expires_at if info else None,
                             hard_expires_at=info.hard_expires_at if info else None,
                             connected_at=info.connected_at if info else None, writer=writer_name())
        await self._write(record)
        current = await self._current(realm_id)  # another host may have moved its own, or rotated, first
        if current is not None and current.record.refresh_token == kept:
            log.warning("realm=%s the refresh token of this host's file is now on %s, where every host reads it",
                        realm_id, self.topic)
        return current.record.refresh_token if current else None

    async def put(self, realm_id: str, refresh_token: str, expires_at: datetime | None = None,
                  hard_expires_at: datetime | None = None, connected: bool = False) -> None:
        """An operator's token (`magqb connect`, `token set`): it replaces whatever is there."""
        now = datetime.now(UTC)
        current = await self._current(realm_id)
        before = current.record if current else None
        record = TokenRecord(
            realm_id=realm_id, refresh_token=refresh_token, based_on=None, updated_at=now,
            expires_at=expires_at or (None if connected or before is None else before.expires_at),
            hard_expires_at=hard_expires_at or (None if connected or before is None else before.hard_expires_at),
            connected_at=now if connected else (before.connected_at if before else None),
            rotations=_rotated(before, refresh_token, now), writer=writer_name())
        await self._write(record)
        await self._mirror(record)

    async def replace(self, realm_id: str, used: str, newest: str, expires_at: datetime | None = None,
                      hard_expires_at: datetime | None = None) -> bool:
        """Store `newest` (what the token endpoint answered to `used`) only if `used` is still the realm's token,
        or none is stored. False when another host or an operator stored a token first: theirs counts."""
        current = await self._current(realm_id)
        if current is not None and current.record.refresh_token != used:
            return False
        now = datetime.now(UTC)
        before = current.record if current else None
        record = TokenRecord(
            realm_id=realm_id, refresh_token=newest, based_on=current.offset if current else CREATE, updated_at=now,
            expires_at=expires_at or (before.expires_at if before else None),
            hard_expires_at=hard_expires_at or (before.hard_expires_at if before else None),
            connected_at=before.connected_at if before else None,
            rotations=_rotated(before, newest, now), writer=writer_name())
        offset = await self._write(record)
        fold = (await self._folds()).get(realm_id) or Fold()
        if offset in fold.accepted:
            await self._mirror(record)
            return True
        await self._heal(fold)  # ours lost, and may be the realm's newest
        return False

    async def info(self, realm_id: str) -> TokenInfo | None:
        record = await self.record(realm_id)
        return record.info() if record else None

    async def record(self, realm_id: str) -> TokenRecord | None:
        current = await self._current(realm_id)
        return current.record if current else None

    async def realms(self) -> list[str]:
        return sorted(realm for realm, fold in (await self._folds()).items() if fold.current is not None)

    async def check(self) -> int:
        """Open every record (TokenKeyError names the first the key does not open); how many realms it holds."""
        return len(await self.realms())


def _rotated(before: TokenRecord | None, newest: str, now: datetime) -> list[Rotation]:
    if before is None or before.refresh_token == newest:
        return list(before.rotations) if before else []
    rotation = Rotation(at=now, replaced=digest(before.refresh_token), by=writer_name())
    return [*before.rotations, rotation][-ROTATIONS_KEPT:]


async def holds_tokens(bootstrap: str) -> bool:
    """Whether the topic holds tokens: a host without MAGQB_TOKEN_KEY must then not use its own file."""
    c = kafka_io.consumer(bootstrap, "magqb-tokens")
    await c.start()
    try:
        return any(s.size > 0 for s in await kafka_io.whole(c, topics.TOKENS))
    finally:
        await kafka_io.close(c)
