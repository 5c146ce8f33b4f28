import hashlib
import hmac

from app.domain.signature import sign, verify

BODY = b'{"entity_id":1,"items":[]}'
SECRET = "s3cret"


def test_sign_is_lowercase_hex_hmac_sha256_of_the_raw_body() -> None:
    expected = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET) == expected
    assert expected == expected.lower() and len(expected) == 64


def test_good_signature_verifies() -> None:
    assert verify(BODY, sign(BODY, SECRET), SECRET) is True


def test_uppercase_hex_of_the_same_digest_verifies() -> None:
    assert verify(BODY, sign(BODY, SECRET).upper(), SECRET) is True


def test_bad_signature_is_rejected() -> None:
    assert verify(BODY, "0" * 64, SECRET) is False


def test_missing_signature_is_rejected() -> None:
    assert verify(BODY, None, SECRET) is False
    assert verify(BODY, "", SECRET) is False


def test_wrong_secret_is_rejected() -> None:
    assert verify(BODY, sign(BODY, "other-secret"), SECRET) is False


def test_body_altered_by_one_byte_is_rejected() -> None:
    signature = sign(BODY, SECRET)
    altered = BODY[:-2] + b"}" + BODY[-1:]
    assert altered != BODY and len(altered) == len(BODY)
    assert verify(altered, signature, SECRET) is False
    assert verify(BODY + b" ", signature, SECRET) is False
