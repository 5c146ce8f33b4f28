"""The sources' pure parts: which events are orders, which key paths are fetched, what names the order,
how a Mage-OS token setting is read — and that a bad one is never echoed."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.sources import adobe_commerce, adobe_io, mageos
from app.sources.rsa import PublicKeyError, load_public_key, verify


def test_order_event_types_with_or_without_an_app_namespace() -> None:
    assert adobe_io.is_order_event("com.adobe.commerce.observer.sales_order_save_commit_after")
    assert adobe_io.is_order_event("com.adobe.commerce.test_app.observer.sales_order_save_commit_after")
    assert not adobe_io.is_order_event("com.adobe.commerce.observer.catalog_product_save_commit_after")
    assert not adobe_io.is_order_event("org.example.observer.sales_order_save_commit_after")


@pytest.mark.parametrize("path,ok", [
    ("/prod/keys/pub-key-0b5b5c0e-3d2f-4e0c-9d59-2b7a1c3e4f5a.pem", True),
    ("/prod/keys/pub-key-1.pem", True),
    ("/prod/keys/../../etc/passwd", False),
    ("https://evil.example/prod/keys/pub-key-1.pem", False),
    ("//evil.example/prod/keys/pub-key-1.pem", False),
    ("/prod/keys/pub-key-1.pem?x=1", False),
    ("/prod/keys/pub-key-1.pem\n", False),
    ("", False),
    (None, False),
])
def test_only_key_paths_of_the_documented_form_are_fetched(path: str | None, ok: bool) -> None:
    assert adobe_io.key_path_ok(path) is ok


def test_the_order_a_cloud_event_names() -> None:
    event = {"specversion": "1.0", "id": "i1", "type": "t", "eventid": "e1", "data": {"value": {"entity_id": "57"}}}
    assert adobe_io.notification(event) == adobe_io.Notification("e1", "t", 57)
    assert adobe_io.notification(event, "hdr").event_id == "hdr"  # x-adobe-event-id, the same on every retry
    by_items = {**event, "data": {"value": {"items": [{"order_id": "58"}]}}}
    assert adobe_io.notification(by_items).entity_id == 58
    for value in ({}, {"entity_id": "x"}, {"entity_id": 0}, {"entity_id": True}):
        assert adobe_io.notification({**event, "data": {"value": value}}).entity_id is None
    with pytest.raises(adobe_io.CloudEventError):
        adobe_io.events_of({"id": "x"})
    with pytest.raises(adobe_io.CloudEventError):
        adobe_io.events_of([])
    assert len(adobe_io.events_of([event, event])) == 2


def test_seen_events_forget_the_oldest() -> None:
    seen = adobe_io.SeenEvents(size=2)
    for e in ("a", "b", "c"):
        seen.add(e)
    assert "a" not in seen and "b" in seen and "c" in seen


def test_mageos_tokens_per_event_and_a_bad_entry_is_never_echoed() -> None:
    assert mageos.parse_event_secrets("sales.order.paid=t1, sales.order.created=t2") == {
        "sales.order.paid": "t1", "sales.order.created": "t2"}
    assert mageos.parse_event_secrets("") == {}
    for bad in ("s3cr3t-token-value", "sales.order.shipped=s3cr3t-token-value", "sales.order.paid="):
        with pytest.raises(ValueError) as err:
            mageos.parse_event_secrets(bad)
        assert "s3cr3t" not in str(err.value)


def test_adobe_commerce_signs_the_base64_of_the_body_and_both_shapes_carry_the_order() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = b'{"order": {"entity_id": 1}}'
    signed = base64.b64encode(key.sign(base64.b64encode(body), padding.PKCS1v15(), hashes.SHA256())).decode()
    assert adobe_commerce.verify(key.public_key(), body, signed)
    raw_signed = base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()
    assert not adobe_commerce.verify(key.public_key(), body, raw_signed)
    assert not verify(key.public_key(), body, "not base64!") and not verify(key.public_key(), body, None)
    assert adobe_commerce.extract_order({"order": {"a": 1}}) == {"a": 1}
    assert adobe_commerce.extract_order({"eventName": "x", "data": {"order": {"b": 2}}}) == {"b": 2}


def test_a_public_key_setting_is_a_pem_or_a_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PublicKeyError, match="cannot read the public key file"):
        load_public_key(str(tmp_path / "missing.pem"))
    with pytest.raises(PublicKeyError, match="not a PEM public key"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")


async def test_key_cache_refetches_after_a_day_keeps_an_expired_key_while_the_server_fails_and_holds_nothing_for_strangers(
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = [0.0]
    answers: list[bytes | Exception] = [pem]
    asked: list[str] = []

    async def fetch(url: str) -> bytes:
        asked.append(url)
        answer = answers[-1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = adobe_io.KeyCache("https://keys.example", fetch, ttl=86400, clock=lambda: now[0], max_fetches=3)
    good = "/prod/keys/pub-key-1.pem"
    assert await cache.key(good) is not None and await cache.key(good) is not None
    assert asked == ["https://keys.example" + good]  # cached
    now[0] = 86401.0
    answers.append(OSError("down"))
    assert await cache.key(good) is not None  # expired, the refetch failed: the old key still verifies
    assert len(asked) == 2
    # Strangers' paths: fetched within the budget, then refused at once; no lock or entry kept for them.
    for n in range(10):
        with pytest.raises(adobe_io.KeyUnavailable):
            await cache.key(f"/prod/keys/pub-key-x{n}.pem")
    assert len(asked) == 4 and cache._locks == {}  # the state a flood must not grow


@pytest.mark.parametrize("depth,too_deep", [(1, False), (64, False), (65, True), (300, True)])
def test_nesting_depth_is_measured_without_recursion(depth: int, too_deep: bool) -> None:
    from app import jsonutil
    from app.tools.importer import event_record

    value: object = 1
    for n in range(depth):
        value = {"a": value} if n % 2 else [value]
    assert jsonutil.deeper_than(value) is too_deep
    assert not jsonutil.deeper_than({"items": [{"product_option": {"extension_attributes": {"x": [1]}}}]})
    if too_deep:
        # The follower and `magqb import` say why rather than fail on it (a pass that never ends).
        assert event_record({"entity_id": 1, "deep": value}, 1_000_000, "rest-follow", "order") == \
            "nested more than 64 levels: not a Magento order"


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_nesting_depth_fuzzed_against_a_recursive_count() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from app import jsonutil

    json_values = st.recursive(st.none() | st.integers() | st.text(max_size=3),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                                           max_size=3),
                               max_leaves=40)

    @settings(max_examples=300, deadline=None)
    @given(value=json_values, limit=st.integers(0, 8))
    def check(value: object, limit: int) -> None:
        assert jsonutil.deeper_than(value, limit) is (_depth(value) > limit)

    check()
