"""This month's QBO reads for the realm, kept under MAGQB_DATA_DIR (usage.sqlite3) and projected to the
month's end against MAGQB_QBO_MONTHLY_READ_BUDGET: a gauge, and a warning in the log when the pace
would spend the allowance (past it, Intuit shows the app to its customers as offline).

Each worker counts the reads it made; `sum(magqb_qbo_month_reads)` over workers is the realm's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from app import metrics
from app.domain.read_budget import month_key, projected_reads
from app.private_files import private_dir

log = logging.getLogger("magqb.dispatcher")

FLUSH_SECONDS = 60.0
WARN_EVERY_SECONDS = 3600.0
_SCHEMA = "CREATE TABLE IF NOT EXISTS qbo_reads (realm_id TEXT, month TEXT, reads INTEGER, PRIMARY KEY (realm_id, month))"


class ReadBudget:
    def __init__(self, path: Path, realm_id: str, budget: int, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.realm_id = realm_id
        self.budget = budget
        self._clock = clock
        self.month = month_key(self._now())
        self.reads = 0
        self._warned_at = 0.0
        metrics.QBO_MONTHLY_READ_BUDGET.labels(realm=realm_id).set(budget)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _db(self) -> aiosqlite.Connection:
        private_dir(self.path.parent)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = await aiosqlite.connect(self.path)
        await db.execute(_SCHEMA)
        return db

    async def load(self) -> None:
        db = await self._db()
        try:
            async with db.execute("SELECT reads FROM qbo_reads WHERE realm_id = ? AND month = ?",
                                  (self.realm_id, self.month)) as cur:
                row = await cur.fetchone()
        finally:
            await db.close()
        self.reads = int(row[0]) if row else 0
        self._publish()

    def read(self) -> None:
        month = month_key(self._now())
        if month != self.month:  # a new month: a new allowance
            self.month, self.reads = month, 0
        self.reads += 1
        self._publish()

    def projected(self) -> float:
        return projected_reads(self.reads, self._now())

    def _publish(self) -> None:
        metrics.QBO_MONTH_READS.labels(realm=self.realm_id).set(self.reads)
        metrics.QBO_MONTH_READS_PROJECTED.labels(realm=self.realm_id).set(round(self.projected()))

    async def flush(self) -> None:
        month, reads = self.month, self.reads
        db = await self._db()
        try:
            await db.execute("INSERT INTO qbo_reads VALUES (?, ?, ?) ON CONFLICT(realm_id, month) DO UPDATE SET "
                             "reads = MAX(reads, excluded.reads)", (self.realm_id, month, reads))
            await db.commit()
        finally:
            await db.close()
        projected = self.projected()
        now = self._clock()
        if self.budget and projected > self.budget and now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("realm=%s QBO reads this month: %d, projected %d by the month's end — over the %d allowed "
                        "(MAGQB_QBO_MONTHLY_READ_BUDGET); past it Intuit shows the app as offline", self.realm_id,
                        reads, projected, self.budget)

    async def run(self) -> None:
        """Flush every minute until cancelled, and once more then."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
