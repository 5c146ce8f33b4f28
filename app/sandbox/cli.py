"""`magqb sandbox`: run the local QuickBooks Online (loaded lazily by app.cli)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from app.cli.common import check_port as _check_port
from app.cli.common import fail as _fail
from app.cli.common import serve_until_signal as _serve_until_signal
from app.sandbox.chaos import FaultSettings

log = logging.getLogger("magqb")


def _sentence(text: str | None) -> str:
    return f"{text[0].upper()}{text[1:]}." if text else ""


def _fault_options(fn: Any) -> Any:
    """One click option per FaultSettings field: --fail-rate, --quota-per-minute, --seed, …"""
    for name, f in reversed(list(FaultSettings.model_fields.items())):
        flag = "--" + name.replace("_", "-")
        if f.annotation is bool:
            help_ = _sentence(f.description) + (" [default: on]" if f.default else "")
            fn = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_)(fn)
        else:
            kind = float if f.annotation is float else int
            default = "" if f.default is None else f" [default: {f.default}]"
            fn = click.option(flag, name, type=kind, default=None, help=f"{_sentence(f.description)}{default}")(fn)
    return fn


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8090, show_default=True, type=int, help="Port to listen on.")
@click.option("--realm-id", help="Company id. [default: $QUICKBOOKS_REALM_ID]")
@click.option("--client-id", help="OAuth client id. [default: $QUICKBOOKS_CLIENT_ID]")
@click.option("--client-secret", help="OAuth client secret. [default: $QUICKBOOKS_CLIENT_SECRET]")
@click.option("--refresh-token", help="The first valid refresh token. [default: $QUICKBOOKS_REFRESH_TOKEN]")
@click.option("--db", type=click.Path(dir_okay=False), help="Keep the company in this SQLite file across restarts.")
@click.option("--tax-code", "tax_codes", multiple=True, metavar="ID=NAME",
              help="An extra sales tax code (a non-US company's VAT/GST), e.g. --tax-code '5=23% VAT'. Repeatable.")
@_fault_options
def sandbox(host: str, port: int, realm_id: str | None, client_id: str | None, client_secret: str | None,
            refresh_token: str | None, db: str | None, tax_codes: tuple[str, ...], **fault_flags: Any) -> None:
    """Run a local QuickBooks Online (Accounting API v3 + OAuth2) for development and tests.

    Point the service at it with QUICKBOOKS_API_BASE_URL=http://HOST:PORT and
    QUICKBOOKS_TOKEN_URL=http://HOST:PORT/oauth2/v1/tokens/bearer. It reads the
    same QUICKBOOKS_* variables as the service, so one .env drives both.

    QBO's quotas are on by default (500/min, 10/s, 40 batch calls/min per realm;
    0 turns one off). The fault flags inject failures; GET/PUT /_sandbox/faults
    reads and changes the same settings at runtime (names with underscores).
    Also GET /_sandbox/stats and POST /_sandbox/reset.
    """
    from pathlib import Path

    from pydantic import Field, ValidationError
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(env_file=".env", extra="ignore")
        QUICKBOOKS_REALM_ID: str = Field("")
        QUICKBOOKS_CLIENT_ID: str = Field("")
        QUICKBOOKS_CLIENT_SECRET: str = Field("")
        QUICKBOOKS_REFRESH_TOKEN: str = Field("")
        MAGQB_LOG_LEVEL: str = "INFO"

    env = _Env()
    values = {
        "realm id (--realm-id or QUICKBOOKS_REALM_ID)": realm_id or env.QUICKBOOKS_REALM_ID,
        "client id (--client-id or QUICKBOOKS_CLIENT_ID)": client_id or env.QUICKBOOKS_CLIENT_ID,
        "client secret (--client-secret or QUICKBOOKS_CLIENT_SECRET)": client_secret or env.QUICKBOOKS_CLIENT_SECRET,
        "refresh token (--refresh-token or QUICKBOOKS_REFRESH_TOKEN)": refresh_token or env.QUICKBOOKS_REFRESH_TOKEN,
    }
    for name, value in values.items():
        if not value:
            _fail(f"missing required setting: {name}")
    try:
        fault_settings = FaultSettings(**{k: v for k, v in fault_flags.items() if v is not None})
    except ValidationError as exc:
        _fail("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()))
    from app.logs import setup_logging
    from app.sandbox.server import SandboxConfig

    setup_logging(env.MAGQB_LOG_LEVEL)
    _check_port(host, port, "the sandbox")
    extra: dict[str, str] = {}
    for spec in tax_codes:
        code, sep, name = spec.partition("=")
        if not sep or not code.strip() or not name.strip():
            _fail(f"--tax-code {spec!r}: expected ID=NAME, e.g. '5=23% VAT'")
        extra[code.strip()] = name.strip()
    realm, client, secret, token = values.values()
    config = SandboxConfig(realm, client, secret, token, faults=fault_settings, db=Path(db) if db else None,
                           tax_codes=extra)
    asyncio.run(_run_sandbox(config, host, port))


async def _run_sandbox(config: Any, host: str, port: int) -> None:
    from aiohttp import web

    from app.sandbox.server import build_app

    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        _fail(f"cannot start the sandbox on {host}:{port}: {exc.strerror}")
    changed = config.faults.model_dump(exclude_defaults=True)
    log.info("QuickBooks sandbox ready: http://%s:%d (realm %s; %s)", host, port, config.realm_id,
             ", ".join(f"{k}={v}" for k, v in changed.items()) or "QBO quotas, no injected faults")
    await _serve_until_signal(runner)
