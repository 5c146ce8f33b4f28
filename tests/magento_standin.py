"""A local stand-in of Magento's REST API (orders, credit memos, invoices) for `magqb import` and
`magqb follow` tests.

Built from the real search result in tests/fixtures/magento (vuestorefront's `GET /V1/orders` answer:
`items`, `search_criteria` echo, `total_count`) and behaving as reference/magento.md §4 says Magento
does: searchCriteria filter groups (AND) of filters (OR) with eq/in/gteq/lt/lteq conditions, sort
orders, `pageSize`/`currentPage`, the *last page repeated* past the end, a 429 with Retry-After now and
then, and Magento's authentication: a Bearer token, or OAuth 1.0a HMAC-SHA256 verified by oauthlib's own
server endpoint (a wrong secret, a timestamp more than 600 s off and a reused nonce all get Magento's 401).

    python -m tests.magento_standin --port 8091 --orders 250 --token T --throttle-every 7
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import string
import time
from datetime import datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiohttp import web
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, RequestValidator, ResourceEndpoint
from oauthlib.oauth1.rfc5849.endpoints import base as oauth_base

FIXTURE = (Path(__file__).parent / "fixtures" / "magento"
           / "vuestorefront__storefront-api__GET_V1_orders_search_result_guest_vat_discount.json")
FIRST_DAY = datetime(2026, 10, 1, 8, 0, 0)
_PARAM = re.compile(r"searchCriteria\[filter_groups\]\[(\d+)\]\[filters\]\[(\d+)\]\[(\w+)\]")


def make_orders(count: int, first_entity_id: int, start: datetime = FIRST_DAY, step_minutes: int = 37,
                bad: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """`count` orders cloned from the fixture's first item: distinct ids, e-mails and created_at times.
    Entity ids in `bad` lose their `items` type (a broken row, as a store with a bad extension sends)."""
    template = json.loads(FIXTURE.read_text())["items"][0]
    orders = []
    for n in range(count):
        order = copy.deepcopy(template)
        entity_id = first_entity_id + n
        created = start + timedelta(minutes=step_minutes * n)
        order.update({
            "entity_id": entity_id, "increment_id": f"{entity_id:09d}", "customer_email": f"import{n % 40}@example.com",
            "created_at": created.strftime("%Y-%m-%d %H:%M:%S"), "updated_at": created.strftime("%Y-%m-%d %H:%M:%S"),
            "status": "complete" if n % 5 else "processing", "store_id": 1 if n % 7 else 2,
        })
        for item in order.get("items", []):
            item["order_id"] = entity_id
        if entity_id in bad:
            order["items"] = "not a list"
        orders.append(order)
    return orders


def _criteria(query: Any) -> tuple[list[list[tuple[str, str, str]]], int, int, list[tuple[str, str]]]:
    groups: dict[int, dict[int, dict[str, str]]] = {}
    for key, value in query.items():
        m = _PARAM.fullmatch(key)
        if m:
            groups.setdefault(int(m[1]), {}).setdefault(int(m[2]), {})[m[3]] = value
    filter_groups = [[(f.get("field", ""), f.get("value", ""), f.get("condition_type", "eq")) for _, f in
                      sorted(g.items())] for _, g in sorted(groups.items())]
    size = int(query.get("searchCriteria[pageSize]", 20))
    page = int(query.get("searchCriteria[currentPage]", 1))
    sorts = []
    for n in range(5):
        fld = query.get(f"searchCriteria[sortOrders][{n}][field]")
        if fld:
            sorts.append((fld, query.get(f"searchCriteria[sortOrders][{n}][direction]", "ASC")))
    return filter_groups, size, page, sorts


def _matches(order: dict[str, Any], fld: str, value: str, condition: str) -> bool:
    have = order.get(fld)
    if have is None:
        return condition in ("null", "neq", "nin")
    as_num = isinstance(have, int | float) and not isinstance(have, bool)
    a: Any = have if as_num else str(have)
    b: Any = value
    if as_num:
        try:
            b = float(value)
        except ValueError:
            return False
    if condition == "eq":
        return bool(a == b)
    if condition == "neq":
        return bool(a != b)
    if condition in ("in", "nin"):
        found = str(have) in value.split(",")
        return found if condition == "in" else not found
    ops = {"gt": a > b, "gteq": a >= b, "lt": a < b, "lteq": a <= b}
    if condition in ops:
        return bool(ops[condition])
    raise web.HTTPBadRequest(text=json.dumps({"message": f'Invalid condition type "{condition}"'}),
                             content_type="application/json")


class _Validator(RequestValidator):  # type: ignore[misc]
    """Magento's side of OAuth 1.0a for one integration: its 32-character keys, a 600 s timestamp
    window and nonces used once (Magento\\Integration\\Model\\Oauth\\Nonce\\Generator)."""

    def __init__(self, consumer_key: str, consumer_secret: str, token: str, token_secret: str) -> None:
        super().__init__()
        self.creds = (consumer_key, consumer_secret, token, token_secret)
        self.nonces: set[tuple[str, str, str]] = set()

    enforce_ssl = False
    safe_characters = set(string.ascii_letters + string.digits)
    client_key_length = (1, 64)
    access_token_length = (1, 64)
    nonce_length = (8, 64)
    dummy_client = "dummyclientdummyclientdummyclien"
    dummy_access_token = "dummytokendummytokendummytokendu"
    allowed_signature_methods = (SIGNATURE_HMAC_SHA256,)

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key == self.creds[0]

    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        return token == self.creds[2]

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return self.creds[1] if client_key == self.creds[0] else "dummy"

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        return self.creds[3] if token == self.creds[2] else "dummy"

    def validate_timestamp_and_nonce(self, client_key: str, timestamp: str, nonce: str, request: Any,
                                     request_token: Any = None, access_token: Any = None) -> bool:
        key = (client_key, nonce, access_token or "")
        if key in self.nonces:
            return False
        self.nonces.add(key)
        return True

    def validate_realms(self, *args: Any, **kwargs: Any) -> bool:
        return True


UNAUTHORIZED = {"message": "The consumer isn't authorized to access %resources.",
                "parameters": {"resources": "Magento_Sales::actions_view"}}
RESOURCES = ("orders", "creditmemos", "invoices")


class _Clock:
    """The stand-in's clock, `offset` seconds off this host's (a Magento whose time differs)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


class Standin:
    def __init__(self, orders: list[dict[str, Any]], token: str = "", throttle_every: int = 0, deny_after: int = 0,
                 oauth: tuple[str, str, str, str] | None = None, clock_offset: float = 0.0) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {"orders": orders, "creditmemos": [], "invoices": []}
        self.token = token
        self.throttle_every = throttle_every
        self.deny_after = deny_after  # the token revoked after this many requests (an interrupted import)
        self.requests = 0
        self.throttled = 0
        self.refused = 0
        self.down = 0  # answer 503 to this many requests (Magento in maintenance)
        self.slow = 0.0  # seconds each answer takes (a busy Magento)
        self.clock = _Clock(clock_offset)
        self.validator = _Validator(*oauth) if oauth else None
        self.endpoint = ResourceEndpoint(self.validator) if self.validator else None
        if clock_offset:
            oauth_base.time = self.clock  # type: ignore[assignment]  # oauthlib's timestamp window reads it

    @property
    def orders(self) -> list[dict[str, Any]]:
        return self.rows["orders"]

    def _authorized(self, request: web.Request) -> bool:
        if self.deny_after and self.requests >= self.deny_after:
            return False
        if self.endpoint is not None and request.headers.get("Authorization", "").startswith("OAuth "):
            # The URL exactly as it came over the wire: what the client signed, brackets encoded or not.
            uri = f"{request.scheme}://{request.host}{request.raw_path}"
            ok, _ = self.endpoint.validate_protected_resource_request(
                uri, http_method=request.method, headers={"Authorization": request.headers["Authorization"]})
            return bool(ok)
        return bool(self.token) and request.headers.get("Authorization") == f"Bearer {self.token}"

    def _answer(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        date = formatdate(self.clock.time(), usegmt=True)
        return web.json_response(body, status=status, headers={"Date": date, **(headers or {})})

    async def _gate(self, request: web.Request) -> web.Response | None:
        if not self._authorized(request):
            self.refused += 1
            return self._answer(UNAUTHORIZED, 401)
        self.requests += 1
        if self.slow:
            await asyncio.sleep(self.slow)
        if self.down:
            self.down -= 1
            return self._answer({"message": "Service Unavailable"}, 503)
        if self.throttle_every and self.requests % self.throttle_every == 0:
            self.throttled += 1
            return self._answer({"message": "Too many requests"}, 429, {"Retry-After": "0.2"})
        return None

    async def search_endpoint(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        return self._answer(self.search(request.match_info["resource"], request.query))

    def search(self, resource: str, query: Any) -> dict[str, Any]:
        """Magento's answer to a searchCriteria query string (parsed): the page, its echo and total."""
        groups, size, page, sorts = _criteria(query)
        rows = [o for o in self.rows[resource] if all(any(_matches(o, *f) for f in g) for g in groups)]
        for fld, direction in reversed(sorts):
            rows.sort(key=lambda o: (o.get(fld) is None, o.get(fld)), reverse=direction.upper() == "DESC")
        total = len(rows)
        last_page = max(1, -(-total // size))
        page = min(max(1, page), last_page)  # Magento answers a page past the end with the last page again
        items = rows[(page - 1) * size: page * size]
        echo = {"filter_groups": [{"filters": [{"field": f, "value": v, "condition_type": c} for f, v, c in g]}
                                  for g in groups],
                "sort_orders": [{"field": f, "direction": d} for f, d in sorts], "page_size": size,
                "current_page": page}
        return {"items": items, "search_criteria": echo, "total_count": total}

    async def order_endpoint(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        wanted = request.match_info["entity_id"]
        for order in self.rows["orders"]:
            if str(order.get("entity_id")) == wanted:
                return self._answer(order)
        return self._answer({"message": "The entity that was requested doesn't exist. Verify the entity and try "
                                        "again."}, 404)

    def put(self, resource: str, rows: list[dict[str, Any]]) -> None:
        """Add rows, or replace the ones with the same entity_id (an order Magento changed)."""
        table = self.rows[resource]
        for row in rows:
            table[:] = [r for r in table if r.get("entity_id") != row.get("entity_id")]
            table.append(row)

    async def put_endpoint(self, request: web.Request) -> web.Response:
        self.put(request.match_info["resource"], await request.json())
        return web.json_response({"ok": True})

    async def mode_endpoint(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.down = int(body.get("down", self.down))
        self.slow = float(body.get("slow", self.slow))
        return web.json_response({"down": self.down, "slow": self.slow})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "throttled": self.throttled, "refused": self.refused,
                                  "orders": len(self.orders)})


def build_app(standin: Standin) -> web.Application:
    app = web.Application()
    resources = "{resource:" + "|".join(RESOURCES) + "}"
    app.router.add_get(f"/rest/V1/{resources}", standin.search_endpoint)
    app.router.add_get("/rest/V1/orders/{entity_id:\\d+}", standin.order_endpoint)
    app.router.add_post(f"/_standin/{resources}", standin.put_endpoint)
    app.router.add_post("/_standin/mode", standin.mode_endpoint)
    app.router.add_get("/_standin/stats", standin.stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--orders", type=int, default=250)
    parser.add_argument("--first-entity-id", type=int, default=700000)
    parser.add_argument("--token", default="", help="the Bearer token it takes")
    parser.add_argument("--oauth", default="", metavar="KEY:SECRET:TOKEN:TOKEN_SECRET",
                        help="the integration whose OAuth 1.0a HMAC-SHA256 signatures it takes")
    parser.add_argument("--clock-offset", type=float, default=0.0, help="seconds its clock is off this host's")
    parser.add_argument("--throttle-every", type=int, default=0, help="answer every Nth request with 429")
    parser.add_argument("--bad", default="", help="comma-separated entity ids served broken")
    parser.add_argument("--start", default=FIRST_DAY.isoformat(), help="created_at of the first order (UTC)")
    parser.add_argument("--deny-after", type=int, default=0, help="answer 401 from the Nth request on")
    args = parser.parse_args()
    bad = frozenset(int(x) for x in args.bad.split(",") if x)
    orders = make_orders(args.orders, args.first_entity_id, datetime.fromisoformat(args.start), bad=bad)
    web.run_app(build_app(Standin(orders, args.token, args.throttle_every, args.deny_after,
                                          oauth=tuple(args.oauth.split(":")) if args.oauth else None,  # type: ignore[arg-type]
                                          clock_offset=args.clock_offset)), host="127.0.0.1",
                port=args.port, print=None)


if __name__ == "__main__":
    main()
