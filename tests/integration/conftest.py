"""A sandbox on a real socket, and a client that talks to it like the product does."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from app.sandbox.server import SANDBOX_KEY, Sandbox, SandboxConfig, build_app
from tests.conftest import TEST_ENV, free_port

REALM = TEST_ENV["QUICKBOOKS_REALM_ID"]


@dataclass
class RunningSandbox:
    url: str
    sandbox: Sandbox
    config: SandboxConfig

    @property
    def api(self) -> str:
        return f"{self.url}/v3/company/{self.config.realm_id}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth2/v1/tokens/bearer"

    def basic_auth(self) -> str:
        raw = f"{self.config.client_id}:{self.config.client_secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@pytest.fixture
async def qbo_sandbox() -> AsyncIterator[RunningSandbox]:
    config = SandboxConfig(
        realm_id=REALM,
        client_id=TEST_ENV["QUICKBOOKS_CLIENT_ID"],
        client_secret=TEST_ENV["QUICKBOOKS_CLIENT_SECRET"],
        refresh_token=TEST_ENV["QUICKBOOKS_REFRESH_TOKEN"],
    )
    app = build_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield RunningSandbox(f"http://127.0.0.1:{port}", app[SANDBOX_KEY], config)
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
