"""JSON at the edges, with money kept as Decimal end to end.

orjson is fast but has no Decimal type: on the way out a Decimal is written as a
raw JSON number (orjson.Fragment), never through float; on the way in, callers
that read money (QBO responses, QBO request bodies in the sandbox) use
`loads_decimal`, which parses every JSON number with a fraction as Decimal.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise TypeError(f"cannot encode non-finite amount {obj!r}")
        return orjson.Fragment(format(obj, "f").encode())
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any, indent: bool = False, sort_keys: bool = False) -> bytes:
    """Serialize to JSON bytes; Decimal becomes a JSON number with its exact digits."""
    option = (orjson.OPT_INDENT_2 if indent else 0) | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    return orjson.dumps(obj, default=_default, option=option or None)


def loads(data: bytes | str) -> Any:
    """Fast parse for payloads whose numbers are not read as money here."""
    return orjson.loads(data)


def loads_decimal(data: bytes | str) -> Any:
    """Parse with numbers that have a fraction or exponent as Decimal (no float anywhere)."""
    return json.loads(data, parse_float=Decimal)


# A Magento order nests a dozen levels at most (items → product_options → bundle options …). Bodies
# nested deeper are refused where they come in: orjson writes at most 254 levels, so a deeper body
# that was parsed could never be written to Kafka (a 500 its sender would retry forever).
MAX_DEPTH = 64


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than `limit` levels (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
