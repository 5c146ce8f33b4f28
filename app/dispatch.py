"""Carry out one QBO command and say what happened, as a result event.

Every call must earn its place (Intuit meters reads; the realm's quota counts every
request). A document is created in one call: a DocNumber lookup first only when an
earlier attempt of the same command may have reached QuickBooks (`verify`: a retry after
an ambiguous failure, a command a previous owner may have sent, a `dlq retry`); a fresh
command relies on its deterministic requestid and QBO's duplicate-DocNumber fault. A new
customer or item costs one lookup (to reuse what the company has) and one create, the
lookups of many going out as one `IN (...)` query. "Already exists" faults become
lookups: a redelivered command, a crash mid-request or a replay never creates a second
customer, item or document.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app import metrics
from app.adapters.lookup_batcher import LookupBatcher
from app.adapters.oauth import TokenRefreshError
from app.adapters.qbo_client import QboClient, QboError
from app.domain import request_ids
from app.domain.bounded import KeyedLocks, Lru
from app.domain.faults import ErrorClass
from app.domain.mapping import note_identity, note_names_order
from app.domain.naming import qbo_quote, with_qualifier
from schemas.commands import AnyCommand, CreateDocument, EnsureCustomer, EnsureItem, ReceivePayment, VoidDocument
from schemas.events import CustomerResolved, DocumentCreated, DocumentVoided, ItemResolved, PaymentReceived

log = logging.getLogger("magqb.dispatcher")

Command = AnyCommand
Result = CustomerResolved | ItemResolved | DocumentCreated | DocumentVoided | PaymentReceived
STALE_SYNC_TOKEN = "5010"  # someone changed the object since the SyncToken we sent


MAX_THROTTLE_RETRIES = 5  # the gate has already paused the realm; the command itself is fine
# A lone 5xx or timeout is usually gone a moment later: retry in place twice before parking the
# command on a delay topic, so a burst of bad luck does not walk a command down the whole ladder.
QUICK_RETRY_DELAYS = (0.5, 1.5)


@dataclass(frozen=True)
class RetryLater:
    """A retriable failure (429 after retries, 5xx, timeout, dropped connection): park the command."""

    error_class: str
    message: str
    fault: dict[str, Any] | None = None
    unnumbered: bool = False  # a create of it went out without its DocNumber (see CreateDocument.find_by_note)


@dataclass(frozen=True)
class GiveUp:
    """A permanent failure (a validation fault): retrying sends the same wrong data."""

    error_class: str
    message: str
    fault: dict[str, Any] | None = None
    unnumbered: bool = False


class RealmBlocked(Exception):
    """QBO refused the refresh token: nothing for this realm can be dispatched until an operator acts."""


class RealmPaused(Exception):
    """No access token for a reason that says nothing about the refresh token (the token endpoint unreachable
    or answering nonsense, the token store unreadable): the realm's commands wait where they are, unacknowledged,
    and go as soon as a token comes — they do not walk down the retry ladder into dead letters."""


class DocNumberTaken(Exception):
    """The DocNumber is held by a document that is provably not this order's — or is this order's but
    books another total (reason document_differs)."""

    def __init__(self, message: str, fault: dict[str, Any] | None = None, reason: str = "docnumber_taken") -> None:
        super().__init__(message)
        self.fault = fault
        self.reason = reason


# QBO's answers when a document refers to a customer or item that was made inactive or deleted
# (reference/qbo.md: 610 Object Not Found, 2500 Invalid Reference Id).
STALE_REFERENCE_CODES = ("610", "2500")


Outcome = Result | RetryLater | GiveUp


DOCUMENTS_REMEMBERED = 10_000  # answers to documents this process created, by requestid
RESOLVED_REMEMBERED = 50_000  # customers and items resolved by this process (the tables hold every one)
PREFERENCES_SECONDS = 3600.0  # the company's numbering setting is read again hourly (a read each time)
NUMBERS_OFF = ("custom transaction numbers are off in QuickBooks company {realm} (Settings → Account and settings → "
               "Sales → Custom transaction numbers): QuickBooks numbers sales forms itself and ignores magqb's "
               "DocNumbers, so an earlier attempt cannot be found by its number. magqb looks each document up by its "
               "customer, date and note before creating it instead: one more read per document. Turn the setting "
               "on to book at one call per order")


class Dispatcher:
    def __init__(self, client: QboClient, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 lookup_window: float = 0.02) -> None:
        self.client = client
        self._sleep = sleep
        # One in-flight resolution per customer/item/document, so concurrent orders share it.
        self._locks = KeyedLocks()
        # Resolved ids this worker remembers (the tables hold them all): the most recently used, bounded.
        self._customers: Lru[str, CustomerResolved] = Lru(RESOLVED_REMEMBERED)
        self._items: Lru[str, ItemResolved] = Lru(RESOLVED_REMEMBERED)
        self._documents: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._payments: Lru[str, dict[str, Any]] = Lru(DOCUMENTS_REMEMBERED)  # by requestid
        self._by_email: LookupBatcher[str, list[dict[str, Any]]] = LookupBatcher(self._fetch_customers, lookup_window)
        self._by_name: LookupBatcher[str, dict[str, Any]] = LookupBatcher(self._fetch_items, lookup_window)
        self._by_number: dict[str, LookupBatcher[str, list[dict[str, Any]]]] = {}
        self._lookup_window = lookup_window
        self._numbers: tuple[bool, float] | None = None  # (the company keeps our DocNumbers, read at)
        self._unnumbered: OrderedDict[str, None] = OrderedDict()  # requestids of creates sent without a DocNumber

    async def handle(self, cmd: Command, verify: bool = False) -> Outcome:
        """`verify`: an earlier attempt of this command may have reached QuickBooks — look before creating."""
        outcome = await self._handle(cmd, verify)
        if isinstance(outcome, RetryLater | GiveUp) and cmd.request_id in self._unnumbered:
            # It may be in QuickBooks under a number of QuickBooks' own: whoever retries it must look by its note.
            outcome = dataclasses.replace(outcome, unnumbered=True)
        return outcome

    async def _handle(self, cmd: Command, verify: bool = False) -> Outcome:
        throttles = quick = 0
        while True:
            try:
                result = await self._dispatch(cmd, verify)
            except QboError as exc:
                if exc.error_class is ErrorClass.THROTTLED and throttles < MAX_THROTTLE_RETRIES:
                    throttles += 1  # a 429 was not processed: nothing to verify
                    continue
                if exc.error_class is ErrorClass.RETRIABLE and quick < len(QUICK_RETRY_DELAYS):
                    await self._sleep(QUICK_RETRY_DELAYS[quick])
                    quick += 1
                    verify = True  # a 5xx, timeout or dropped connection may come after the create landed
                    continue
                metrics.COMMANDS.labels(command=cmd.type, result=str(exc.error_class)).inc()
                if exc.error_class in (ErrorClass.RETRIABLE, ErrorClass.THROTTLED, ErrorClass.AUTH):
                    log.warning("order_id=%s order=%s %s failed (%s), will retry: %s", cmd.order_id, cmd.order_ref,
                                cmd.type, exc.error_class, exc)
                    return RetryLater(str(exc.error_class), str(exc)[:1000], exc.fault.as_dict())
                log.error("order_id=%s order=%s %s refused by QuickBooks (%s): %s", cmd.order_id, cmd.order_ref,
                          cmd.type, exc.error_class, exc)
                if isinstance(cmd, CreateDocument | ReceivePayment) and exc.fault.code in STALE_REFERENCE_CODES:
                    return GiveUp("stale_reference", str(exc)[:1000], exc.fault.as_dict())
                return GiveUp(str(exc.error_class), str(exc)[:1000], exc.fault.as_dict())
            except DocNumberTaken as exc:
                metrics.COMMANDS.labels(command=cmd.type, result=exc.reason).inc()
                log.error("order_id=%s order=%s not booked: %s", cmd.order_id, cmd.order_ref, exc)
                return GiveUp(exc.reason, str(exc)[:1000], exc.fault)
            except TokenRefreshError as exc:
                if exc.permanent:
                    raise RealmBlocked(str(exc)) from None
                raise RealmPaused(str(exc)) from None
            metrics.COMMANDS.labels(command=cmd.type, result="ok").inc()
            return result

    async def _dispatch(self, cmd: Command, verify: bool) -> Result:
        if isinstance(cmd, EnsureCustomer):
            async with self._locks.hold(f"customer:{cmd.email}"):
                return await self._ensure_customer(cmd)
        if isinstance(cmd, EnsureItem):
            async with self._locks.hold(f"item:{cmd.name.lower()}"):
                return await self._ensure_item(cmd)
        if isinstance(cmd, VoidDocument):
            async with self._locks.hold(f"void:{cmd.doc_type}:{cmd.qbo_id or cmd.doc_number}"):
                return await self._void(cmd, verify)
        if isinstance(cmd, ReceivePayment):
            async with self._locks.hold(f"pay:{cmd.payment.PaymentRefNum}"):
                return await self._receive_payment(cmd, verify or cmd.verify)
        async with self._locks.hold(f"doc:{cmd.document.DocNumber}"):
            return await self._create_document(cmd, verify or cmd.verify)

    # ------------------------------------------------------------ batched lookups

    async def _fetch_customers(self, emails: list[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for row in await self._query_in("Customer", "PrimaryEmailAddr", emails):
            email = str((row.get("PrimaryEmailAddr") or {}).get("Address") or "").strip().lower()
            found.setdefault(email, []).append(row)
        return found

    async def _fetch_items(self, names: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for row in await self._query_in("Item", "Name", names):
            found.setdefault(str(row.get("Name", "")).lower(), row)
        return found

    async def _fetch_documents(self, doc_type: str, numbers: list[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for row in await self._query_in(doc_type, "DocNumber", numbers):
            found.setdefault(str(row.get("DocNumber", "")), []).append(row)
        return found

    async def _query_in(self, entity: str, field: str, values: list[str]) -> list[dict[str, Any]]:
        listed = ", ".join(qbo_quote(v) for v in values)
        rows = (await self.client.query(f"SELECT * FROM {entity} WHERE {field} IN ({listed}) MAXRESULTS 1000"))
        return [dict(r) for r in rows.get(entity) or []]

    def _documents_by_number(self, doc_type: str) -> LookupBatcher[str, list[dict[str, Any]]]:
        if doc_type not in self._by_number:
            async def fetch(numbers: list[str]) -> dict[str, list[dict[str, Any]]]:
                return await self._fetch_documents(doc_type, numbers)

            self._by_number[doc_type] = LookupBatcher(fetch, self._lookup_window)
        return self._by_number[doc_type]

    # ------------------------------------------------------------ customers

    async def _ensure_customer(self, cmd: EnsureCustomer) -> CustomerResolved:
        key = cmd.key or cmd.email
        if cmd.fresh:  # QBO refused the id we had: ask QBO, not the cache
            self._customers.pop(key)
        cached = self._customers.get(key)
        if cached is not None:
            return self._customer_result(cmd, cached.customer_id, cached.display_name, created=False)
        if cmd.email:
            rows = await self._by_email.get(cmd.email.strip().lower()) or []
            found = next((r for r in rows if _books_in(r, cmd)), None)
        else:  # the shared guest customer: known by its name alone
            found = await self.client.query_one(
                "Customer", f"SELECT * FROM Customer WHERE DisplayName = {qbo_quote(cmd.display_name)}"
            )
        created = False
        if found is None:
            found, created = await self._create_customer(cmd, cmd.display_name, cmd.request_id)
        result = self._customer_result(cmd, str(found["Id"]), str(found.get("DisplayName", cmd.display_name)), created)
        self._customers[key] = result
        log.info("order_id=%s customer %s → QBO Customer Id=%s DisplayName=%r (%s)", cmd.order_id,
                 cmd.email or cmd.display_name, result.customer_id, result.display_name,
                 "created" if created else "existing")
        return result

    async def _create_customer(self, cmd: EnsureCustomer, name: str, request_id: str,
                               disambiguated: bool = False) -> tuple[dict[str, Any], bool]:
        body: dict[str, Any] = {"DisplayName": name}
        if cmd.email:
            body["PrimaryEmailAddr"] = {"Address": cmd.email}
        if cmd.currency:
            body["CurrencyRef"] = {"value": cmd.currency}
        for field_name, value in (("GivenName", cmd.given_name), ("FamilyName", cmd.family_name),
                                  ("CompanyName", cmd.company_name)):
            if value:
                body[field_name] = value
        try:
            return await self.client.create("Customer", body, request_id), True
        except QboError as exc:
            if exc.error_class is not ErrorClass.DUPLICATE_NAME:
                raise
            taken = exc
        # The name is taken (QBO's names are unique across customers, vendors and employees): by this
        # customer (an earlier attempt) — or by a namesake, who must not get this customer's sales.
        holder = await self.client.query_one(
            "Customer", f"SELECT * FROM Customer WHERE DisplayName = {qbo_quote(name)}"
        )
        if holder is not None and _same_person(holder, cmd):
            return holder, False
        if disambiguated:
            raise taken
        return await self._create_customer(cmd, with_qualifier(cmd.display_name, cmd.email or cmd.order_ref),
                                           request_ids.derived(request_id, "name2"), disambiguated=True)

    def _customer_result(self, cmd: EnsureCustomer, customer_id: str, name: str, created: bool) -> CustomerResolved:
        return CustomerResolved(
            order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id, request_id=cmd.request_id,
            email=cmd.email, key=cmd.key, customer_id=customer_id, display_name=name, created=created,
        )

    # ------------------------------------------------------------ items

    async def _ensure_item(self, cmd: EnsureItem) -> ItemResolved:
        key = cmd.name.lower()
        if cmd.fresh:
            self._items.pop(key)
        cached = self._items.get(key)
        if cached is not None:
            return self._item_result(cmd, cached.item_id, created=False)
        query = f"SELECT * FROM Item WHERE Name = {qbo_quote(cmd.name)}"
        found = await self._by_name.get(key)
        created = False
        if found is None:
            body: dict[str, Any] = {
                "Name": cmd.name,
                "Type": cmd.item_type,
                "IncomeAccountRef": {"value": cmd.income_account_id},
            }
            if cmd.sku:
                body["Sku"] = cmd.sku[:100]
            if cmd.description:
                body["Description"] = cmd.description[:4000]
            try:
                found = await self.client.create("Item", body, cmd.request_id)
                created = True
            except QboError as exc:
                if exc.error_class is not ErrorClass.DUPLICATE_NAME:
                    raise
                found = await self.client.query_one("Item", query)
                if found is None:
                    raise
        result = self._item_result(cmd, str(found["Id"]), created)
        self._items[key] = result
        log.info("order_id=%s item %r → QBO Item Id=%s (%s)", cmd.order_id, cmd.name, result.item_id,
                 "created" if created else "existing")
        return result

    def _item_result(self, cmd: EnsureItem, item_id: str, created: bool) -> ItemResolved:
        return ItemResolved(
            order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id, request_id=cmd.request_id,
            name=cmd.name, item_id=item_id, created=created,
        )

    # ------------------------------------------------------------ documents

    async def numbers_kept(self) -> bool:
        """Whether the company keeps the DocNumbers we send (Preferences.SalesFormsPrefs.CustomTxnNumbers), read
        once an hour. Unreadable: assumed on (as companies are made) and asked again at the next document."""
        now = asyncio.get_running_loop().time()
        if self._numbers is not None and now - self._numbers[1] < PREFERENCES_SECONDS:
            return self._numbers[0]
        async with self._locks.hold("preferences"):
            if self._numbers is not None and now - self._numbers[1] < PREFERENCES_SECONDS:
                return self._numbers[0]
            try:
                prefs = await self.client.preferences()
            except QboError as exc:
                if exc.error_class in (ErrorClass.RETRIABLE, ErrorClass.THROTTLED, ErrorClass.AUTH):
                    raise  # the command's own retries handle a QuickBooks that is away
                # Refused (a permission, a company that hides them): assumed on, as companies are made, and asked
                # again in a while — the read is advice, it must not stop every order.
                log.warning("realm=%s the company's Preferences cannot be read (%s): custom transaction numbers "
                            "taken as on; asked again in 5 minutes", self.client.realm_id, exc)
                self._numbers = (True, now - PREFERENCES_SECONDS + 300)
                return True
            kept = (prefs.get("SalesFormsPrefs") or {}).get("CustomTxnNumbers", True) is not False
            first = self._numbers is None or self._numbers[0] != kept
            self._numbers = (kept, now)
            metrics.CUSTOM_TXN_NUMBERS.labels(realm=self.client.realm_id).set(1 if kept else 0)
            if not kept and first:
                log.error("realm=%s %s", self.client.realm_id, NUMBERS_OFF.format(realm=self.client.realm_id))
            elif kept and first:
                log.info("realm=%s custom transaction numbers are on: DocNumbers guard every document",
                         self.client.realm_id)
            return kept

    async def _find_by_note(self, cmd: CreateDocument) -> dict[str, Any] | None:
        """With the company numbering documents itself: this command's document among the customer's of its day,
        known by the note it was sent with (a sale's also by the order it names)."""
        where = [f"CustomerRef = {qbo_quote(cmd.document.CustomerRef.value)}"]
        if cmd.document.TxnDate:
            where.append(f"TxnDate = {qbo_quote(cmd.document.TxnDate)}")
        select = f"SELECT * FROM {cmd.doc_type} WHERE {' AND '.join(where)} ORDERBY Id"
        sale = cmd.doc_type in ("SalesReceipt", "Invoice")
        async for rows in self.client.pages(cmd.doc_type, select):
            for row in rows:
                note = row.get("PrivateNote")
                if note == cmd.document.PrivateNote or (sale and note_names_order(note, cmd.order_ref, cmd.order_id)):
                    return dict(row)
        return None

    async def _find_document(self, cmd: CreateDocument) -> dict[str, Any] | None:
        """The document holding the command's DocNumber, if it is provably this order's (its PrivateNote
        names the order). One held by anything else raises DocNumberTaken: adopting it would mark this
        order booked with another order's — or a person's — document."""
        number = cmd.document.DocNumber
        rows = await self._documents_by_number(cmd.doc_type).get(number) or []
        for row in rows:
            if note_names_order(row.get("PrivateNote"), cmd.order_ref, cmd.order_id):
                return dict(row)
        if rows:
            holder = rows[0]
            note = holder.get("PrivateNote")
            other = note_identity(note)
            if note_names_order(note, cmd.order_ref) and other is not None:
                # The same increment id in another store: numbers must differ per store from now on.
                store = f"store {other[0]}, " if other[0] else ""
                fix = (f"it is order {cmd.order_ref} of another store ({store}entity {other[1]}): two stores number "
                       f"their orders alike. Give this order's store its own prefix in the mapping file "
                       f"([stores.{cmd.store_id if cmd.store_id is not None else '<store_id>'}] doc_number_prefix = "
                       f"\"...\"), then `magqb dlq retry`: it is booked under its store's number")
            else:
                fix = "give that document another number (or void it), then `magqb dlq retry`"
            raise DocNumberTaken(
                f"DocNumber {number} is held by {cmd.doc_type} Id={holder.get('Id')} "
                f"(PrivateNote {str(note or '')[:80]!r}), not by order {cmd.order_ref}: {fix}")
        return None

    async def _known_document(self, cmd: CreateDocument) -> dict[str, Any] | None:
        """The document the order was booked as, if QuickBooks still has it (a deleted one is gone)."""
        assert cmd.known_id is not None
        row = await self.client.query_one(cmd.doc_type, f"SELECT * FROM {cmd.doc_type} WHERE Id = "
                                                        f"{qbo_quote(cmd.known_id)}")
        return dict(row) if row else None

    async def _create_document(self, cmd: CreateDocument, verify: bool) -> DocumentCreated:
        remembered = self._documents.get(cmd.request_id)
        if remembered is not None:  # this very command again (a duplicate record): this process booked it
            return self._document_result(cmd, remembered, created=False)
        found = await self._known_document(cmd) if verify and cmd.known_id else None
        numbered = await self.numbers_kept()
        if found is None and (not numbered or (verify and cmd.find_by_note)):
            # No DocNumber guard now (QBO would not refuse a repeat), or an earlier attempt went out without one:
            # looked up by its note. Every create, while the company numbers documents itself.
            found = await self._find_by_note(cmd)
        if found is None and verify and numbered:
            found = await self._find_document(cmd)
        created = False
        if found is None:
            body = cmd.document.to_qbo()
            if not numbered:
                body.pop("DocNumber", None)  # QBO: "do not send a value as it can lead to unwanted duplicates"
                self._unnumbered[cmd.request_id] = None
                while len(self._unnumbered) > DOCUMENTS_REMEMBERED:
                    self._unnumbered.popitem(last=False)
            try:
                found = await self.client.create(cmd.doc_type, body, cmd.request_id)
                created = True
            except QboError as exc:
                if exc.error_class is not ErrorClass.DUPLICATE_DOC_NUMBER:
                    raise
                found = await self._find_document(cmd)
                if found is None:  # held by another kind of sales form (6140 names it)
                    raise DocNumberTaken(
                        f"DocNumber {cmd.document.DocNumber} is held by another transaction ({exc.fault.detail}), "
                        f"not by order {cmd.order_ref}: give that document another number (or void it), "
                        f"then `magqb dlq retry`", exc.fault.as_dict()) from None
        if not created:
            expected, booked = cmd.document.computed_total(), Decimal(str(found.get("TotalAmt", "0")))
            if booked != expected:
                # Ours (its note names the order) but booked from another version of the order or the
                # mapping: marking the order booked would hide the difference from the books.
                raise DocNumberTaken(
                    f"{cmd.doc_type} Id={found.get('Id')} DocNumber {cmd.document.DocNumber} was booked for order "
                    f"{cmd.order_ref} earlier with TotalAmt {booked}; this order's document totals {expected}. "
                    f"Void or correct it in QuickBooks, then `magqb dlq retry`", reason="document_differs")
        self._documents[cmd.request_id] = found
        while len(self._documents) > DOCUMENTS_REMEMBERED:
            self._documents.popitem(last=False)
        return self._document_result(cmd, found, created)

    def _document_result(self, cmd: CreateDocument, found: dict[str, Any], created: bool) -> DocumentCreated:
        metrics.DOCUMENTS.labels(doc_type=cmd.doc_type, how="created" if created else "found").inc()
        return DocumentCreated(
            order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id, request_id=cmd.request_id,
            doc_type=cmd.doc_type, doc_number=str(found.get("DocNumber", cmd.document.DocNumber)),
            qbo_id=str(found["Id"]), total_amt=found.get("TotalAmt", 0), created=created,
            sync_token=str(found["SyncToken"]) if found.get("SyncToken") is not None else None,
            customer_id=str((found.get("CustomerRef") or {}).get("value") or "") or None,
        )

    # ------------------------------------------------------------ void (a cancelled order)

    async def _void(self, cmd: VoidDocument, verify: bool) -> DocumentVoided:
        """One call when the document is as we created it; a read first only when an earlier attempt may
        have voided it or we do not know its SyncToken; a read and a second try when someone edited it.
        Without an Id (the create was parked unanswered) one lookup by DocNumber finds it, or that there is none."""
        if cmd.qbo_id is None:
            numbered = await self.numbers_kept()
            rows = (await self._documents_by_number(cmd.doc_type).get(cmd.doc_number) or []) if numbered else []
            if not numbered or cmd.unnumbered:  # QBO may have numbered it: among the customer's documents
                if cmd.customer_id is None:
                    raise DocNumberTaken(
                        f"order {cmd.order_ref} was cancelled while parked, and QuickBooks numbers documents itself: "
                        f"its {cmd.doc_type} cannot be looked up by number. Find it in QuickBooks by its note "
                        f"(Magento Order ID: {cmd.order_ref}) and void it, then `magqb dlq purge` this letter",
                        reason="lookup_impossible")
                select = f"SELECT * FROM {cmd.doc_type} WHERE CustomerRef = {qbo_quote(cmd.customer_id)} ORDERBY Id"
                rows = [*rows, *[r async for page in self.client.pages(cmd.doc_type, select) for r in page]]
            mine = list({str(r["Id"]): dict(r) for r in rows
                         if note_names_order(r.get("PrivateNote"), cmd.order_ref, cmd.order_id)}.values())
            if len(mine) > 1:  # booked twice before it was cancelled: every copy goes
                for extra in mine[1:]:
                    if not _is_voided(extra):
                        await self.client.void(cmd.doc_type, str(extra["Id"]), str(extra.get("SyncToken", "0")),
                                               request_ids.derived(cmd.request_id, f"also:{extra['Id']}"))
                        log.warning("order_id=%s order=%s a second %s Id=%s of the cancelled order voided too",
                                    cmd.order_id, cmd.order_ref, cmd.doc_type, extra["Id"])
            if not mine:
                log.info("order_id=%s order=%s cancelled while parked: no %s DocNumber=%s of it in QuickBooks, "
                         "nothing to void", cmd.order_id, cmd.order_ref, cmd.doc_type, cmd.doc_number)
                return DocumentVoided(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id,
                                      request_id=cmd.request_id, doc_type=cmd.doc_type, qbo_id="",
                                      doc_number=cmd.doc_number, absent=True)
            found = mine[0]
            cmd = cmd.model_copy(update={"qbo_id": str(found["Id"])})
            if _is_voided(found):
                return self._voided(cmd, how="found")
            verify, cmd = False, cmd.model_copy(update={"sync_token": str(found.get("SyncToken", "0"))})
        assert cmd.qbo_id is not None
        qbo_id = cmd.qbo_id
        token = cmd.sync_token
        if verify or token is None:
            current = await self.client.read(cmd.doc_type, qbo_id)
            if _is_voided(current):
                return self._voided(cmd, how="found")
            token = str(current.get("SyncToken", "0"))
        try:
            await self.client.void(cmd.doc_type, qbo_id, token, cmd.request_id)
        except QboError as exc:
            if exc.fault.code != STALE_SYNC_TOKEN:
                raise
            current = await self.client.read(cmd.doc_type, qbo_id)
            if _is_voided(current):  # our earlier attempt did it (its answer was lost)
                return self._voided(cmd, how="found")
            await self.client.void(cmd.doc_type, qbo_id, str(current.get("SyncToken", "0")), cmd.request_id)
        return self._voided(cmd, how="voided")

    def _voided(self, cmd: VoidDocument, how: str) -> DocumentVoided:
        metrics.DOCUMENTS.labels(doc_type=cmd.doc_type, how=how).inc()
        log.info("order_id=%s order=%s %s Id=%s DocNumber=%s voided (%s)", cmd.order_id, cmd.order_ref, cmd.doc_type,
                 cmd.qbo_id, cmd.doc_number, "already void" if how == "found" else "now")
        return DocumentVoided(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id,
                              request_id=cmd.request_id, doc_type=cmd.doc_type, qbo_id=cmd.qbo_id or "",
                              doc_number=cmd.doc_number)

    # ------------------------------------------------------------ payments (a paid invoice)

    async def _receive_payment(self, cmd: ReceivePayment, verify: bool) -> PaymentReceived:
        """A lookup of the customer's payments, then one create. A Payment has no DocNumber for QBO to
        refuse twice, so its requestid is the only other guard — and QBO forgets those: payments are rare
        enough that the read always earns its place."""
        found = self._payments.get(cmd.request_id) or await self._find_payment(cmd)
        created = found is None
        if found is None:
            found = await self.client.create("Payment", cmd.payment.to_qbo(), cmd.request_id)
        self._payments[cmd.request_id] = found
        metrics.DOCUMENTS.labels(doc_type="Payment", how="created" if created else "found").inc()
        return PaymentReceived(order_id=cmd.order_id, order_ref=cmd.order_ref, realm_id=cmd.realm_id,
                               request_id=cmd.request_id, qbo_id=str(found["Id"]),
                               ref_num=str(found.get("PaymentRefNum", cmd.payment.PaymentRefNum)),
                               amount=Decimal(str(found.get("TotalAmt", cmd.payment.TotalAmt))), created=created)

    async def _find_payment(self, cmd: ReceivePayment) -> dict[str, Any] | None:
        """The customer's Payment with this PaymentRefNum whose note names the order, page by page."""
        select = f"SELECT * FROM Payment WHERE CustomerRef = {qbo_quote(cmd.payment.CustomerRef.value)} ORDERBY Id"
        async for rows in self.client.pages("Payment", select):
            for row in rows:
                if str(row.get("PaymentRefNum", "")) == cmd.payment.PaymentRefNum and \
                        note_names_order(row.get("PrivateNote"), cmd.order_ref, cmd.order_id):
                    return row
        return None


def _is_voided(doc: dict[str, Any]) -> bool:
    """QBO keeps a voided form with zero amounts and "Voided" in its PrivateNote."""
    return str(doc.get("PrivateNote") or "").startswith("Voided") and Decimal(str(doc.get("TotalAmt", "0"))) == 0


def _same_person(holder: dict[str, Any], cmd: EnsureCustomer) -> bool:
    email = str((holder.get("PrimaryEmailAddr") or {}).get("Address") or "").strip().lower()
    return email == cmd.email.strip().lower() and _books_in(holder, cmd)


def _books_in(customer: dict[str, Any], cmd: EnsureCustomer) -> bool:
    """Home-currency commands (currency None) take the e-mail's customer; others need its currency."""
    if cmd.currency is None:
        return True
    return str((customer.get("CurrencyRef") or {}).get("value", "")).upper() == cmd.currency


