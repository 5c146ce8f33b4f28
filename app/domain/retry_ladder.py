"""The retry ladder: which delay topic a retriable failure goes to next, and when it is due.

`MAGQB_RETRY_DELAYS=30s,5m,30m,2h` → topics qbo.retry.30s … qbo.retry.2h. After the
last rung the command is dead-lettered. Pure: the dispatcher does the IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RETRY_TOPIC_PREFIX = "qbo.retry."
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


class LadderError(ValueError):
    """MAGQB_RETRY_DELAYS cannot be read."""


@dataclass(frozen=True)
class Rung:
    label: str  # as written: "30s"
    seconds: float

    @property
    def topic(self) -> str:
        from app import topics

        return topics.PREFIX + RETRY_TOPIC_PREFIX + self.label


def parse_ladder(text: str) -> tuple[Rung, ...]:
    rungs = []
    for part in text.split(","):
        m = _DELAY.match(part)
        if not m:
            raise LadderError(f"{part.strip()!r} is not a delay like 30s, 5m, 2h")
        rungs.append(Rung(label=f"{m.group(1)}{m.group(2)}", seconds=float(m.group(1)) * _UNITS[m.group(2)]))
    if not rungs:
        raise LadderError("the retry ladder is empty")
    if [r.seconds for r in rungs] != sorted(r.seconds for r in rungs):
        raise LadderError("delays must not decrease")
    if len({r.label for r in rungs}) != len(rungs):
        raise LadderError("each delay may appear once")
    return tuple(rungs)


def next_rung(ladder: tuple[Rung, ...], attempts_so_far: int) -> Rung | None:
    """The rung for the next retry after `attempts_so_far` failed attempts; None: dead-letter it."""
    index = attempts_so_far - 1
    return ladder[index] if 0 <= index < len(ladder) else None


# Header names follow Spring Kafka's retry-topic vocabulary (reference/stream-processing.md §1.1).
H_ATTEMPTS = "retry_topic-attempts"
H_DUE = "retry_topic-backoff-timestamp"  # epoch milliseconds
H_ORIGINAL_TOPIC = "kafka_original-topic"
H_ORIGINAL_PARTITION = "kafka_original-partition"
H_ORIGINAL_OFFSET = "kafka_original-offset"
H_ORIGINAL_TIMESTAMP = "kafka_original-timestamp"
H_ERROR = "kafka_exception-message"
H_HISTORY = "magqb-attempt-history"  # JSON list of {at, error_class, message, fault}, newest last
HISTORY_KEEP = 10


def _text(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def attempts_of(headers: dict[str, bytes]) -> int:
    """How many times the command has been tried (1 on its first delivery)."""
    try:
        return max(1, int(_text(headers, H_ATTEMPTS) or "1"))
    except ValueError:
        return 1


def due_of(headers: dict[str, bytes]) -> float:
    """When a parked command may be dispatched again (epoch seconds; 0 = now)."""
    try:
        return int(_text(headers, H_DUE) or "0") / 1000.0
    except ValueError:
        return 0.0


def history_of(headers: dict[str, bytes]) -> list[dict[str, object]]:
    import json

    try:
        value = json.loads(_text(headers, H_HISTORY) or "[]")
    except ValueError:
        return []
    # Entries that are not objects (a hand-edited header) are dropped rather than trusted.
    return [h for h in value if isinstance(h, dict)] if isinstance(value, list) else []


def retry_headers(
    previous: dict[str, bytes],
    attempts: int,
    due_epoch: float,
    error: str,
    history: list[dict[str, object]],
    origin: tuple[str, int, int, int],
) -> dict[str, bytes]:
    """Headers of a command parked on a rung: the first delivery's origin is kept across rungs."""
    import json

    from app.redact import scrub

    topic, partition, offset, timestamp = origin
    kept = [{**h, "message": scrub(str(h.get("message", "")))[:1000]} if isinstance(h, dict) else h
            for h in history[-HISTORY_KEEP:]]
    headers = {
        H_ATTEMPTS: str(attempts).encode(),
        H_DUE: str(int(due_epoch * 1000)).encode(),
        H_ERROR: scrub(error)[:1000].encode(),
        H_HISTORY: json.dumps(kept, default=str).encode(),
        H_ORIGINAL_TOPIC: previous.get(H_ORIGINAL_TOPIC) or topic.encode(),
        H_ORIGINAL_PARTITION: previous.get(H_ORIGINAL_PARTITION) or str(partition).encode(),
        H_ORIGINAL_OFFSET: previous.get(H_ORIGINAL_OFFSET) or str(offset).encode(),
        H_ORIGINAL_TIMESTAMP: previous.get(H_ORIGINAL_TIMESTAMP) or str(timestamp).encode(),
    }
    return headers
