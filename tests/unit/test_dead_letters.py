from app.dead_letters import retried_command
from app.domain import request_ids
from schemas.dead_letter import DeadLetter
from schemas.commands import EnsureItem


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
