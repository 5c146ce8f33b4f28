"""`magqb console`: the bookkeeper's web console, and its users."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from app.cli.common import check_port, fail, get_settings, serve_until_signal

log = logging.getLogger("magqb")


@click.group(invoke_without_command=True)
@click.pass_context
def console(ctx: click.Context) -> None:
    """The web console: orders and their story, problems explained with their fix and a retry, for
    bookkeepers (viewers) and operators. `magqb console serve` runs it; `magqb console add-user`
    makes its users."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@console.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (loopback: put a TLS proxy in front to open it to others).")
@click.option("--port", default=8070, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Serve the console. Every page needs a login (`magqb console add-user` first)."""
    settings = get_settings()
    from app.logs import setup_logging
    from app.private_files import private_dir, private_umask

    setup_logging(settings.log_level)
    private_umask()
    private_dir(settings.data_dir)
    check_port(host, port, "the console")
    from app.console.server import LOOPBACK

    if host not in LOOPBACK and not settings.console_secure_cookies:
        log.warning("the console listens on %s without MAGQB_CONSOLE_SECURE_COOKIES: put it behind a TLS proxy and set "
                    "that, and MAGQB_CONSOLE_URL, before anyone logs in over a network", host)
    asyncio.run(_serve(settings, host, port))


async def _serve(settings: Any, host: str, port: int) -> None:
    from aiohttp import web

    from app.adapters.kafka_admin import BrokerUnavailable, ensure_topics
    from app.cli.common import app_topics
    from app.console.audit import AuditLog
    from app.console.security import session_key
    from app.console.server import make_app, tool_services
    from app.console.users import UserStore

    s = settings
    try:
        await ensure_topics(s.kafka_bootstrap_servers, app_topics(s),
                            timeout=s.kafka_connect_timeout_seconds)
    except BrokerUnavailable as exc:
        fail(f"cannot start the console: {exc}")
    users = UserStore(s.console_users_path)
    if await users.count() == 0:
        log.warning("the console has no users yet: `magqb console add-user NAME --role operator`")
    app = make_app(tool_services(s), users, AuditLog(s.kafka_bootstrap_servers),
                   session_key(s.console_secret.get_secret_value(), s.data_dir),
                   secure_cookies=s.console_secure_cookies)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("console ready: http://%s:%d/", host, port)
    await serve_until_signal(runner)


@console.command("add-user")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator"]), default="viewer", show_default=True,
              help="viewer: sees everything; operator: also retries, purges, fixes and connects.")
def add_user(name: str, role: str) -> None:
    """Create a console user (or give an existing one a new password and role). The password is read
    from stdin (asked twice on a terminal), never from an argument."""
    from app.console.users import UserError, UserStore, check_new

    s = get_settings()
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        check_new(name, password, role)
        created = asyncio.run(UserStore(s.console_users_path).add(name, password, role))
    except UserError as exc:
        fail(str(exc))
    click.echo(f"{'created' if created else 'updated'} console user {name} ({role})")
