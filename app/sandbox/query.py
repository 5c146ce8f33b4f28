"""The QBO query language subset, parsed and evaluated over in-memory entities.

SELECT * | COUNT(*) FROM <Entity> [WHERE <prop> <op> <value> [AND ...]]
[ORDERBY <prop> [ASC|DESC]] [STARTPOSITION n] [MAXRESULTS n]

Operators =, <, >, <=, >=, IN (...), LIKE ('%' wildcard); strings in single
quotes with backslash escapes; keywords case-insensitive (reference/qbo.md §5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from app.sandbox.faults import query_invalid, query_parse_error

MAX_RESULTS_LIMIT = 1000
DEFAULT_MAX_RESULTS = 100

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*')
      | (?P<op><=|>=|=|<|>)
      | (?P<punct>[(),*])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<number>-?\d+(?:\.\d+)?)
    )""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Condition:
    prop: str
    op: str  # = < > <= >= IN LIKE
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Query:
    entity: str
    count: bool = False
    where: tuple[Condition, ...] = ()
    order_by: str | None = None
    descending: bool = False
    start: int = 1
    max_results: int = DEFAULT_MAX_RESULTS


@dataclass
class _Tokens:
    items: list[tuple[str, Any]]
    pos: int = 0
    text: str = field(default="")

    def peek(self) -> tuple[str, Any] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def next(self) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None:
            raise query_parse_error(f'Encountered "<EOF>" at line 1, column {len(self.text) + 1}.')
        self.pos += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok and tok[0] == "word" and tok[1].upper() in words:
            self.pos += 1
            return str(tok[1].upper())
        return None

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            kind, val = self.peek() or ("eof", "<EOF>")
            raise query_parse_error(f'Encountered " {kind} "{val} "". Was expecting: "{word}"')

    def expect(self, kind: str, value: str | None = None) -> Any:
        tok = self.next()
        if tok[0] != kind or (value is not None and tok[1] != value):
            raise query_parse_error(f'Encountered " {tok[0]} "{tok[1]} "". Was expecting: {value or kind}')
        return tok[1]


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1], flags=re.DOTALL)


def _tokenize(text: str) -> _Tokens:
    items: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            col = pos + 1
            raise query_parse_error(f'Lexical error at line 1, column {col}. Encountered: "{text[pos]}"')
        pos = m.end()
        kind = m.lastgroup or ""
        value: Any = m.group(kind)
        if kind == "string":
            value = _unquote(value)
        items.append((kind, value))
    return _Tokens(items=items, text=text)


def _value(tokens: _Tokens) -> Any:
    kind, val = tokens.next()
    if kind == "string":
        return val
    if kind == "number":
        return Decimal(val)
    if kind == "word" and val.lower() in ("true", "false"):
        return val.lower() == "true"
    raise query_parse_error(f'Encountered " {kind} "{val} "". Was expecting a value')


def parse(text: str, known_entities: set[str]) -> Query:
    tokens = _tokenize(text)
    tokens.expect_keyword("SELECT")
    count = False
    kind, val = tokens.next()
    if kind == "punct" and val == "*":
        # `SELECT *, Sku FROM Item` (python-quickbooks): extra columns are ignored, all fields come back.
        while tokens.peek() == ("punct", ","):
            tokens.next()
            tokens.expect("word")
    elif kind == "word" and val.upper() == "COUNT":
        tokens.expect("punct", "(")
        tokens.expect("punct", "*")
        tokens.expect("punct", ")")
        count = True
    else:
        raise query_parse_error(f'Encountered " {kind} "{val} "". Was expecting "*" or "count"')
    tokens.expect_keyword("FROM")
    entity_word = tokens.expect("word")
    entity = next((e for e in known_entities if e.lower() == entity_word.lower()), None)
    if entity is None:
        raise query_invalid(f"invalid context declaration: {entity_word}")

    where: list[Condition] = []
    if tokens.keyword("WHERE"):
        while True:
            prop = tokens.expect("word")
            op_tok = tokens.next()
            if op_tok[0] == "op":
                where.append(Condition(prop, op_tok[1], (_value(tokens),)))
            elif op_tok[0] == "word" and op_tok[1].upper() == "IN":
                tokens.expect("punct", "(")
                values = [_value(tokens)]
                while tokens.peek() == ("punct", ","):
                    tokens.next()
                    values.append(_value(tokens))
                tokens.expect("punct", ")")
                where.append(Condition(prop, "IN", tuple(values)))
            elif op_tok[0] == "word" and op_tok[1].upper() == "LIKE":
                where.append(Condition(prop, "LIKE", (_value(tokens),)))
            else:
                raise query_parse_error(f'Encountered " {op_tok[0]} "{op_tok[1]} "". Was expecting an operator')
            if not tokens.keyword("AND"):
                break
            if tokens.peek() and tokens.peek()[0] == "word" and str(tokens.peek()[1]).upper() == "OR":  # type: ignore[index]
                raise query_parse_error('Encountered " <OR> "OR "". OR is not supported')

    q: dict[str, Any] = {}
    while tokens.peek() is not None:
        kw = tokens.keyword("ORDERBY", "ORDER", "STARTPOSITION", "MAXRESULTS")
        if kw is None:
            kind, val = tokens.next()
            raise query_parse_error(
                f'Encountered " <{kind.upper()}> "{val} "" at line 1. Was expecting one of: <EOF> <AND> '
                '"maxresults" "order" "orderby" "startposition"'
            )
        if kw in ("ORDERBY", "ORDER"):
            if kw == "ORDER":
                tokens.expect_keyword("BY")
            q["order_by"] = tokens.expect("word")
            direction = tokens.keyword("ASC", "DESC")
            q["descending"] = direction == "DESC"
        else:
            n = tokens.expect("number")
            try:
                value = int(n)
            except ValueError:
                raise query_parse_error(f'Encountered "{n}". Was expecting an integer') from None
            if kw == "MAXRESULTS":
                if value > MAX_RESULTS_LIMIT:
                    raise query_invalid(f"value {value} is too large. Max allowed value is {MAX_RESULTS_LIMIT}")
                q["max_results"] = max(value, 0)
            else:
                q["start"] = max(value, 1)
    return Query(entity=entity, count=count, where=tuple(where), **q)


# ---------------------------------------------------------------- evaluation


def _field(entity: dict[str, Any], prop: str) -> Any:
    value: Any = entity
    for part in prop.split("."):
        if not isinstance(value, dict):
            return None
        # Property names are matched case-insensitively, as QBO does.
        key = next((k for k in value if k.lower() == part.lower()), None)
        if key is None:
            return None
        value = value[key]
    if isinstance(value, dict):
        # PrimaryEmailAddr = 'x' compares the address; CustomerRef = '1' compares the id.
        for inner in ("Address", "value", "FreeFormNumber"):
            if inner in value:
                return value[inner]
    return value


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, bool) or isinstance(b, bool):
        return (str(a).lower(), str(b).lower())
    if isinstance(a, int | Decimal) or isinstance(b, Decimal):
        try:
            return Decimal(str(a)), Decimal(str(b))
        except InvalidOperation:
            pass
    # String comparisons are case-insensitive here (names, e-mails), which is QBO's observed behaviour.
    return str(a).lower(), str(b).lower()


def _like(value: Any, pattern: Any) -> bool:
    regex = "^" + ".*".join(re.escape(p) for p in str(pattern).lower().split("%")) + "$"
    return re.match(regex, str(value).lower(), re.DOTALL) is not None


def _matches(entity: dict[str, Any], cond: Condition) -> bool:
    value = _field(entity, cond.prop)
    if value is None:
        return False
    if cond.op == "LIKE":
        return _like(value, cond.values[0])
    if cond.op == "IN":
        return any(_comparable(value, v)[0] == _comparable(value, v)[1] for v in cond.values)
    a, b = _comparable(value, cond.values[0])
    return bool(
        {"=": a == b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[cond.op]
    )


def evaluate(query: Query, entities: list[dict[str, Any]], active_filter: bool) -> dict[str, Any]:
    """The `QueryResponse` object for the query over the entity's rows."""
    conditions = query.where
    if active_filter and not any(c.prop.lower() == "active" for c in conditions):
        # Name lists return active records only unless the query asks about Active.
        conditions = (*conditions, Condition("Active", "=", (True,)))
    rows = [e for e in entities if all(_matches(e, c) for c in conditions)]
    if query.count:
        return {"totalCount": len(rows)}
    if query.order_by:
        rows.sort(key=lambda e: _comparable(_field(e, query.order_by or "") or "", "")[0], reverse=query.descending)
    page = rows[query.start - 1 : query.start - 1 + query.max_results]
    if not page:
        return {}
    return {query.entity: page, "startPosition": query.start, "maxResults": len(page)}
