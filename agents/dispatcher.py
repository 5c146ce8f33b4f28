"""The dispatcher agent: the only code that calls QuickBooks.

One actor per worker (faust's offset commit is wrong with concurrency > 1):
it takes a batch of commands, runs different orders' commands concurrently and
each order's commands in sequence, publishes every result, and only then lets
the batch be acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

import aiohttp
import faust
from pydantic import ValidationError

from app import metrics, topics
from app.adapters.oauth import TokenManager
from app.adapters.qbo_client import QboClient
from app.adapters.token_store import TokenStore
from app.dispatch import Command, Dispatcher
from app.worker_app import WorkerContext
from schemas.commands import decode_command
from schemas.events import CommandFailed, encode_result

log = logging.getLogger("magqb.dispatcher")

BATCH_MAX = 64
BATCH_WITHIN_SECONDS = 0.05
MAX_IN_FLIGHT = 10  # QBO's concurrency limit per realm


def register_dispatcher(ctx: WorkerContext) -> None:
    settings = ctx.settings

    async def run_order(dispatcher: Dispatcher, commands: list[Command], gate: asyncio.Semaphore) -> None:
        for cmd in commands:
            async with gate:
                metrics.COMMANDS_IN_FLIGHT.inc()
                try:
                    result = await dispatcher.handle(cmd)
                except Exception as exc:  # noqa: BLE001 - a bug must become a visible failure, not a lost command
                    log.exception("order_id=%s %s crashed", cmd.order_id, cmd.type)
                    result = CommandFailed(
                        order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id,
                        request_id=cmd.request_id, command_type=cmd.type, error_class="internal",
                        message=f"{exc.__class__.__name__}: {exc}"[:1000],
                    )
                finally:
                    metrics.COMMANDS_IN_FLIGHT.dec()
            fut = await ctx.results.send(key=cmd.order_id.encode(), value=encode_result(result))
            await fut

    @ctx.app.agent(ctx.commands, name="dispatcher")
    async def dispatcher_agent(stream: faust.StreamT[Any]) -> None:
        timeout = aiohttp.ClientTimeout(total=settings.quickbooks_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tokens = TokenManager(
                session,
                settings.quickbooks_token_url,
                settings.quickbooks_client_id,
                settings.quickbooks_client_secret,
                settings.quickbooks_realm_id,
                TokenStore(settings.data_dir / "tokens.sqlite3"),
                settings.quickbooks_refresh_token,
            )
            client = QboClient(session, settings.qbo_api_base, settings.quickbooks_realm_id, tokens,
                               settings.quickbooks_minor_version, settings.quickbooks_timeout_seconds)
            dispatcher = Dispatcher(client)
            gate = asyncio.Semaphore(MAX_IN_FLIGHT)
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_SECONDS):
                by_order: OrderedDict[str, list[Command]] = OrderedDict()
                for event in batch:
                    try:
                        cmd = decode_command(event.value or b"")
                    except ValidationError as exc:
                        metrics.BAD_EVENTS.labels(topic=topics.COMMANDS).inc()
                        log.error("skipped an unreadable command at %s[%s]@%s: %s", event.message.topic,
                                  event.message.partition, event.message.offset, str(exc).splitlines()[0])
                        continue
                    by_order.setdefault(cmd.order_id, []).append(cmd)
                await asyncio.gather(*(run_order(dispatcher, cmds, gate) for cmds in by_order.values()))
