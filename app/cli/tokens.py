"""`magqb connect` and `magqb token`: give a realm its QuickBooks refresh token, and see how long it lasts."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import click

from app.cli.common import fail, get_settings


@click.command()
@click.option("--redirect-uri", default=None,
              help="Where Intuit sends the browser back: a loopback URI registered in your app at "
                   "developer.intuit.com [default: $QUICKBOOKS_REDIRECT_URI or http://127.0.0.1:8765/callback].")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for the consent.")
@click.option("--open-browser/--no-open-browser", default=False, show_default=True,
              help="Open the authorization URL in a browser on this machine.")
def connect(redirect_uri: str | None, timeout: float, open_browser: bool) -> None:
    """Connect a QuickBooks company: the OAuth2 authorization-code flow.

    Prints the authorization URL (accounting scope, a fresh state value): open it, sign in
    to QuickBooks and choose the company. Intuit sends the browser back to the redirect URI,
    which this command listens on (loopback); it checks the state, exchanges the code and stores
    the refresh token and its expiry for the company's realm in the token store under
    MAGQB_DATA_DIR (never printed). Workers pick it up at their next token refresh.
    """
    s = get_settings()
    uri = redirect_uri or s.quickbooks_redirect_uri
    parts = urlsplit(uri)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1") or not parts.port:
        fail(f"the redirect URI {uri!r} must be a loopback http URI with a port (e.g. http://127.0.0.1:8765/callback): "
             "this command receives the callback itself")
    from app.private_files import private_umask

    private_umask()
    where = _check_store(s)
    realm, info = asyncio.run(_connect(s, uri, timeout, open_browser))
    click.echo(f"connected: realm {realm}; {where}")
    click.echo(_describe(info))
    if realm != s.quickbooks_realm_id:
        click.echo(f"note: QUICKBOOKS_REALM_ID is {s.quickbooks_realm_id}; set it to {realm} to book into this "
                   "company", err=True)


async def _connect(s: Any, redirect_uri: str, timeout: float, open_browser: bool) -> tuple[str, Any]:
    from aiohttp import web

    from app.adapters.qbo_connect import ConnectError, authorization_url, complete

    parts = urlsplit(redirect_uri)
    answer: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        if not answer.done():
            answer.set_result(dict(request.query))
        return web.Response(text="magqb: QuickBooks answered; you can close this window and go back to the terminal.")

    app = web.Application()
    app.router.add_get(parts.path or "/", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, parts.hostname, parts.port).start()
    except OSError as exc:
        await runner.cleanup()
        fail(f"cannot listen on {parts.hostname}:{parts.port} for the callback: {exc.strerror}")
    try:
        url, state = authorization_url(s, redirect_uri)
        click.echo("Open this URL, sign in to QuickBooks and choose the company:\n")
        click.echo(f"  {url}\n")
        click.echo(f"Waiting for Intuit to send the browser back to {redirect_uri} …", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            query = await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            fail(f"no answer from QuickBooks within {timeout:.0f}s; run `magqb connect` again")
        try:
            return await complete(s, redirect_uri, query, state)
        except ConnectError as exc:
            fail(str(exc))
    finally:
        await runner.cleanup()


@click.group()
def token() -> None:
    """The realm's QuickBooks refresh token: show its age and expiry, or set a new one."""


@token.command("show")
@click.option("--realm", default=None, help="Realm id [default: $QUICKBOOKS_REALM_ID].")
def token_show(realm: str | None) -> None:
    """Realm, refresh token age and expiry (never the token). Exit 1 when none is stored."""
    s = get_settings()
    from app.adapters.qbo_access import token_store

    realm = realm or s.quickbooks_realm_id
    click.echo(f"store:               {_check_store(s)}")
    store = token_store(s)
    info = asyncio.run(store.info(realm))
    if info is None:
        env = "QUICKBOOKS_REFRESH_TOKEN is set and is used until the first refresh stores one" \
            if s.quickbooks_refresh_token.get_secret_value() else "and QUICKBOOKS_REFRESH_TOKEN is empty"
        fail(f"no refresh token stored for realm {realm} ({env}); `magqb connect` or `magqb token set`", 1)
    click.echo(_describe(info))
    from app.adapters.token_topic import TopicTokenStore

    if isinstance(store, TopicTokenStore):
        record = asyncio.run(store.record(realm))
        for r in reversed(record.rotations if record else []):
            click.echo(f"rotated:             {r.at:%Y-%m-%d %H:%M:%S} UTC by {r.by} (replaced token {r.replaced}…)")


def _check_store(s: Any) -> str:
    """Where tokens are kept; a key that does not open them (or none, where the topic holds them) is one line."""
    from aiokafka.errors import KafkaError

    from app.adapters.qbo_access import check_token_store
    from app.adapters.token_topic import TokenKeyError

    try:
        return asyncio.run(check_token_store(s))
    except TokenKeyError as exc:
        fail(str(exc))
    except (KafkaError, OSError) as exc:
        fail(f"the token topic cannot be read ({exc.__class__.__name__}: {exc}); is Kafka reachable at "
             f"{s.kafka_bootstrap_servers}?")


def _describe(info: Any) -> str:
    now = datetime.now(UTC)

    def when(d: datetime | None) -> str:
        if d is None:
            return "unknown (not in the token answer)"
        days = (d - now).total_seconds() / 86400
        return f"{d:%Y-%m-%d %H:%M} UTC ({'in ' + format(days, '.1f') + ' days' if days >= 0 else 'EXPIRED'})"

    age = (now - info.updated_at).total_seconds()
    lines = [f"realm:               {info.realm_id}",
             f"stored:              {info.updated_at:%Y-%m-%d %H:%M} UTC ({age / 3600:.1f} hours ago)"]
    if info.connected_at:
        lines.append(f"connected:           {info.connected_at:%Y-%m-%d %H:%M} UTC")
    lines += [f"expires (rolling):   {when(info.expires_at)}", f"expires (hard):      {when(info.hard_expires_at)}"]
    earliest = info.earliest_expiry()
    if earliest is not None and (earliest - now).days < 14:
        lines.append("WARNING: expires within 14 days: run `magqb connect` to reconnect the company")
    return "\n".join(lines)


@token.command("set")
@click.option("--realm", default=None, help="Realm id [default: $QUICKBOOKS_REALM_ID].")
def token_set(realm: str | None) -> None:
    """Store a refresh token read from stdin (e.g. from Intuit's OAuth Playground) for the realm.

    The token is read from standard input, never from an argument (which would land in the
    shell's history and the process list). Workers use it at their next refresh; a blocked realm
    resumes within 30 seconds.
    """
    s = get_settings()
    from app import redact
    from app.adapters.qbo_access import token_store

    if sys.stdin.isatty():
        click.echo("Paste the refresh token, then Enter:", err=True)
    value = sys.stdin.readline().strip()
    if not value or any(c.isspace() for c in value) or len(value) > 2048:
        fail("no usable refresh token on stdin (one line, no spaces)")
    redact.register(value)
    realm = realm or s.quickbooks_realm_id
    where = _check_store(s)
    asyncio.run(token_store(s).put(realm, value, connected=True))
    click.echo(f"refresh token stored for realm {realm} (expiry unknown until its first refresh); {where}")


@token.command("new-key")
def token_new_key() -> None:
    """Print a new MAGQB_TOKEN_KEY (32 random bytes, URL-safe base64).

    With it, the realms' refresh tokens live sealed (AES-256-GCM) on the magqb.tokens topic, where
    every worker host reads them: a realm that moves to another host refreshes with the newest token.
    Give every host (worker, `magqb connect`, `magqb token`) the same key, kept as a secret; a host's
    token file then only holds a copy. The first start with the key moves this host's token there.
    """
    from app.adapters.token_topic import new_key

    click.echo(new_key())
