"""A token endpoint or token store that fails without refusing the token: the realm waits and goes on, and a
refresh token Intuit issued is never lost (app.adapters.oauth). The endpoint is a scripted aiohttp server,
answering as proxies, outages and a broken Intuit would."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from app import metrics
from app.adapters import oauth
from app.adapters.oauth import TokenManager, TokenRefreshError
from app.adapters.token_store import TokenStore
from app.dispatch import Dispatcher, RealmPaused
from schemas.commands import EnsureItem
from tests.conftest import free_port

REALM = "4620816365176390330"


class Script:
    """The answers the token endpoint gives, in order, and the refresh tokens it was asked with."""

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def token(self, request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        self.asked.append(form["refresh_token"][0])
        status, body = self.answers.pop(0)
        return web.Response(status=status, body=body, content_type="application/json")


def good(access: str, refresh: str) -> tuple[int, bytes]:
    return 200, (f'{{"access_token": "{access}", "refresh_token": "{refresh}", "expires_in": 3600, '
                 f'"x_refresh_token_expires_in": 8726400}}').encode()


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[Script]]]:
    holder: list[Script] = []

    async def token(request: web.Request) -> web.Response:
        return await holder[0].token(request)

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/token", holder
    finally:
        await runner.cleanup()


def manager(http: aiohttp.ClientSession, url: str, store: Any) -> TokenManager:
    return TokenManager(http, url, "client", SecretStr("secret"), REALM, store, SecretStr("rt-1"))


async def test_an_answer_that_is_not_a_token_is_transient_and_a_rotated_token_in_it_is_kept(
        endpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(oauth, "TRANSIENT_FIRST_SECONDS", 0.0)
    url, holder = endpoint
    holder.append(Script((200, b"<html>Service Unavailable</html>"), (502, b"Bad gateway"),
                         (200, b'{"refresh_token": "rt-2", "token_type": "bearer"}'), good("at-3", "rt-3")))
    store = TokenStore(tmp_path / "tokens.sqlite3")
    async with aiohttp.ClientSession() as http:
        tokens = manager(http, url, store)
        for expected in ("not a JSON object", "HTTP 502", "without an access_token"):
            with pytest.raises(TokenRefreshError, match=expected) as err:
                await tokens.access_token()
            assert err.value.permanent is False
        assert await store.get(REALM) == "rt-2"  # issued by a broken answer: kept all the same
        assert await tokens.access_token() == "at-3"
    assert holder[0].asked == ["rt-1", "rt-1", "rt-1", "rt-2"]
    assert await store.get(REALM) == "rt-3"


async def test_a_transient_failure_is_asked_again_after_a_pause_not_by_every_waiting_command(
        endpoint, tmp_path) -> None:
    url, holder = endpoint
    holder.append(Script((503, b"{}"), good("at-2", "rt-2")))
    async with aiohttp.ClientSession() as http:
        tokens = manager(http, url, TokenStore(tmp_path / "tokens.sqlite3"))
        for _ in range(5):  # five commands asking at once: one call
            with pytest.raises(TokenRefreshError):
                await tokens.access_token()
    assert holder[0].asked == ["rt-1"]


class LockedStore(TokenStore):
    """The token store failing as a full disk or a held lock makes sqlite fail."""

    broken = True

    async def replace(self, *args: Any, **kwargs: Any) -> bool:
        if self.broken:
            raise sqlite3.OperationalError("database is locked")
        return await super().replace(*args, **kwargs)


async def test_a_rotated_token_the_store_cannot_keep_is_used_from_memory_and_written_once_it_can(
        endpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(oauth, "SAVE_RETRY_SECONDS", 0.0)
    url, holder = endpoint
    holder.append(Script(good("at-2", "rt-2"), good("at-3", "rt-3")))
    store = LockedStore(tmp_path / "tokens.sqlite3")
    store.broken = False
    await store.put(REALM, "rt-1")  # the store holds the token of before (the write must replace it, not insert)
    store.broken = True
    gauge = metrics.REFRESH_TOKEN_UNSAVED.labels(realm=REALM)
    async with aiohttp.ClientSession() as http:
        tokens = manager(http, url, store)
        assert await tokens.access_token() == "at-2"  # the access token is used; rt-2 lives in memory
        assert gauge._value.get() == 1 and await store.get(REALM) == "rt-1"
        assert await tokens.refresh(stale="at-2") == "at-3"  # refreshed with rt-2, not the stale rt-1
        assert holder[0].asked == ["rt-1", "rt-2"]
        store.broken = False
        assert await tokens.access_token() == "at-3"  # the next use writes it
    assert await store.get(REALM) == "rt-3" and gauge._value.get() == 0


async def test_the_dispatcher_pauses_the_realm_instead_of_failing_its_commands(endpoint, tmp_path) -> None:
    from app.adapters.qbo_client import QboClient

    url, holder = endpoint
    holder.append(Script((200, b"not json")))
    async with aiohttp.ClientSession() as http:
        tokens = manager(http, url, TokenStore(tmp_path / "tokens.sqlite3"))
        dispatcher = Dispatcher(QboClient(http, "http://127.0.0.1:9", REALM, tokens))
        cmd = EnsureItem(order_id="1", order_ref="1", realm_id=REALM, request_id="r1", name="Shipping",
                         item_type="Service", income_account_id="79")
        with pytest.raises(RealmPaused, match="not a JSON object"):
            await dispatcher.handle(cmd)
