"""Many lookups, one QBO read: keys asked for within a short window go out in one `IN (...)` query.

Intuit meters reads per month and the realm's quota counts every request: when a backlog
of commands each needs a lookup (after a restart, an import of new customers), a hundred
of them cost one query instead of a hundred. One query is out at a time; keys asked for
while it waits for its turn under the quota go together in the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[list[K]], Awaitable[dict[K, V]]]


class LookupBatcher(Generic[K, V]):
    def __init__(self, fetch: Fetch[K, V], window: float = 0.02, max_keys: int = 100) -> None:
        self._fetch = fetch
        self.window = window
        self.max_keys = max_keys
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self.queries = 0

    async def get(self, key: K) -> V | None:
        """The value for `key` (None: QBO has none), fetched together with the keys asked for meanwhile."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[V | None] = loop.create_future()
        self._pending.setdefault(key, []).append(fut)
        if len(self._pending) >= self.max_keys:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running:
            return  # the query out now takes them next, when it is done
        batch = dict(list(self._pending.items())[: self.max_keys])
        for key in batch:
            del self._pending[key]
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        self._running = True
        try:
            await self._ask(batch)
        finally:
            self._running = False
            if self._pending:
                self._flush()

    async def _ask(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        waiting = {k: [f for f in futs if not f.done()] for k, futs in batch.items()}
        waiting = {k: futs for k, futs in waiting.items() if futs}  # callers that gave up (cancelled) are not asked for
        if not waiting:
            return
        self.queries += 1
        try:
            found = await self._fetch(list(waiting))
        except asyncio.CancelledError:  # cancelled mid-query (a stop): the callers are not left waiting
            for futs in waiting.values():
                for f in futs:
                    f.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets the failure and handles it as its own
            for futs in waiting.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
            return
        for key, futs in waiting.items():
            for f in futs:
                if not f.done():
                    f.set_result(found.get(key))
