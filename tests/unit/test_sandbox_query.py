from decimal import Decimal

import pytest

from app.sandbox.faults import SandboxFault
from app.sandbox.query import evaluate, parse

ENTITIES = {"Customer", "Item", "SalesReceipt"}
ROWS = [
    {"Id": "1", "DisplayName": "Amy's Bird Sanctuary", "PrimaryEmailAddr": {"Address": "amy@x.com"}, "Active": True,
     "Balance": Decimal("10.00")},
    {"Id": "2", "DisplayName": "Bill's Windsurf Shop", "PrimaryEmailAddr": {"Address": "bill@x.com"}, "Active": True,
     "Balance": Decimal("0")},
    {"Id": "3", "DisplayName": "Old Customer (deleted)", "Active": False, "Balance": Decimal("0")},
]


def run(sql: str) -> dict:
    q = parse(sql, ENTITIES)
    return evaluate(q, ROWS, active_filter=True)


def test_backslash_escaped_apostrophe() -> None:
    result = run(r"SELECT * FROM Customer WHERE DisplayName = 'Amy\'s Bird Sanctuary'")
    assert [c["Id"] for c in result["Customer"]] == ["1"]
    assert (result["startPosition"], result["maxResults"]) == (1, 1)


def test_email_compares_the_address_case_insensitively() -> None:
    assert [c["Id"] for c in run("select * from customer where PrimaryEmailAddr = 'BILL@x.com'")["Customer"]] == ["2"]


def test_empty_result_is_the_bare_query_response() -> None:
    assert run("SELECT * FROM Customer WHERE DisplayName = 'nobody'") == {}


def test_in_like_orderby_paging_and_count() -> None:
    assert [c["Id"] for c in run("SELECT * FROM Customer WHERE Id IN ('1', '2') ORDERBY DisplayName DESC")["Customer"]] == ["2", "1"]
    assert [c["Id"] for c in run("SELECT * FROM Customer WHERE DisplayName LIKE '%sanct%'")["Customer"]] == ["1"]
    page = run("SELECT * FROM Customer ORDERBY Id STARTPOSITION 2 MAXRESULTS 1")
    assert ([c["Id"] for c in page["Customer"]], page["startPosition"], page["maxResults"]) == (["2"], 2, 1)
    assert run("SELECT COUNT(*) FROM Customer") == {"totalCount": 2}
    assert run("SELECT COUNT(*) FROM Customer WHERE Active IN (true, false)") == {"totalCount": 3}


def test_numeric_comparison() -> None:
    assert [c["Id"] for c in run("SELECT * FROM Customer WHERE Balance > '5'")["Customer"]] == ["1"]


@pytest.mark.parametrize(("sql", "code"), [
    ("SELECT * FROM Custmoer", "4001"),
    ("SELECT * FROM Customer MAXRESULTS 1500", "4001"),
    ("SELECT * FROM Customer WHERE DisplayName = 'Amy's'", "4000"),
    ("SELECT * FROM Customer WHERE DisplayName = 'a' OR Id = '1'", "4000"),
    ("DELETE FROM Customer", "4000"),
])
def test_query_faults(sql: str, code: str) -> None:
    with pytest.raises(SandboxFault) as info:
        run(sql)
    assert info.value.code == code
