import pytest

from app.domain.faults import ErrorClass, classify, parse_fault
from tests.conftest import QBO_FIXTURES

THROTTLE_XML = """<IntuitResponse time="2017-07-30T22:45:22.933-07:00" xmlns="http://schema.intuit.com/finance/v3">
  <Fault type="SERVICE"><Error code="3001">
    <Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>
    <Detail>The request limit was reached.  Try again later</Detail>
  </Error></Fault></IntuitResponse>"""


def test_duplicate_name_fixture() -> None:
    fault = parse_fault(400, (QBO_FIXTURES / "minimul-qbo_api__fault_6240_duplicate_name.json").read_bytes())
    assert (fault.code, fault.message) == ("6240", "Duplicate Name Exists Error")
    assert classify(fault) is ErrorClass.DUPLICATE_NAME


def test_gateway_401_fixture_with_lowercase_envelope() -> None:
    fault = parse_fault(401, (QBO_FIXTURES / "minimul-qbo_api__fault_401_token_expired.json").read_bytes())
    assert fault.code == "3200"
    assert fault.detail.startswith("Token expired:")
    assert classify(fault) is ErrorClass.AUTH


def test_invalid_query_fixture_is_permanent() -> None:
    fault = parse_fault(400, (QBO_FIXTURES / "minimul-qbo_api__fault_4001_invalid_query.json").read_bytes())
    assert fault.code == "4001"
    assert classify(fault) is ErrorClass.PERMANENT


def test_throttle_answered_in_xml() -> None:
    fault = parse_fault(429, THROTTLE_XML)
    assert fault.code == "3001"
    assert fault.detail == "The request limit was reached.  Try again later"
    assert classify(fault) is ErrorClass.THROTTLED


@pytest.mark.parametrize(("status", "body", "expected"), [
    (503, b"", ErrorClass.RETRIABLE),
    (502, b"<html><body>Bad gateway</body></html>", ErrorClass.RETRIABLE),
    (500, b"not json {", ErrorClass.RETRIABLE),
    (400, b'{"Fault":{"Error":[{"Message":"Duplicate Document Number Error","Detail":"x","code":"6140"}],'
          b'"type":"ValidationFault"}}', ErrorClass.DUPLICATE_DOC_NUMBER),
    (400, b'{"Fault":{"Error":[{"Message":"Amount is not equal to UnitPrice * Qty","code":"6070"}],'
          b'"type":"ValidationFault"}}', ErrorClass.PERMANENT),
])
def test_unknown_and_odd_bodies_are_classified_not_crashed_on(status: int, body: bytes,
                                                              expected: ErrorClass) -> None:
    assert classify(parse_fault(status, body)) is expected


def test_oauth_invalid_grant() -> None:
    fault = parse_fault(400, b'{"error_description":"Token invalid","error":"invalid_grant"}')
    assert (fault.code, fault.detail) == ("invalid_grant", "Token invalid")
