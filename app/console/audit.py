"""The console's actions on Kafka: written before the action's answer, read back for an order's page."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from app import topics
from app.adapters import kafka_io
from schemas.console import ConsoleAction

log = logging.getLogger("magqb.console")


class AuditLog:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = kafka_io.producer(self.bootstrap, "magqb-console")
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await kafka_io.close(self._producer)

    async def record(self, action: ConsoleAction) -> None:
        """Acknowledged by Kafka (acks=all) before the caller answers: an action nobody can trace is not taken."""
        assert self._producer is not None, "start() first"
        await self._producer.send_and_wait(topics.CONSOLE_AUDIT, action.model_dump_json().encode(),
                                           key=(action.order_id or "console").encode())
        log.info("console: %s %s %s%s", action.user, action.action, action.target,
                 f" order_id={action.order_id}" if action.order_id else "")

    async def of_order(self, order_id: str) -> list[ConsoleAction]:
        c = kafka_io.consumer(self.bootstrap, "magqb-console")
        await c.start()
        out: list[ConsoleAction] = []
        try:
            spans = await kafka_io.whole(c, topics.CONSOLE_AUDIT)
            async for batch in kafka_io.read_spans(c, spans):
                for r in batch:
                    if r.key == order_id.encode() and r.value:
                        try:
                            out.append(ConsoleAction.model_validate_json(r.value))
                        except ValidationError:
                            continue
        finally:
            await kafka_io.close(c)
        return out
