from app.domain import request_ids
from app.tools.dead_letters import retried_command
from schemas.commands import EnsureItem
from schemas.dead_letter import DeadLetter


def test_a_retried_dead_letter_gets_its_own_stable_requestid() -> None:
    cmd = EnsureItem(order_id="9", order_ref="000000009", realm_id="1", income_account_id="79", name="SKU-1",
                     request_id=request_ids.item_request_id("1", "SKU-1"))
    letter = DeadLetter(order_id="9", order_ref="000000009", realm_id="1", command_type=cmd.type,
                        command=cmd.model_dump(mode="json"), reason="permanent", attempts=[])
    again = retried_command(letter)
    assert again.request_id != cmd.request_id  # QBO would replay the fault for the old one
    assert again.request_id == retried_command(letter).request_id  # an interrupted retry repeats exactly
    assert len(again.request_id) <= 50
    assert again.model_dump(exclude={"request_id"}) == cmd.model_dump(exclude={"request_id"})


def test_transient_and_permanent_failures() -> None:
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

    from app.adapters.transient import is_transient

    assert is_transient(KafkaTimeoutError()) and is_transient(KafkaConnectionError()) and is_transient(TimeoutError())
    assert not is_transient(MessageSizeTooLargeError())  # the broker will never take it: retrying stalls all
    assert not is_transient(ValueError("a bug"))


def test_a_letter_too_large_for_one_record_leaves_out_what_can_be_rebuilt_first() -> None:
    from datetime import UTC, datetime

    from schemas.dead_letter import Attempt, EventSource

    attempts = [Attempt(at=datetime.now(UTC), error_class="x", message="m" * 900) for _ in range(10)]
    base = DeadLetter(order_id="9", order_ref="9", realm_id="1", command_type="create_document",
                      command={"type": "create_document", "document": {"Line": ["x" * 50_000]}}, reason="permanent",
                      attempts=attempts, order_event={"order": {"entity_id": 9}},
                      raw_value=DeadLetter.encode_raw(b"y" * 30_000), source=EventSource(topic="t", partition=0,
                                                                                         offset=1))
    small = base.shrunk(20_000)
    assert len(small.model_dump_json()) <= 20_000
    assert small.omitted == ["command", "raw_value"] and small.order_event is not None and len(small.attempts) == 10
    unreadable = DeadLetter(order_id="?", order_ref="?", realm_id="1", command_type="unreadable", command={},
                            reason="unreadable", attempts=attempts[:1], raw_value=DeadLetter.encode_raw(b"z" * 90_000),
                            source=EventSource(topic="t", partition=0, offset=2))
    tiny = unreadable.shrunk(50_000)
    assert tiny.raw_value is None and tiny.omitted == ["raw_value (too large to keep)"]
    assert tiny.why_not_retriable() is not None and unreadable.why_not_retriable() is None


def test_an_unreadable_command_that_names_its_order_is_reported_to_that_order() -> None:
    import json

    from agents.dispatcher import failure_for_its_order

    raw = json.dumps({"type": "create_document", "order_id": "77", "order_ref": "000000077",
                      "request_id": "mq-doc-1", "schema_version": 9}).encode()
    failed = failure_for_its_order(raw, "1", "unsupported schema_version 9")
    assert failed is not None and (failed.order_id, failed.request_id, failed.reason) == ("77", "mq-doc-1",
                                                                                           "unreadable")
    assert failure_for_its_order(b"\x00garbage", "1", "x") is None
    assert failure_for_its_order(json.dumps({"order_id": 5}).encode(), "1", "x") is None
