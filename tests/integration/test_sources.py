"""Every way a store speaks, on a real socket and the real broker, signed as the real senders sign:
Mage-OS async events (hex HMAC per subscription), Adobe Commerce Webhooks (RSA over base64 of the
body), Adobe I/O Events (CloudEvents, two RSA signatures, keys from a key server, notify-then-fetch
from REST). Keys are made here; the key server and Magento's REST API are local stand-ins."""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app import topics
from app.adapters.kafka_admin import ensure_topics
from app.domain.signature import sign
from app.ingress.server import stop_producer
from app.settings import load_settings
from app.tools.order_status import order_status
from schemas.envelope import decode_envelope
from tests.conftest import FIXTURES, blueprint_order, free_port
from tests.integration.test_ingress import start_ingress, topic_records
from tests.integration.test_magento_rest import CREDS
from tests.magento_standin import Standin
from tests.magento_standin import build_app as standin_app

pytestmark = pytest.mark.kafka
SOURCES = FIXTURES / "sources"
CLIENT_ID = "4ab33463139e4f96b851589286cd46e4"
PAID_TOKEN = "mageos-paid-subscription-token"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def fixture(name: str) -> Any:
    return json.loads((SOURCES / name).read_text())


@dataclass
class Rig:
    url: str
    bootstrap: str
    commerce_key: rsa.RSAPrivateKey
    io_keys: dict[str, rsa.RSAPrivateKey]  # key path → private key (the key server serves the public half)
    key_requests: list[str] = field(default_factory=list)
    magento: Standin | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, Any]:
        async with aiohttp.ClientSession() as s, s.post(self.url + path, data=body, headers={
                "Content-Type": "application/json", **headers}) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else None, r.headers
            except ValueError:
                return r.status, text, r.headers

    async def records(self, key: int | str) -> list[Any]:
        return [decode_envelope(r.value) for r in await topic_records(self.bootstrap) if r.key == str(key).encode()]

    def io_headers(self, body: bytes, event_id: str, good: int = 1) -> dict[str, str]:
        """Both signatures as Adobe sends them; `good` says which one verifies (0: neither)."""
        (p1, k1), (p2, k2) = list(self.io_keys.items())
        other = new_key()
        return {"x-adobe-digital-signature-1": rsa_sign(k1 if good == 1 else other, body),
                "x-adobe-digital-signature-2": rsa_sign(k2 if good == 2 else other, body),
                "x-adobe-public-key1-path": p1, "x-adobe-public-key2-path": p2,
                "x-adobe-event-id": event_id, "x-adobe-event-code": "com.adobe.commerce.observer.sales_order_save_commit_after",
                "x-adobe-retry-count": "0"}


@pytest.fixture
async def rig(settings_env: dict[str, str], kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path) -> AsyncIterator[Rig]:
    commerce_key = new_key()
    key_file = tmp_path / "commerce-webhook-public.pem"
    key_file.write_bytes(pem(commerce_key))
    io_keys = {f"/prod/keys/pub-key-{uuid.uuid4()}.pem": new_key() for _ in range(2)}
    key_requests: list[str] = []

    async def key_server(request: web.Request) -> web.Response:
        key_requests.append(request.path)
        key = io_keys.get(request.path)
        return web.Response(body=pem(key), content_type="application/x-pem-file") if key else web.Response(status=404)

    magento = Standin([], oauth=CREDS)
    runners = []
    for app in (web.Application(), standin_app(magento)):
        if not app.router.routes():
            app.router.add_get("/{tail:.*}", key_server)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append((runner, f"http://127.0.0.1:{port}"))
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "MAGQB_ADOBE_WEBHOOK_PUBLIC_KEY": str(key_file),
           "MAGQB_ADOBE_IO_CLIENT_ID": CLIENT_ID, "MAGQB_ADOBE_IO_KEY_URL": runners[0][1],
           "MAGQB_MAGEOS_EVENT_SECRETS": f"sales.order.paid={PAID_TOKEN}",
           "MAGENTO_BASE_URL": runners[1][1] + "/rest/V1", "MAGENTO_CONSUMER_KEY": CREDS[0],
           "MAGENTO_CONSUMER_SECRET": CREDS[1], "MAGENTO_ACCESS_TOKEN": CREDS[2], "MAGENTO_ACCESS_TOKEN_SECRET": CREDS[3]}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    await ensure_topics(kafka_bootstrap, topics.app_topics(settings.kafka_partitions, 1))
    url, runner, producer = await start_ingress(settings)
    try:
        yield Rig(url, kafka_bootstrap, commerce_key, io_keys, key_requests, magento)
    finally:
        await runner.cleanup()
        await stop_producer(producer)
        for r, _ in runners:
            await r.cleanup()


def fresh_order(**changes: Any) -> dict[str, Any]:
    entity_id = random.randint(10**6, 10**9)  # unique per run: the broker keeps earlier runs' records
    return {**blueprint_order(), "entity_id": entity_id, "increment_id": f"{entity_id:09d}", **changes}


# ---------------------------------------------------------------- Mage-OS


async def test_mageos_events_each_at_its_own_url_with_its_own_token(rig: Rig) -> None:
    sample = fixture("mageos__sales.order.created.json")
    entity_id = random.randint(10**6, 10**9)
    sample["data"] = {**sample["data"], "entity_id": entity_id}
    body = json.dumps(sample).encode()
    secret = "test-webhook-secret"
    status, answer, _ = await rig.post("/webhooks/mageos/sales.order.created", body,
                                       {"x-magento-signature": sign(body, secret)})
    assert (status, answer["order_id"]) == (202, str(entity_id))
    cancelled = {"data": {**sample["data"], "state": "canceled", "status": "canceled"}}
    body = json.dumps(cancelled).encode()
    assert (await rig.post("/webhooks/mageos/sales.order.cancelled", body, {"x-magento-signature": sign(body, secret)}))[0] == 202
    held = json.dumps({"data": {**sample["data"], "state": "holded", "status": "holded"}}).encode()
    assert (await rig.post("/webhooks/mageos/sales.order.holded", held, {"x-magento-signature": sign(held, secret)}))[0] == 202
    events = await rig.records(entity_id)
    assert [(e.source, e.kind) for e in events] == [("mageos/sales.order.created", "order"),
                                                    ("mageos/sales.order.cancelled", "order"),
                                                    ("mageos/sales.order.holded", "notice")]
    assert events[0].order == sample["data"] and events[1].body["state"] == "canceled"
    assert events[2].notice == {"order_id": str(entity_id), "what": "sales.order.holded", "detail": "status holded"}

    # A cancelled event whose order is not cancelled is refused; an unknown event has no URL.
    body = json.dumps(sample).encode()
    status, answer, _ = await rig.post("/webhooks/mageos/sales.order.cancelled", body,
                                       {"x-magento-signature": sign(body, secret)})
    assert status == 422 and answer["errors"][0]["field"] == "state"
    assert (await rig.post("/webhooks/mageos/sales.order.shipped", body, {"x-magento-signature": sign(body, secret)}))[0] == 404
    assert len(await rig.records(entity_id)) == 3


async def test_mageos_paid_uses_its_own_token_and_brings_the_orders_paid_invoices_from_rest(rig: Rig) -> None:
    order = fresh_order()
    invoice = {**json.loads(next((FIXTURES / "magento" / "invoice").glob("*.json")).read_text()),
               "order_id": order["entity_id"], "entity_id": order["entity_id"] + 1}
    assert rig.magento is not None
    rig.magento.put("invoices", [invoice])
    body = json.dumps({"data": order}).encode()
    # The paid subscription has a verification_token of its own: the shared secret does not open it.
    assert (await rig.post("/webhooks/mageos/sales.order.paid", body,
                           {"x-magento-signature": sign(body, "test-webhook-secret")}))[0] == 401
    assert await rig.records(order["entity_id"]) == []
    status, _, _ = await rig.post("/webhooks/mageos/sales.order.paid", body,
                                  {"x-magento-signature": sign(body, PAID_TOKEN)})
    assert status == 202
    events = await rig.records(order["entity_id"])
    assert [(e.source, e.kind) for e in events] == [("mageos/sales.order.paid", "order"),
                                                    ("mageos/sales.order.paid", "invoice")]
    assert events[1].invoice == invoice
    assert rig.magento.refused == 0  # the invoices were read with a good OAuth 1.0a signature


# ---------------------------------------------------------------- Adobe Commerce webhooks


@pytest.mark.parametrize("sample", ["adobe-commerce-webhook__observer.sales_order_place_after.json",
                                    "adobe-commerce-webhook__plugin.sales.api.order_management.place.json"])
async def test_adobe_commerce_webhook_verified_over_base64_of_the_body(rig: Rig, sample: str) -> None:
    payload = fixture(sample)
    order = payload["data"]["order"] if "data" in payload else payload["order"]
    entity_id = random.randint(10**6, 10**9)
    order["entity_id"] = entity_id
    body = json.dumps(payload).encode()
    header = "x-adobe-commerce-webhook-signature"
    # Signed over the raw body (what Adobe's page suggests) is not what the module does: refused.
    status, _, _ = await rig.post("/webhooks/adobe-commerce", body, {header: rsa_sign(rig.commerce_key, body)})
    assert status == 401
    status, _, _ = await rig.post("/webhooks/adobe-commerce", body, {header: rsa_sign(new_key(), base64.b64encode(body))})
    assert status == 401
    assert await rig.records(entity_id) == []
    status, answer, _ = await rig.post("/webhooks/adobe-commerce", body,
                                       {header: rsa_sign(rig.commerce_key, base64.b64encode(body))})
    assert (status, answer) == (200, {"op": "success"})
    [event] = await rig.records(entity_id)
    assert (event.source, event.order) == ("adobe-commerce-webhook", order)


async def test_a_trimmed_adobe_commerce_hook_is_completed_from_rest(rig: Rig) -> None:
    """A hook configured with `fields` (the docs' "configured payload": items' skus and addresses only)."""
    full = fresh_order()
    assert rig.magento is not None
    rig.magento.put("orders", [full])
    trimmed = {"order": {"entity_id": full["entity_id"], "items": [{"sku": "Pr-1"}, {"sku": "Pr-2"}],
                         "addresses": [{"region_id": "57", "postcode": 78768, "country_id": "US",
                                        "address_type": "billing"}]}}
    body = json.dumps(trimmed).encode()
    status, answer, _ = await rig.post("/webhooks/adobe-commerce", body, {
        "x-adobe-commerce-webhook-signature": rsa_sign(rig.commerce_key, base64.b64encode(body))})
    assert (status, answer) == (200, {"op": "success"})
    [event] = await rig.records(full["entity_id"])
    assert event.order == full  # the order as REST has it, not the trimmed body
    gone = {"order": {"entity_id": full["entity_id"] + 1, "items": [{"sku": "Pr-1"}]}}
    body = json.dumps(gone).encode()
    status, answer, _ = await rig.post("/webhooks/adobe-commerce", body, {
        "x-adobe-commerce-webhook-signature": rsa_sign(rig.commerce_key, base64.b64encode(body))})
    assert status == 422 and await rig.records(full["entity_id"] + 1) == []


# ---------------------------------------------------------------- Adobe I/O Events


async def test_adobe_io_challenge(rig: Rig) -> None:
    async with aiohttp.ClientSession() as s, s.get(rig.url + "/webhooks/adobe-io", params={"challenge": "8ec8d794"}) as r:
        assert (r.status, await r.text()) == (200, "8ec8d794")


def io_event(entity_id: int, event_id: str | None = None, client_id: str = CLIENT_ID,
             with_entity_id: bool = False) -> dict[str, Any]:
    """The sample CloudEvent about order `entity_id`: named by its items' `order_id`, as the sample's
    subscription sends it, or by `entity_id` where the subscription has that field."""
    event = fixture("adobe-io__com.adobe.commerce.observer.sales_order_save_commit_after.json")
    event["id"] = event["eventid"] = event["event_id"] = event_id or str(uuid.uuid4())
    event["recipientclientid"] = event["recipient_client_id"] = client_id
    for item in event["data"]["value"]["items"]:
        item["order_id"] = str(entity_id)
    if with_entity_id:
        event["data"]["value"]["entity_id"] = str(entity_id)
    return event


async def test_adobe_io_event_fetches_the_order_from_rest_and_publishes_it_once(rig: Rig) -> None:
    order = fresh_order()
    assert rig.magento is not None
    rig.magento.put("orders", [order])
    event = io_event(order["entity_id"], with_entity_id=True)
    body = json.dumps(event).encode()
    # Signature 1 made with another key, signature 2 good: either one verifying is enough.
    status, _, _ = await rig.post("/webhooks/adobe-io", body, rig.io_headers(body, event["id"], good=2))
    assert status == 200
    [published] = await rig.records(order["entity_id"])
    assert (published.source, published.order) == ("adobe-io-events", order)  # REST's order, not the model data
    # Adobe retries with the same event id (its answer was lost): one event on the topic.
    status, _, _ = await rig.post("/webhooks/adobe-io", body, rig.io_headers(body, event["id"], good=1))
    assert status == 200
    assert len(await rig.records(order["entity_id"])) == 1
    assert sorted(rig.key_requests) == sorted(rig.io_keys)  # each key fetched once, then cached


async def test_adobe_io_refusals_publish_nothing(rig: Rig) -> None:
    order = fresh_order()
    assert rig.magento is not None
    rig.magento.put("orders", [order])
    event = io_event(order["entity_id"])
    body = json.dumps(event).encode()
    assert (await rig.post("/webhooks/adobe-io", body, rig.io_headers(body, event["id"], good=0)))[0] == 401
    for path in ("https://evil.example/prod/keys/pub-key-1.pem", "/prod/keys/../../etc/passwd",
                 "/prod/keys/pub-key-1.pem?x=1", "//evil.example/prod/keys/pub-key-1.pem"):
        headers = {**rig.io_headers(body, event["id"]), "x-adobe-public-key1-path": path,
                   "x-adobe-public-key2-path": path}
        assert (await rig.post("/webhooks/adobe-io", body, headers))[0] == 401, path
    wrong = json.dumps(io_event(order["entity_id"], client_id="someone-else")).encode()
    assert (await rig.post("/webhooks/adobe-io", wrong, rig.io_headers(wrong, "e-wrong")))[0] == 401
    assert (await rig.post("/webhooks/adobe-io", b"[not json", rig.io_headers(b"[not json", "e-bad")))[0] == 400
    assert await rig.records(order["entity_id"]) == []
    assert all(p in rig.io_keys for p in rig.key_requests)  # nothing but the documented paths was fetched


async def test_adobe_io_key_server_down_is_a_503_adobe_retries_not_a_401_it_drops(rig: Rig) -> None:
    order = fresh_order()
    event = io_event(order["entity_id"], with_entity_id=True)
    body = json.dumps(event).encode()
    unknown = f"/prod/keys/pub-key-{uuid.uuid4()}.pem"  # well-formed, but the key server has no such key
    headers = {**rig.io_headers(body, event["id"]), "x-adobe-public-key1-path": unknown,
               "x-adobe-public-key2-path": unknown}
    status, _, answer_headers = await rig.post("/webhooks/adobe-io", body, headers)
    assert (status, answer_headers.get("Retry-After")) == (503, "5")
    fetched = len(rig.key_requests)
    assert (await rig.post("/webhooks/adobe-io", body, headers))[0] == 503
    assert len(rig.key_requests) == fetched  # a failed path is not fetched again within a minute
    assert await rig.records(order["entity_id"]) == []


async def test_adobe_io_batch_and_an_order_rest_does_not_know(rig: Rig) -> None:
    known, gone = fresh_order(), fresh_order()
    assert rig.magento is not None
    rig.magento.put("orders", [known])
    nameless = io_event(0)
    for item in nameless["data"]["value"]["items"]:
        del item["order_id"]  # a subscription without entity_id: it names no order (logged, the batch goes on)
    batch = [nameless, io_event(known["entity_id"]), io_event(gone["entity_id"])]
    body = json.dumps(batch).encode()
    status, answer, _ = await rig.post("/webhooks/adobe-io", body, rig.io_headers(body, "batch-1"))
    assert (status, answer) == (200, {"status": "accepted", "events": 3})
    [order_event] = await rig.records(known["entity_id"])
    assert order_event.order == known
    [notice] = await rig.records(gone["entity_id"])
    assert notice.kind == "notice" and notice.notice is not None
    assert notice.notice["what"] == "notification without order" and "does not know" in notice.notice["detail"]
    # The known order was placed in 2023 and reported now by a change feed: an order of before magqb, which
    # the worker will not book and `magqb status` explains (before any worker ran).
    known_status = await order_status(load_settings(), str(known["entity_id"]))
    assert known_status is not None and known_status["state"] == "before_magqb"
    assert known_status["error"].endswith("an order of before magqb, not booked; `magqb import --since 2023-10-26 "
                                          "--until 2023-10-27` books it on purpose")
    # `magqb status` of the other order tells it, though no worker will ever have a row for it.
    status = await order_status(load_settings(), str(gone["entity_id"]))
    assert status is not None and status["state"] == "noted"
    assert status["error"].startswith("no order event came, only notices; the last: notification without order: "
                                      "sales_order_save_commit_after: Magento's REST API does not know order")
