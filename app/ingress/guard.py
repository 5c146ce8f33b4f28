"""Slow or greedy clients cannot hold the ingress: a cap on open connections and a read deadline.

aiohttp waits as long as a client likes for a request's headers (a slowloris sends one
byte every few seconds, forever) and keeps idle connections for an hour. Here a
connection must deliver a complete request head within MAGQB_INGRESS_READ_TIMEOUT of
opening or of its previous answer, or it is closed; the body has its own deadline
(in the webhook handler, answered 408); and past MAGQB_INGRESS_MAX_CONNECTIONS a new
connection is closed at once, so the ones already open are served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from app import metrics

log = logging.getLogger("magqb.ingress")

SWEEP_SECONDS = 0.5


class ConnectionGuard:
    def __init__(self, max_connections: int, read_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._clock = clock
        self._idle_since: dict[Any, float] = {}  # connection (aiohttp RequestHandler) → when it last went idle
        self._busy: set[Any] = set()
        self._refused_logged = 0.0

    def install(self, server: web.Server) -> None:
        """Wrap the server's connection bookkeeping (call once, after the runner's setup)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: Any) -> None:
            if len(self._idle_since) >= self.max_connections:
                metrics.INGRESS_CONNECTIONS_CLOSED.labels(reason="over_limit").inc()
                now = self._clock()
                if now - self._refused_logged > 10:
                    self._refused_logged = now
                    log.warning("%d connections open (MAGQB_INGRESS_MAX_CONNECTIONS): closing new ones",
                                len(self._idle_since))
                transport.close()
                return
            made(handler, transport)
            self._idle_since[handler] = self._clock()

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            self._idle_since.pop(handler, None)
            self._busy.discard(handler)
            lost(handler, exc)

        # aiohttp's Server has no hook for these: the instance's own methods are wrapped.
        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign,assignment]

    @property
    def open_connections(self) -> int:
        return len(self._idle_since)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        conn = request.protocol
        self._busy.add(conn)
        try:
            return await handler(request)
        finally:
            self._busy.discard(conn)
            if conn in self._idle_since:
                self._idle_since[conn] = self._clock()

    def sweep(self) -> int:
        """Close connections that have sent no complete request head within the read timeout."""
        now = self._clock()
        closed = 0
        for conn, since in list(self._idle_since.items()):
            if conn not in self._busy and now - since > self.read_timeout:
                transport = getattr(conn, "transport", None)
                if transport is not None:
                    transport.close()
                self._idle_since.pop(conn, None)
                metrics.INGRESS_CONNECTIONS_CLOSED.labels(reason="read_timeout").inc()
                closed += 1
        return closed

    async def sweeper(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: sweeps while the app runs."""

        async def run() -> None:
            while True:
                await asyncio.sleep(SWEEP_SECONDS)
                self.sweep()

        task = asyncio.create_task(run())
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
