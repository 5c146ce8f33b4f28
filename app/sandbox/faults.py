"""QBO fault bodies, byte-for-byte in the shapes of reference/fixtures/qbo/."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

# Sandbox companies answer in US Pacific time, with milliseconds and offset.
COMPANY_TZ = ZoneInfo("America/Los_Angeles")


def qbo_time(now: datetime | None = None) -> str:
    now = now or datetime.now(COMPANY_TZ)
    s = now.astimezone(COMPANY_TZ).isoformat(timespec="milliseconds")
    return s


def meta_time(now: datetime | None = None) -> str:
    """MetaData times have no milliseconds."""
    now = now or datetime.now(COMPANY_TZ)
    return now.astimezone(COMPANY_TZ).isoformat(timespec="seconds")


class SandboxFault(Exception):
    """A QBO fault to answer with: HTTP status + the standard `Fault` envelope."""

    def __init__(
        self,
        code: str,
        message: str,
        detail: str,
        element: str | None = None,
        status: int = 400,
        type_: str = "ValidationFault",
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element
        self.status = status
        self.type = type_

    def error(self) -> dict[str, Any]:
        # Real faults carry `element` only for some codes (2050, 6140, 610 …); 6240 and 4001 have none.
        err = {"Message": self.message, "Detail": self.detail, "code": self.code}
        if self.element is not None:
            err["element"] = self.element
        return err

    def body(self) -> dict[str, Any]:
        return {"Fault": {"Error": [self.error()], "type": self.type}, "time": qbo_time()}


def invalid_reference(element: str, ref: str) -> SandboxFault:
    return SandboxFault(
        "2500",
        "Invalid Reference Id",
        f"Invalid Reference Id : Something you're trying to use has been made inactive. "
        f"Check the fields with accounts, customers, items, vendors or employees. ({element} {ref})",
        element,
    )


def required_missing(param: str) -> SandboxFault:
    return SandboxFault(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {param} is missing in the request",
        param,
    )


def too_long(element: str, max_len: int, supplied: int) -> SandboxFault:
    return SandboxFault(
        "2050",
        "String length is either shorter or longer than supported by specification",
        f"String length specified does not match the supported length. Min:0 Max:{max_len} supported. "
        f"Supplied length:{supplied}",
        element,
    )


def duplicate_name() -> SandboxFault:
    return SandboxFault("6240", "Duplicate Name Exists Error", "The name supplied already exists. : null")


def duplicate_doc_number(doc_number: str, txn_type: str, txn_id: str) -> SandboxFault:
    return SandboxFault(
        "6140",
        "Duplicate Document Number Error",
        "Duplicate Document Number Error : You must specify a different number. This number has already been used. "
        f"DocNumber={doc_number} is assigned to TxnType={txn_type} with TxnId={txn_id}",
        "",
    )


def amount_mismatch(supplied: str) -> SandboxFault:
    return SandboxFault(
        "6070",
        "Amount is not equal to UnitPrice * Qty",
        f"Amount is not equal to UnitPrice * Qty. Supplied value:{supplied}",
    )


def invalid_name_chars(element: str) -> SandboxFault:
    return SandboxFault(
        "6000",
        "A business validation error has occurred while processing your request",
        f"Business Validation Error: {element} must not contain colon (:), tab (\\t), or newline (\\n).",
        element,
    )


def object_not_found(entity: str, id_: str) -> SandboxFault:
    return SandboxFault(
        "610",
        "Object Not Found",
        f"Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, "
        f"customers, items, vendors or employees. ({entity} {id_})",
        "",
    )


def stale_object() -> SandboxFault:
    return SandboxFault(
        "5010", "Stale Object Error",
        "Stale Object Error : You and another user were working on this at the same time. "
        "The other user finished before you did, so your work was not saved.", "")


def business_validation(detail: str, element: str = "") -> SandboxFault:
    return SandboxFault("6000", "A business validation error has occurred while processing your request",
                        f"Business Validation Error: {detail}", element)


def query_parse_error(detail: str) -> SandboxFault:
    return SandboxFault("4000", "Error parsing query", f"QueryParserError: {detail}")


def query_invalid(detail: str) -> SandboxFault:
    return SandboxFault("4001", "Invalid query", f"QueryValidationError: {detail}")


def unsupported_operation(path: str) -> SandboxFault:
    return SandboxFault(
        "500",
        "Unsupported Operation",
        f"Operation Could not find resource for relative : {path} of full path: {path} is not supported.",
    )


def request_body_invalid(detail: str) -> SandboxFault:
    return SandboxFault("2010", "Request has invalid or unsupported property", f"Property Name:{detail}")


def token_expired_body(detail: str) -> dict[str, Any]:
    """The gateway's 401: lower-case `fault` envelope and a numeric epoch `time` (fixture 401)."""
    return {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": detail,
                    "code": "3200",
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION",
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": int(time.time() * 1000),
        "status": None,
        "cdcresponse": [],
    }
