"""Secrets are masked in everything we write (app.redact)."""

from __future__ import annotations

import logging

from app import redact
from app.domain.faults import parse_fault


def test_qbo_401_detail_echoing_the_token_is_scrubbed() -> None:
    token = "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..abcdefghijklmnopqrstuv"
    body = ('{"fault":{"error":[{"message":"message=AuthenticationFailed; errorCode=003200; statusCode=401",'
            f'"detail":"Token expired: {token[:40]}","code":"3200"}}],"type":"AUTHENTICATION"}}}}')
    fault = parse_fault(401, body)
    assert fault.code == "3200"
    assert token[:40] not in fault.detail and token[:40] not in fault.body
    assert fault.detail == "Token expired: [redacted]"


def test_known_secrets_and_token_shapes_are_masked() -> None:
    redact.register("s3cr3t-webhook-value", "", None, "abc")  # empty and short values are ignored
    text = ("sig s3cr3t-webhook-value; Authorization: Bearer AbC.123-xyz_987; "
            'form refresh_token=RT123456789&grant_type=refresh_token; json {"access_token": "at-987654321"}; abc')
    assert redact.scrub(text) == (
        "sig [redacted]; Authorization: Bearer [redacted]; form refresh_token=[redacted]&grant_type=refresh_token; "
        'json {"access_token": "[redacted]"}; abc')


def test_the_log_filter_scrubs_messages_arguments_and_tracebacks(caplog) -> None:
    redact.register("rt-very-secret-1")
    log = logging.getLogger("magqb.test.redact")
    handler = logging.StreamHandler()
    handler.addFilter(redact.RedactingFilter())
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        log.warning("refresh with %s failed", "rt-very-secret-1")
        try:
            raise ValueError("token rt-very-secret-1 refused")
        except ValueError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    assert records[0].getMessage() == "refresh with [redacted] failed"
    assert "rt-very-secret-1" not in (records[1].exc_text or "") and "[redacted]" in (records[1].exc_text or "")
