"""What a QBO error answer means: parse any body (JSON `Fault`, gateway `fault`, XML, HTML,
empty) and classify it. Pure: the HTTP client calls these; tests call them directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.redact import scrub


class ErrorClass(StrEnum):
    AUTH = "auth"  # 401: refresh the access token once, then retry the same request
    THROTTLED = "throttled"  # 429 / code 3001: back off, retry
    RETRIABLE = "retriable"  # 5xx, timeouts, connection errors
    DUPLICATE_DOC_NUMBER = "duplicate_doc_number"  # 6140: the document exists, look it up
    DUPLICATE_NAME = "duplicate_name"  # 6240: the customer/item exists, look it up
    PERMANENT = "permanent"  # validation faults: retrying sends the same wrong data


@dataclass(frozen=True)
class QboFault:
    status: int
    code: str | None
    message: str
    detail: str
    element: str | None
    body: str  # the raw answer, truncated, for the dead letter and logs

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, "detail": self.detail,
                "element": self.element}


_XML_CODE = re.compile(r'<Error[^>]*code="(\d+)"', re.I)
_XML_MSG = re.compile(r"<Message>(.*?)</Message>", re.I | re.S)
_XML_DETAIL = re.compile(r"<Detail>(.*?)</Detail>", re.I | re.S)


def parse_fault(status: int, body: bytes | str) -> QboFault:
    """The fault in an error answer, its text scrubbed of secrets (a 401 echoes the token it refused)."""
    fault = _parse_fault(status, body)
    return QboFault(fault.status, fault.code, scrub(fault.message), scrub(fault.detail), fault.element,
                    scrub(fault.body))


def _parse_fault(status: int, body: bytes | str) -> QboFault:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    short = text[:2000]
    data: Any = None
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key, err_key, lower in (("Fault", "Error", False), ("fault", "error", True)):
            fault = data.get(key)
            if isinstance(fault, dict) and isinstance(fault.get(err_key), list) and fault[err_key]:
                err = fault[err_key][0] if isinstance(fault[err_key][0], dict) else {}
                return QboFault(
                    status=status,
                    code=str(err.get("code")) if err.get("code") is not None else None,
                    message=str(err.get("message" if lower else "Message") or ""),
                    detail=str(err.get("detail" if lower else "Detail") or ""),
                    element=err.get("element"),
                    body=short,
                )
        if "error" in data:  # OAuth endpoint: {"error": "invalid_grant", ...}
            return QboFault(status, str(data["error"]), str(data["error"]), str(data.get("error_description", "")),
                            None, short)
    m = _XML_CODE.search(text)
    if m:
        msg = _XML_MSG.search(text)
        det = _XML_DETAIL.search(text)
        return QboFault(status, m.group(1), msg.group(1).strip() if msg else "", det.group(1).strip() if det else "",
                        None, short)
    return QboFault(status, None, f"HTTP {status}", text.strip()[:200] or "(empty body)", None, short)


def classify(fault: QboFault) -> ErrorClass:
    if fault.status == 401 or fault.code == "3200":
        return ErrorClass.AUTH
    if fault.status == 429 or fault.code == "3001" or "ThrottleExceeded" in fault.message:
        return ErrorClass.THROTTLED
    if fault.status >= 500 or fault.status in (408, 502, 503, 504):
        return ErrorClass.RETRIABLE
    if fault.code == "6140":
        return ErrorClass.DUPLICATE_DOC_NUMBER
    if fault.code == "6240":
        return ErrorClass.DUPLICATE_NAME
    if fault.code == "10000":  # System Failure Error: QBO's own hiccup
        return ErrorClass.RETRIABLE
    return ErrorClass.PERMANENT
