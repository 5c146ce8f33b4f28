"""A sandbox on a real socket, and a client that talks to it like the product does."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from app.sandbox.chaos import FaultSettings
from app.sandbox.server import SANDBOX_KEY, Sandbox, SandboxConfig, build_app
from tests.conftest import TEST_ENV, free_port

REALM = TEST_ENV["QUICKBOOKS_REALM_ID"]


@dataclass
class RunningSandbox:
    url: str
    sandbox: Sandbox
    config: SandboxConfig
    runner: web.AppRunner

    @property
    def api(self) -> str:
        return f"{self.url}/v3/company/{self.config.realm_id}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth2/v1/tokens/bearer"

    def basic_auth(self) -> str:
        raw = f"{self.config.client_id}:{self.config.client_secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()


SandboxFactory = Callable[..., Awaitable[RunningSandbox]]


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    """Start sandboxes on real sockets: `await sandbox_factory(quota_per_second=2, db=path)`."""
    runners: list[web.AppRunner] = []

    async def start(db: Path | None = None, tax_codes: dict[str, str] | None = None,
                    **fault_settings: Any) -> RunningSandbox:
        config = SandboxConfig(
            realm_id=REALM,
            client_id=TEST_ENV["QUICKBOOKS_CLIENT_ID"],
            client_secret=TEST_ENV["QUICKBOOKS_CLIENT_SECRET"],
            refresh_token=TEST_ENV["QUICKBOOKS_REFRESH_TOKEN"],
            faults=FaultSettings(**fault_settings),
            db=db,
            tax_codes=tax_codes or {},
        )
        app = build_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return RunningSandbox(f"http://127.0.0.1:{port}", app[SANDBOX_KEY], config, runner)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def qbo_sandbox(sandbox_factory: SandboxFactory) -> RunningSandbox:
    """A sandbox with QBO's quotas off: for tests about everything but throttling."""
    return await sandbox_factory(quota_per_minute=0, quota_per_second=0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
