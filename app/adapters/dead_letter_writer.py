"""The one way a worker writes to `qbo.dead-letter`: sized to fit, acknowledged by Kafka, counted."""

from __future__ import annotations

import logging
from typing import Any

from app import metrics
from schemas.dead_letter import DeadLetter

log = logging.getLogger("magqb.dead_letters")


class DeadLetterWriter:
    def __init__(self, topic: Any, max_bytes: int) -> None:
        self._topic = topic  # a faust TopicT
        self.max_bytes = max_bytes

    async def write(self, letter: DeadLetter) -> DeadLetter:
        """Send and wait for Kafka's acknowledgement; returns the letter as written (maybe shrunk)."""
        if len(letter.model_dump_json()) > self.max_bytes:
            letter = letter.shrunk(self.max_bytes)
            log.warning("order_id=%s dead letter %s too large for one Kafka record: left out %s", letter.order_id,
                        letter.id, ", ".join(letter.omitted))
        fut = await self._topic.send(key=letter.order_id.encode(), value=letter.model_dump_json().encode())
        await fut
        metrics.DEAD_LETTERS.labels(reason=letter.reason).inc()
        return letter
