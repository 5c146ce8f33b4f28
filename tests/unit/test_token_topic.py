"""The sealed token records and the compare-and-set read of the token topic: pure, no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.adapters.token_topic import CREATE, Fold, TokenKeyError, TokenRecord, digest, new_key, parse_key, seal, unseal
from app.settings import SettingsError, load_settings
from tests.conftest import TEST_ENV

KEY = parse_key(new_key())
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def record(token: str, based_on: int | None, realm: str = "9130") -> TokenRecord:
    return TokenRecord(realm_id=realm, refresh_token=token, based_on=based_on, updated_at=NOW)


def test_a_sealed_record_opens_with_its_key_and_holds_no_token_in_clear() -> None:
    value = seal(KEY, "magqb.tokens", record("RT1-secret-value", None))
    assert b"RT1-secret-value" not in value and b"9130" not in value
    assert unseal(KEY, "magqb.tokens", "9130", value).refresh_token == "RT1-secret-value"


def test_another_key_another_realm_or_another_topic_does_not_open_it() -> None:
    value = seal(KEY, "magqb.tokens", record("RT1-a", None))
    with pytest.raises(TokenKeyError, match="sealed with another key"):
        unseal(parse_key(new_key()), "magqb.tokens", "9130", value)
    with pytest.raises(TokenKeyError):  # copied under another realm's key
        unseal(KEY, "magqb.tokens", "4620", value)
    with pytest.raises(TokenKeyError):  # another installation's topic
        unseal(KEY, "shop2.magqb.tokens", "9130", value)
    with pytest.raises(ValueError, match="not a sealed token record"):
        unseal(KEY, "magqb.tokens", "9130", b'{"refresh_token": "x"}')


def test_the_first_write_that_replaces_the_current_record_wins_the_second_loses() -> None:
    fold = Fold()
    fold.add(0, record("RT-1", None))
    fold.add(1, record("RT-2a", 0))  # host A rotated RT-1
    fold.add(2, record("RT-2b", 0))  # host B rotated RT-1 too, at the same moment: it lost
    assert fold.current is not None and (fold.current.offset, fold.current.record.refresh_token) == (1, "RT-2a")
    assert fold.accepted == {0, 1} and fold.last_lost
    fold.add(3, record("RT-2a", 1))  # the loser writes the winner again
    assert fold.current.offset == 3 and not fold.last_lost
    fold.add(4, record("RT-3", 3))
    assert fold.current.record.refresh_token == "RT-3"


def test_an_operators_token_replaces_whatever_is_there() -> None:
    fold = Fold()
    fold.add(5, record("RT-1", None))
    fold.add(6, record("RT-connect", None))  # `magqb connect`
    fold.add(7, record("RT-late-refresh", 5))  # a refresh of the old token that raced the connect
    assert fold.current is not None and fold.current.record.refresh_token == "RT-connect"


def test_after_compaction_the_first_record_left_counts_even_if_it_replaced_one_now_gone() -> None:
    fold = Fold()
    fold.add(41, record("RT-9", 40))  # 0..40 compacted away
    fold.add(42, record("RT-10", 41))
    assert fold.current is not None and fold.current.record.refresh_token == "RT-10"


def test_the_key_setting_is_checked_and_never_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MAGQB_TOKEN_KEY", "c2hvcnQta2V5LXNlY3JldA")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "MAGQB_TOKEN_KEY" in str(err.value) and "not 32" in str(err.value)
    assert "c2hvcnQta2V5LXNlY3JldA" not in str(err.value)
    good = new_key()
    monkeypatch.setenv("MAGQB_TOKEN_KEY", good)
    assert load_settings().token_key.get_secret_value() == good


def test_a_token_is_named_in_the_history_by_a_short_digest_only() -> None:
    assert len(digest("RT1-abc")) == 12 and "RT1" not in digest("RT1-abc")


def test_a_first_token_counts_only_where_the_realm_has_none_yet() -> None:
    fold = Fold()
    fold.add(0, record("RT-from-host-a-file", CREATE))  # host A moves its file's token
    fold.add(1, record("RT-from-host-b-file", CREATE))  # host B too, a moment later: too late
    assert fold.current is not None and fold.current.record.refresh_token == "RT-from-host-a-file"
    assert fold.last_lost
    fold.add(2, record("RT-connect", None))
    fold.add(3, record("RT-stale-file", CREATE))  # a file moved after `magqb connect` never replaces it
    assert fold.current.record.refresh_token == "RT-connect"


def test_a_record_the_key_opens_but_this_version_cannot_read_stops_with_its_fields_never_its_text() -> None:
    import base64

    from app.adapters.token_topic import AESGCM, Envelope, TokenRecordUnreadable, _aad
    nonce = b"\0" * 12
    plain = b'{"schema_version": 2, "realm_id": "9130", "refresh_token": "RT1-newer-format-secret"}'
    value = Envelope(nonce=base64.b64encode(nonce).decode(),
                     sealed=base64.b64encode(AESGCM(KEY).encrypt(nonce, plain, _aad("magqb.tokens", "9130"))).decode())
    with pytest.raises(TokenRecordUnreadable) as err:
        unseal(KEY, "magqb.tokens", "9130", value.model_dump_json().encode())
    assert "upgrade this host" in str(err.value) and "RT1-newer-format-secret" not in str(err.value)
    assert "RT1" not in repr(record("RT1-in-a-repr", None))
