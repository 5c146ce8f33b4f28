"""Read and act on `qbo.dead-letter` (the `magqb dlq` commands).

The topic is the history: a dead letter, then perhaps a `retried` or `purged`
record naming it. Open letters are the dead ones no later record names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from app import jsonutil, topics
from app.adapters import kafka_io, kafka_security
from schemas.commands import AnyCommand, CreateDocument, ReceivePayment, command_adapter
from schemas.dead_letter import DeadLetter, DeadLetterAction

H_RETRY_OF = "magqb-dlq-retry-of"
Command = AnyCommand


@dataclass
class DeadLetterLog:
    letters: list[DeadLetter]
    retried: set[str]
    purged: set[str]
    unreadable: int

    def open(self) -> list[DeadLetter]:
        return [d for d in self.letters if d.id not in self.retried and d.id not in self.purged]

    def find(self, prefix: str) -> DeadLetter | None:
        matches = [d for d in self.letters if d.id.startswith(prefix)]
        return matches[0] if len(matches) == 1 else None

    def status(self, letter: DeadLetter) -> str:
        if letter.id in self.purged:
            return "purged"
        if letter.id in self.retried:
            return "retried"
        return "open"


async def read_log(bootstrap: str, timeout_ms: int = 2000) -> DeadLetterLog:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_security.client_kwargs(bootstrap),
                                enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    log = DeadLetterLog([], set(), set(), 0)
    try:
        tp = TopicPartition(topics.DEAD_LETTER, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=timeout_ms)
            if not batch:
                break
            for record in batch.get(tp, []):
                _take(log, record.value or b"")
    finally:
        await kafka_io.close(consumer)
    return log


def _take(log: DeadLetterLog, raw: bytes) -> None:
    try:
        data = jsonutil.loads(raw)
        if isinstance(data, dict) and data.get("action") == "dead":
            letter = DeadLetter.model_validate(data)
            if all(d.id != letter.id for d in log.letters):  # written twice (a retried send): one letter
                log.letters.append(letter)
            return
        action = DeadLetterAction.model_validate(data)
    except (ValueError, ValidationError):
        log.unreadable += 1
        return
    (log.retried if action.action == "retried" else log.purged).update(action.ids)


def retried_command(letter: DeadLetter) -> Command:
    """The dead command with a requestid of its own: QBO answers a repeated requestid with the first
    answer — the fault that killed it — so a retry after a fix needs a new one. It is derived from
    the letter's id, so re-running an interrupted `dlq retry` repeats it exactly. The DocNumber
    lookup before creating still guards against a second document."""
    cmd = command_adapter.validate_python(letter.command)
    update: dict[str, object] = {"request_id": f"{cmd.request_id[:37]}-{letter.id[:12]}"}
    if isinstance(cmd, CreateDocument | ReceivePayment):
        update["verify"] = True  # an earlier attempt may have reached QuickBooks
    return cmd.model_copy(update=update)


async def retry(bootstrap: str, letters: list[DeadLetter]) -> None:
    """Send each order back through mapping with the current mapping file (its request ids salted with the
    letter's id, so QBO does not replay the fault) — or, for a letter without its order, the command
    back to dispatch, or an unreadable event back where it was — then record that they were retried."""
    producer = kafka_io.producer(bootstrap, "magqb-dlq", max_request_size=1_048_576)  # aiokafka's default, as before
    await producer.start()
    try:
        for letter in letters:
            if letter.why_not_retriable() is not None:
                continue  # `magqb dlq retry` refuses these before it gets here
            if letter.order_event is not None:
                # Parked before dispatch: the order goes through mapping again (after the fix).
                await producer.send_and_wait(
                    topics.ORDERS, jsonutil.dumps({**letter.order_event, "source": "dlq-retry", "retry_of": letter.id,
                                                   "received_at": datetime.now(UTC).isoformat()}),
                    key=letter.order_id.encode(), headers=[(H_RETRY_OF, letter.id.encode())],
                )
                continue
            raw = letter.raw_bytes()
            if raw is not None and letter.source is not None:
                # An event no worker could read or handle: back where it was, byte for byte.
                await producer.send_and_wait(
                    letter.source.topic, raw, key=letter.source.key.encode() if letter.source.key else None,
                    headers=[(H_RETRY_OF, letter.id.encode())],
                )
                continue
            cmd = retried_command(letter)
            await producer.send_and_wait(
                topics.COMMANDS, cmd.model_dump_json().encode(), key=cmd.realm_id.encode(),
                headers=[(H_RETRY_OF, letter.id.encode())],
            )
        await producer.send_and_wait(
            topics.DEAD_LETTER, DeadLetterAction(action="retried", ids=[d.id for d in letters]).model_dump_json().encode(),
            key=b"dlq-action",
        )
    finally:
        await kafka_io.close(producer)


async def purge(bootstrap: str, letters: list[DeadLetter]) -> None:
    producer = kafka_io.producer(bootstrap, "magqb-dlq", max_request_size=1_048_576)  # aiokafka's default, as before
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.DEAD_LETTER, DeadLetterAction(action="purged", ids=[d.id for d in letters]).model_dump_json().encode(),
            key=b"dlq-action",
        )
    finally:
        await kafka_io.close(producer)
