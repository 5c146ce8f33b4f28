"""A local stand-in of Magento's `GET /rest/V1/orders` for `magqb import` tests.

Built from the real search result in tests/fixtures/magento (vuestorefront's `GET /V1/orders` answer:
`items`, `search_criteria` echo, `total_count`) and behaving as reference/magento.md §4 says Magento
does: searchCriteria filter groups (AND) of filters (OR) with eq/in/gteq/lt/lteq conditions, sort
orders, `pageSize`/`currentPage`, the *last page repeated* past the end, Bearer auth, and a 429 with
Retry-After now and then.

    python -m tests.magento_standin --port 8091 --orders 250 --token T --throttle-every 7
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

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


class Standin:
    def __init__(self, orders: list[dict[str, Any]], token: str, throttle_every: int = 0, deny_after: int = 0) -> None:
        self.orders = orders
        self.token = token
        self.throttle_every = throttle_every
        self.deny_after = deny_after  # the token revoked after this many requests (an interrupted import)
        self.requests = 0
        self.throttled = 0

    async def orders_endpoint(self, request: web.Request) -> web.Response:
        revoked = bool(self.deny_after) and self.requests >= self.deny_after
        if revoked or request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"message": 'The consumer isn\'t authorized to access %resources.',
                                      "parameters": {"resources": "Magento_Sales::actions_view"}}, status=401)
        self.requests += 1
        if self.throttle_every and self.requests % self.throttle_every == 0:
            self.throttled += 1
            return web.json_response({"message": "Too many requests"}, status=429, headers={"Retry-After": "0.2"})
        groups, size, page, sorts = _criteria(request.query)
        rows = [o for o in self.orders if all(any(_matches(o, *f) for f in g) for g in groups)]
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
        return web.json_response({"items": items, "search_criteria": echo, "total_count": total})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "throttled": self.throttled, "orders": len(self.orders)})


def build_app(standin: Standin) -> web.Application:
    app = web.Application()
    app.router.add_get("/rest/V1/orders", standin.orders_endpoint)
    app.router.add_get("/_standin/stats", standin.stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--orders", type=int, default=250)
    parser.add_argument("--first-entity-id", type=int, default=700000)
    parser.add_argument("--token", required=True)
    parser.add_argument("--throttle-every", type=int, default=0, help="answer every Nth request with 429")
    parser.add_argument("--bad", default="", help="comma-separated entity ids served broken")
    parser.add_argument("--start", default=FIRST_DAY.isoformat(), help="created_at of the first order (UTC)")
    parser.add_argument("--deny-after", type=int, default=0, help="answer 401 from the Nth request on")
    args = parser.parse_args()
    bad = frozenset(int(x) for x in args.bad.split(",") if x)
    orders = make_orders(args.orders, args.first_entity_id, datetime.fromisoformat(args.start), bad=bad)
    web.run_app(build_app(Standin(orders, args.token, args.throttle_every, args.deny_after)), host="127.0.0.1",
                port=args.port, print=None)


if __name__ == "__main__":
    main()
