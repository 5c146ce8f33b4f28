"""Issue 20: the realms' refresh tokens on a sealed, compacted topic every worker host reads.

On the real broker and the sandbox's token endpoint, which refuses a refresh token once it has been rotated
(`refresh_token_grace=0`, as Intuit may): a realm that moves to another host refreshes with the newest token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from app import topics
from app.adapters.oauth import TokenManager, TokenRefreshError
from app.adapters.qbo_access import check_token_store
from app.adapters.token_store import RefreshTokenStore, TokenStore
from app.adapters.token_topic import TokenKeyError, TopicTokenStore, holds_tokens, new_key, parse_key, unseal
from app.settings import load_settings
from tests.conftest import TEST_ENV, read_topics
from tests.integration.conftest import REALM, SandboxFactory

pytestmark = pytest.mark.kafka
KEY = parse_key(new_key())


@pytest.fixture
def prefix() -> Iterator[str]:
    """A topic prefix of this test's own: a fresh, empty magqb.tokens."""
    before = topics.PREFIX
    mine = f"tok-{uuid.uuid4().hex[:8]}."
    topics.configure(mine)
    yield mine
    topics.configure(before)


def host(kafka_bootstrap: str, tmp_path: Path, name: str, key: bytes = KEY) -> TopicTokenStore:
    """A worker host: the shared topic, and a token file of its own."""
    return TopicTokenStore(kafka_bootstrap, key, TokenStore(tmp_path / name / "tokens.sqlite3"))


def manager(http: aiohttp.ClientSession, url: str, store: RefreshTokenStore) -> TokenManager:
    # Every host was started with the first refresh token in its environment: stale after the first rotation.
    return TokenManager(http, url, TEST_ENV["QUICKBOOKS_CLIENT_ID"], SecretStr(TEST_ENV["QUICKBOOKS_CLIENT_SECRET"]),
                        REALM, store, SecretStr(TEST_ENV["QUICKBOOKS_REFRESH_TOKEN"]))


async def test_a_realm_moving_to_another_host_refreshes_with_the_token_rotated_on_the_first(
        sandbox_factory: SandboxFactory, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    sb = await sandbox_factory(quota_per_minute=0, quota_per_second=0, refresh_token_grace=0)
    a, b = host(kafka_bootstrap, tmp_path, "a"), host(kafka_bootstrap, tmp_path, "b")
    async with aiohttp.ClientSession() as http:
        on_a = manager(http, sb.token_url, a)
        first = await on_a.access_token()
        await on_a.refresh(stale=first)  # a second rotation on host A: the environment's token is two behind
        assert on_a.refreshes == 2
        newest = await a.get(REALM)
        assert newest is not None and newest != TEST_ENV["QUICKBOOKS_REFRESH_TOKEN"]
        # Host A stops; host B takes the realm over and refreshes with what A rotated to.
        on_b = manager(http, sb.token_url, b)
        assert await on_b.access_token()
    assert sb.sandbox.requests["POST /oauth2/v1/tokens/bearer 400"] == 0
    assert sb.sandbox.requests["POST /oauth2/v1/tokens/bearer 200"] == 3
    record = await b.record(REALM)
    assert record is not None and len(record.rotations) == 2 and record.rotations[-1].by
    assert await TokenStore(tmp_path / "a" / "tokens.sqlite3").get(REALM) == newest  # A's copy, as it left it


async def test_with_a_file_per_host_the_second_host_is_refused_the_token_the_first_rotated_away(
        sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """Why the topic: today's per-host file blocks the realm as soon as it moves (the sandbox refuses as Intuit)."""
    sb = await sandbox_factory(quota_per_minute=0, quota_per_second=0, refresh_token_grace=0)
    async with aiohttp.ClientSession() as http:
        await manager(http, sb.token_url, TokenStore(tmp_path / "a.sqlite3")).access_token()
        with pytest.raises(TokenRefreshError, match="invalid_grant") as err:
            await manager(http, sb.token_url, TokenStore(tmp_path / "b.sqlite3")).access_token()
    assert err.value.permanent


async def test_two_hosts_rotating_the_same_token_at_once_never_lose_a_rotation(
        kafka_bootstrap: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = host(kafka_bootstrap, tmp_path, "a"), host(kafka_bootstrap, tmp_path, "b")
    await a.put(REALM, "RT-1", connected=True)
    read_by_b = await b._current(REALM)  # B reads RT-1 ...
    assert await a.replace(REALM, "RT-1", "RT-2a")  # ... A rotates it first ...

    async def stale(realm_id: str) -> object:
        return read_by_b

    monkeypatch.setattr(b, "_current", stale)  # ... and B writes on what it read before A's write
    assert not await b.replace(REALM, "RT-1", "RT-2b")
    monkeypatch.undo()
    for reader in (a, b, host(kafka_bootstrap, tmp_path, "c")):
        assert await reader.get(REALM) == "RT-2a"
    assert await TokenStore(tmp_path / "b" / "tokens.sqlite3").get(REALM) is None  # the loser kept no copy of its own
    # The realm's newest record is the winner's again: what compaction keeps.
    records = await asyncio.to_thread(read_topics, kafka_bootstrap, [topics.TOKENS])
    newest = [r for r in records if r.key == REALM.encode()][-1]
    assert unseal(KEY, topics.TOKENS, REALM, newest.value).refresh_token == "RT-2a"
    assert not await a.replace(REALM, "RT-1", "RT-3")  # an old token never replaces the newest
    assert await a.get(REALM) == "RT-2a"


async def test_the_first_start_with_a_key_moves_this_hosts_token_to_the_topic(
        kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    old = TokenStore(tmp_path / "a" / "tokens.sqlite3")
    await old.put(REALM, "RT-from-before", connected=True)
    assert await host(kafka_bootstrap, tmp_path, "a").get(REALM) == "RT-from-before"
    other = host(kafka_bootstrap, tmp_path, "b")
    assert await other.get(REALM) == "RT-from-before"
    info = await other.info(REALM)
    assert info is not None and info.connected_at is not None


async def test_a_wrong_or_missing_key_is_one_clear_line(kafka_bootstrap: str, prefix: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    await host(kafka_bootstrap, tmp_path, "a").put(REALM, "RT-sealed", connected=True)
    assert await holds_tokens(kafka_bootstrap)
    with pytest.raises(TokenKeyError) as err:
        await host(kafka_bootstrap, tmp_path, "b", key=parse_key(new_key())).check()
    assert str(err.value).startswith("MAGQB_TOKEN_KEY does not open the token of realm") and "\n" not in str(err.value)
    monkeypatch.chdir(tmp_path)
    for k, v in {**TEST_ENV, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "MAGQB_TOPIC_PREFIX": prefix,
                 "MAGQB_DATA_DIR": str(tmp_path / "c")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MAGQB_TOKEN_KEY", raising=False)
    with pytest.raises(TokenKeyError, match="MAGQB_TOKEN_KEY is not set"):
        await check_token_store(load_settings())
    monkeypatch.setenv("MAGQB_TOKEN_KEY", new_key())
    with pytest.raises(TokenKeyError, match="sealed with another key"):
        await check_token_store(load_settings())


async def test_a_host_without_a_key_keeps_its_file_while_the_topic_is_empty(
        kafka_bootstrap: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for k, v in {**TEST_ENV, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "MAGQB_TOPIC_PREFIX": prefix,
                 "MAGQB_DATA_DIR": str(tmp_path / "d")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MAGQB_TOKEN_KEY", raising=False)
    where = await check_token_store(load_settings())
    assert "this host only" in where and "MAGQB_TOKEN_KEY" in where
