"""Why an order was not booked, in a bookkeeper's words, and what fixes it: pure, from a dead letter alone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.dead_letter import DeadLetter

_RATE = re.compile(r"no QBO tax code for the (?P<rate>[0-9.]+) % rate")
_HOLDER = re.compile(r"held by (?P<type>[A-Za-z]+) Id=(?P<id>[0-9]+)")
_TOTALS = re.compile(r"total (?P<qbo>-?[0-9.]+) vs Magento(?:'s)?(?: grand_total)? (?P<magento>-?[0-9.]+)")


@dataclass(frozen=True)
class Explanation:
    title: str  # what happened, in a sentence
    fix: str  # what to do about it
    snippet: str | None = None  # the mapping line to add, where there is one
    facts: tuple[tuple[str, str], ...] = ()  # (what, value): the numbers that tell the story
    retriable: bool = True  # after the fix, "retry" books it
    link: str | None = None  # the QuickBooks document it is about (who holds a number), where one is named


def last_message(letter: DeadLetter) -> str:
    return letter.attempts[-1].message if letter.attempts else ""


def explain(letter: DeadLetter, sandbox: bool = False) -> Explanation:
    reason, message = letter.reason, last_message(letter)
    fault = (letter.attempts[-1].fault if letter.attempts else None) or {}
    if reason == "mapping":
        rate = _RATE.search(message)
        if rate:
            code = rate.group("rate")
            return Explanation(
                f"QuickBooks needs a tax code for the {code} % rate, and the mapping file names none.",
                "Find the tax code's Id in QuickBooks (Taxes → the rate), add it under [tax.codes] in the mapping "
                "file, restart the workers, then retry.",
                snippet=f'[tax.codes]\n"{code}" = "<QuickBooks TaxCode Id>"',
                facts=(("rate", f"{code} %"), ("detail", message)))
        return Explanation("The order could not be turned into a QuickBooks document with the mapping file as it is.",
                           "Read the detail, fix the mapping file (docs/mapping.example.toml lists every key), "
                           "restart the workers, then retry.", facts=(("detail", message),))
    if reason == "reconciliation":
        totals = _TOTALS.search(message)
        facts: list[tuple[str, str]] = []
        if totals:
            facts += [("QuickBooks document total", totals.group("qbo")), ("Magento grand total", totals.group("magento"))]
        lines = (letter.command.get("document") or {}).get("Line") if isinstance(letter.command, dict) else None
        for line in lines or []:
            if isinstance(line, dict) and line.get("Amount") is not None:
                facts.append((str(line.get("Description") or line.get("DetailType") or "line"), str(line["Amount"])))
        return Explanation(
            "The document magqb would book does not add up to Magento's total, so it was not booked.",
            "Compare the lines below with the order in Magento: a tax rate, a discount or shipping the mapping file "
            "treats differently. Fix the mapping (or the order in Magento), then retry.",
            facts=(*facts, ("detail", message)))
    if reason == "docnumber_taken":
        number = str((letter.command.get("document") or {}).get("DocNumber") or "") if isinstance(
            letter.command, dict) else ""
        holder = fault.get("detail") or message
        held = _HOLDER.search(message)
        return Explanation(
            f"QuickBooks already holds a document numbered {number or 'this number'} that is not this order's.",
            "Open that document in QuickBooks: if it is this order booked by hand, void or delete one of the two; "
            "if it is something else, give magqb's numbers their own prefix ([numbers] in the mapping file), "
            "then retry.",
            facts=(("number", number or "?"), *((("held by", f"{held['type']} {held['id']}"),) if held else ()),
                   ("QuickBooks says", str(holder))),
            link=qbo_link(held["type"], held["id"], sandbox) if held else None)
    if reason == "retries_exhausted":
        return Explanation("QuickBooks kept failing for this order through every retry (an outage, or a fault that "
                           "looks temporary but is not).",
                           "Check the last error below and QuickBooks' status page; once it answers, retry.",
                           facts=(("attempts", str(len(letter.attempts))), ("last error", message)))
    if reason == "stale_reference":
        return Explanation("QuickBooks refused a customer or item magqb had remembered (made inactive or merged).",
                           "Retry: magqb looks them up again.", facts=(("detail", message),))
    if reason == "document_differs":
        return Explanation("QuickBooks holds this order's document with other amounts than Magento's.",
                           "Compare the two in QuickBooks and Magento and correct the one that is wrong; then purge "
                           "this problem.", facts=(("detail", message),), retriable=False)
    if reason in ("internal", "unreadable"):
        return Explanation("magqb could not read or handle this event (a bug or a malformed event).",
                           "Tell whoever runs magqb; after an upgrade that fixes it, retry.",
                           facts=(("detail", message),), retriable=letter.why_not_retriable() is None)
    return Explanation("QuickBooks refused this document.",
                       "Read QuickBooks' answer below, correct the data it names (in Magento, QuickBooks or the "
                       "mapping file), then retry.", facts=_fault_facts(fault, message))


def _fault_facts(fault: dict[str, Any], message: str) -> tuple[tuple[str, str], ...]:
    out = [(k, str(fault[k])) for k in ("code", "message", "detail", "element") if fault.get(k)]
    return tuple(out) or (("detail", message),)


def qbo_link(doc_type: str | None, qbo_id: str | None, sandbox: bool) -> str | None:
    """Where QuickBooks shows a document to a signed-in user."""
    if not doc_type or not qbo_id:
        return None
    page = {"SalesReceipt": "salesreceipt", "Invoice": "invoice", "CreditMemo": "creditmemo",
            "RefundReceipt": "refundreceipt", "Payment": "recvpayment"}.get(doc_type)
    if page is None:
        return None
    host = "app.sandbox.qbo.intuit.com" if sandbox else "app.qbo.intuit.com"
    return f"https://{host}/app/{page}?txnId={qbo_id}"
