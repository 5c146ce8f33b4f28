"""magqb's Magento REST client against the stand-in, which checks OAuth 1.0a with oauthlib's server
endpoint: the searchCriteria brackets signed as sent, and every refusal turned into one operator line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from pydantic import SecretStr

from app.adapters.magento_api import MagentoApiError, MagentoClient
from app.adapters.magento_auth import MagentoAuthError, OAuth1Auth, magento_auth
from app.domain.order_search import OrderSearch
from tests.conftest import free_port
from tests.magento_standin import Standin, build_app, make_orders

CREDS = ("a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", "s" * 32, "t0k3nt0k3nt0k3nt0k3nt0k3nt0k3n0", "u" * 32)
Start = Callable[..., Awaitable[tuple[str, Standin]]]


def oauth(consumer_secret: str = CREDS[1]) -> OAuth1Auth:
    auth = magento_auth(CREDS[0], SecretStr(consumer_secret), SecretStr(CREDS[2]), SecretStr(CREDS[3]))
    assert isinstance(auth, OAuth1Auth)
    return auth


@pytest.fixture
async def magento() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def start(**kwargs: Any) -> tuple[str, Standin]:
        standin = Standin(make_orders(25, 500, datetime(2031, 3, 1, 8)), oauth=CREDS, **kwargs)
        runner = web.AppRunner(build_app(standin))
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/rest/V1", standin

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_signed_search_pages_and_an_order_by_id(magento: Start) -> None:
    url, standin = await magento()
    async with aiohttp.ClientSession() as session:
        client = MagentoClient(session, url, oauth())
        search = OrderSearch(since=datetime(2031, 3, 1, tzinfo=UTC), statuses=("complete", "processing"), page_size=10)
        first = await client.orders_page(search)
        assert [o["entity_id"] for o in first.items] == list(range(500, 510)) and first.total_count == 25
        second = await client.orders_page(search, after_id=509)
        assert [o["entity_id"] for o in second.items] == list(range(510, 520))
        order = await client.order(512)
        assert order is not None and order["increment_id"] == "000000512"
        assert await client.order(9999) is None  # Magento's 404: not known
    assert standin.refused == 0 and standin.requests == 4


async def test_a_wrong_secret_is_refused_with_the_settings_to_check(magento: Start) -> None:
    url, standin = await magento()
    async with aiohttp.ClientSession() as session:
        client = MagentoClient(session, url, oauth(consumer_secret="x" * 32))
        with pytest.raises(MagentoApiError) as err:
            await client.order(510)
    line = str(err.value)
    assert line.startswith("Magento refused the OAuth 1.0a signature (HTTP 401): check MAGENTO_CONSUMER_KEY, "
                           "MAGENTO_CONSUMER_SECRET, MAGENTO_ACCESS_TOKEN and MAGENTO_ACCESS_TOKEN_SECRET")
    assert "\n" not in line and "x" * 32 not in line and "clock" not in line.split("this host's clock")[-1][:5]
    assert standin.refused == 1 and standin.requests == 0


async def test_a_clock_an_hour_off_is_refused_and_named(magento: Start) -> None:
    url, standin = await magento(clock_offset=3600)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(MagentoApiError) as err:
                await MagentoClient(session, url, oauth()).order(510)
    finally:
        import time

        from oauthlib.oauth1.rfc5849.endpoints import base
        base.time = time  # type: ignore[assignment]
    assert "this host's clock is about 60 min behind Magento's: fix it (NTP)" in str(err.value)
    assert standin.refused == 1


async def test_a_replayed_signature_is_refused_like_magento_does(magento: Start) -> None:
    url, standin = await magento()
    async with aiohttp.ClientSession() as session:
        client = MagentoClient(session, url, oauth())
        target = client.url("orders/505", ())
        headers = oauth().headers("GET", target)
        for expected in (200, 401):  # the same nonce twice: the second is a replay
            async with session.get(target, headers=headers) as resp:
                assert resp.status == expected
    assert standin.refused == 1


async def test_brackets_are_signed_as_sent(magento: Start) -> None:
    """The classic pitfall: a base string built from another spelling of the query than the one sent.
    The query (brackets percent-encoded) is part of what is signed: a signature of another query fails."""
    url, standin = await magento()
    async with aiohttp.ClientSession() as session:
        client = MagentoClient(session, url, oauth())
        params = [("searchCriteria[filter_groups][0][filters][0][field]", "increment_id"),
                  ("searchCriteria[filter_groups][0][filters][0][value]", "000000503"),
                  ("searchCriteria[pageSize]", "5")]
        sent = client.url("orders", params)
        assert "%5Bfilter_groups%5D" in sent and "[" not in sent
        page = await client.search("orders", params)
        assert [o["entity_id"] for o in page.items] == [503]
        other = sent.replace("pageSize%5D=5", "pageSize%5D=6")
        async with session.get(yarl.URL(sent, encoded=True), headers=oauth().headers("GET", other)) as resp:
            assert resp.status == 401
    assert standin.refused == 1


def test_credentials_choose_oauth_or_bearer_and_name_what_is_missing() -> None:
    empty = SecretStr("")
    assert magento_auth("", empty, SecretStr("tok"), empty).kind == "Bearer"
    assert magento_auth(CREDS[0], SecretStr(CREDS[1]), SecretStr(CREDS[2]), SecretStr(CREDS[3])).kind == "OAuth 1.0a"
    with pytest.raises(MagentoAuthError, match="MAGENTO_ACCESS_TOKEN_SECRET not set"):
        magento_auth(CREDS[0], SecretStr(CREDS[1]), SecretStr(CREDS[2]), empty)
    with pytest.raises(MagentoAuthError, match="^no Magento credentials: set MAGENTO_CONSUMER_KEY"):
        magento_auth("", empty, empty, empty)
