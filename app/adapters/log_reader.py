"""Read single events back from the order log by their place (a body a state row left out)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.adapters import kafka_io
from schemas.envelope import decode_envelope
from schemas.state import LogRef

log = logging.getLogger("magqb.orders")
READ_TIMEOUT_SECONDS = 10.0


class LogReader:
    def __init__(self, bootstrap: str, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def body(self, at: LogRef) -> dict[str, Any]:
        """The body (order, credit memo, invoice) of the event at `at`; raises if it cannot be read (the caller's
        transient-retry decides)."""
        async with self._lock:
            if self._consumer is None:
                consumer = kafka_io.consumer(self._bootstrap, self._client_id)
                await consumer.start()
                self._consumer = consumer
            tp = TopicPartition(at.topic, at.partition)
            self._consumer.assign([tp])
            self._consumer.seek(tp, at.offset)
            record = await asyncio.wait_for(self._consumer.getone(tp), READ_TIMEOUT_SECONDS)
        if record.offset != at.offset:
            raise LookupError(f"{at.topic}[{at.partition}]@{at.offset} is gone (the log starts at {record.offset})")
        return decode_envelope(record.value).body

    async def close(self) -> None:
        if self._consumer is not None:
            await kafka_io.close(self._consumer)
            self._consumer = None
