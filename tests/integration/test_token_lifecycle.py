"""Refresh tokens end: the hard expiry is asked for, stored, shown and warned about; consent and the
code exchange of the sandbox behave as Intuit's."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from pydantic import SecretStr

from app.adapters.oauth import TokenManager, TokenRefreshError
from app.adapters.token_store import TokenStore
from tests.conftest import TEST_ENV
from tests.integration.conftest import REALM, SandboxFactory


def manager(http: aiohttp.ClientSession, url: str, store: TokenStore, initial: str = "") -> TokenManager:
    return TokenManager(http, url, TEST_ENV["QUICKBOOKS_CLIENT_ID"], SecretStr(TEST_ENV["QUICKBOOKS_CLIENT_SECRET"]),
                        REALM, store, SecretStr(initial))


async def test_a_refresh_stores_both_expiries_and_warns_two_weeks_before_the_hard_one(
        sandbox_factory: SandboxFactory, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    sb = await sandbox_factory(quota_per_minute=0, quota_per_second=0, refresh_token_hard_ttl=10 * 86400)
    store = TokenStore(tmp_path / "tokens.sqlite3")
    async with aiohttp.ClientSession() as http:
        with caplog.at_level(logging.WARNING, logger="magqb.oauth"):
            await manager(http, sb.token_url, store, sb.config.refresh_token).access_token()
    info = await store.info(REALM)
    assert info is not None and info.hard_expires_at is not None and info.expires_at is not None
    assert abs((info.hard_expires_at - datetime.now(UTC)) - timedelta(days=10)) < timedelta(minutes=1)
    assert info.expires_at == info.hard_expires_at or info.expires_at <= info.hard_expires_at
    [warning] = [r.getMessage() for r in caplog.records if "expires on" in r.getMessage()]
    assert "in 10.0 days" in warning and "magqb connect" in warning


async def test_no_refresh_token_anywhere_names_the_commands_that_give_one(sandbox_factory: SandboxFactory,
                                                                           tmp_path) -> None:
    sb = await sandbox_factory(quota_per_minute=0, quota_per_second=0)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(TokenRefreshError, match="magqb connect") as err:
            await manager(http, sb.token_url, TokenStore(tmp_path / "t.sqlite3")).access_token()
    assert err.value.permanent


async def test_consent_then_code_exchange_once_for_the_registered_redirect(sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(quota_per_minute=0, quota_per_second=0)
    redirect = "http://127.0.0.1:9/callback"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sb.url}/connect/oauth2", allow_redirects=False, params={
                "client_id": sb.config.client_id, "response_type": "code", "redirect_uri": redirect,
                "scope": "com.intuit.quickbooks.accounting openid", "state": "s1"}) as resp:
            assert resp.status == 302
            back = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert (back["state"], back["realmId"]) == (["s1"], [REALM]) and back["code"][0]

        async def exchange(code: str, uri: str) -> tuple[int, dict]:  # type: ignore[type-arg]
            async with http.post(sb.token_url, data={"grant_type": "authorization_code", "code": code,
                                                     "redirect_uri": uri},
                                 headers={"Authorization": sb.basic_auth(), "Accept": "application/json",
                                          "x-include-refresh-token-hard-expires-in": "true"}) as r:
                return r.status, await r.json()

        assert (await exchange(back["code"][0], "http://127.0.0.1:9/other"))[0] == 400
        status, tokens = await exchange(back["code"][0], redirect)
        assert status == 400  # a code is used once, even after a refused attempt
        async with http.get(f"{sb.url}/connect/oauth2", allow_redirects=False, params={
                "client_id": sb.config.client_id, "response_type": "code", "redirect_uri": redirect,
                "scope": "com.intuit.quickbooks.accounting", "state": "s2"}) as resp:
            code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
        status, tokens = await exchange(code, redirect)
        assert status == 200 and tokens["x_refresh_token_hard_expires_in"] > 157_000_000
        assert tokens["realmId"] == REALM and tokens["refresh_token"].startswith("RT1-")
        async with http.get(f"{sb.url}/connect/oauth2", allow_redirects=False, params={
                "client_id": sb.config.client_id, "response_type": "code", "redirect_uri": redirect,
                "scope": "openid", "state": "s3"}) as resp:
            assert parse_qs(urlsplit(resp.headers["Location"]).query)["error"] == ["invalid_scope"]


async def test_a_refresh_never_overwrites_a_newer_token(tmp_path) -> None:
    store = TokenStore(tmp_path / "tokens.sqlite3")
    assert await store.replace(REALM, "from-env", "RT-A")  # nothing stored yet: the first one lands
    assert await store.replace(REALM, "RT-A", "RT-B")
    await store.put(REALM, "RT-connected", connected=True)  # `magqb connect` meanwhile
    assert not await store.replace(REALM, "RT-B", "RT-C")  # a refresh that started before it
    assert await store.get(REALM) == "RT-connected"
    info = await store.info(REALM)
    assert info is not None and info.connected_at is not None and info.expires_at is None
