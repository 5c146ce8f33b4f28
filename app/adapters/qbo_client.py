"""The QuickBooks Online Accounting API over HTTP. Only the dispatcher uses it.

Every write carries the caller's deterministic `requestid`; a 401 refreshes the
access token once and repeats the *same* request (same requestid).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from app import jsonutil, metrics
from app.adapters.oauth import TokenManager
from app.adapters.read_budget import ReadBudget
from app.adapters.realm_gate import RealmGate
from app.domain.faults import ErrorClass, QboFault, classify, parse_fault
from app.redact import scrub

log = logging.getLogger("magqb.qbo")


class QboError(Exception):
    def __init__(self, fault: QboFault, error_class: ErrorClass) -> None:
        super().__init__(f"{error_class}: HTTP {fault.status} code={fault.code} {fault.message} {fault.detail}".strip())
        self.fault = fault
        self.error_class = error_class


class QboClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        realm_id: str,
        tokens: TokenManager,
        minor_version: int = 75,
        timeout_seconds: float = 30.0,
        gate: RealmGate | None = None,
        usage: ReadBudget | None = None,
        max_concurrent: int = 10,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._session = session
        # Awaited right before each request leaves, after every wait (token, quota, concurrency): the worker's
        # ownership fence (app.adapters.ownership.Ownership.held), which raises to abandon the call.
        self._before_send = before_send
        self._base = f"{base_url.rstrip('/')}/v3/company/{realm_id}"
        self.realm_id = realm_id
        self._tokens = tokens
        self._minor = str(minor_version)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.gate = gate
        self.usage = usage
        self._open = asyncio.Semaphore(max_concurrent)  # QBO: at most 10 concurrent requests per realm
        self.reads = self.writes = 0

    async def _ready_to_send(self) -> str:
        """Right before a request leaves: the access token now (the quota and concurrency waits can outlast the
        one taken before them: a deep queue, a 429 pause; each 401 would cost a request of the quota), and the
        ownership fence. If either stops the call, the gate hears it never left."""
        try:
            token = await self._tokens.access_token()
            if self._before_send is not None:
                await self._before_send()
            return token
        except BaseException:
            if self.gate is not None:
                self.gate.not_sent()
            raise

    def _count(self, kind: str) -> None:
        if kind == "read":
            self.reads += 1
            if self.usage is not None:
                self.usage.read()
        else:
            self.writes += 1

    async def query(self, sql: str) -> dict[str, Any]:
        """The `QueryResponse` object (`{}` when nothing matched). Sent as a POST with the SELECT as the body
        (as python-quickbooks does): an `IN (...)` of a hundred DocNumbers does not fit in a URL."""
        data = await self._request("POST", "query", "query", params={}, text=sql)
        return dict(data.get("QueryResponse") or {})

    async def pages(self, entity: str, select: str, size: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
        """The rows of `select` (`SELECT * FROM <entity> WHERE … ORDERBY Id`), `size` a page (QBO's largest
        is 1,000), one query per page, until a short page."""
        start = 1
        while True:
            rows = (await self.query(f"{select} STARTPOSITION {start} MAXRESULTS {size}")).get(entity) or []
            yield [dict(r) for r in rows]
            if len(rows) < size:
                return
            start += size

    async def query_one(self, entity: str, sql: str) -> dict[str, Any] | None:
        rows = (await self.query(sql)).get(entity) or []
        return rows[0] if rows else None

    async def create(self, entity: str, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        data = await self._request("POST", entity.lower(), entity, body=body, params={"requestid": request_id})
        obj = data.get(entity)
        if not isinstance(obj, dict):
            raise QboError(parse_fault(200, jsonutil.dumps(data)), ErrorClass.RETRIABLE)
        return obj

    async def read(self, entity: str, id_: str) -> dict[str, Any]:
        """`GET /<entity>/<id>`: the object as it is now (its current SyncToken); 610 when it is gone."""
        data = await self._request("GET", f"{entity.lower()}/{id_}", entity, params={})
        obj = data.get(entity)
        if not isinstance(obj, dict):
            raise QboError(parse_fault(200, jsonutil.dumps(data)), ErrorClass.RETRIABLE)
        return obj

    async def preferences(self) -> dict[str, Any]:
        """`GET /preferences`: the company's settings (a read)."""
        data = await self._request("GET", "preferences", "Preferences", params={})
        obj = data.get("Preferences")
        if not isinstance(obj, dict):
            raise QboError(parse_fault(200, jsonutil.dumps(data)), ErrorClass.RETRIABLE)
        return obj

    async def void(self, entity: str, id_: str, sync_token: str, request_id: str) -> dict[str, Any]:
        """`POST /<entity>?operation=void` with the current SyncToken (a stale one is fault 5010)."""
        data = await self._request("POST", entity.lower(), entity, body={"Id": id_, "SyncToken": sync_token},
                                   params={"operation": "void", "requestid": request_id})
        obj = data.get(entity)
        if not isinstance(obj, dict):
            raise QboError(parse_fault(200, jsonutil.dumps(data)), ErrorClass.RETRIABLE)
        return obj

    async def _request(
        self,
        method: str,
        path: str,
        entity: str,
        params: dict[str, str],
        body: dict[str, Any] | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        params = {**params, "minorversion": self._minor}
        payload = jsonutil.dumps(body) if body is not None else text.encode() if text is not None else None
        content_type = "application/text" if text is not None else "application/json"
        kind = "read" if method == "GET" or path == "query" else "write"
        token = await self._tokens.access_token()  # none to be had (a blocked realm): no quota spent
        for attempt in (1, 2):
            if self.gate is not None:
                await self.gate.before_call()
            started = time.perf_counter()
            status = 0
            retry_after: str | None = None
            try:
                async with self._open:
                    token = await self._ready_to_send()
                    async with self._session.request(
                        method,
                        f"{self._base}/{path}",
                        params=params,
                        data=payload,
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Accept": "application/json",
                            "Content-Type": content_type,
                        },
                        timeout=self._timeout,
                    ) as resp:
                        status = resp.status
                        retry_after = resp.headers.get("Retry-After")
                        raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                metrics.QBO_REQUESTS.labels(realm=self.realm_id, entity=entity.lower(), method=method, status="error", kind=kind).inc()
                self._count(kind)
                if self.gate is not None:
                    self.gate.after_call(0, None)
                fault = QboFault(0, None, exc.__class__.__name__, scrub(str(exc))[:200], None, "")
                raise QboError(fault, ErrorClass.RETRIABLE) from None
            finally:
                metrics.QBO_REQUEST_SECONDS.labels(entity=entity.lower()).observe(time.perf_counter() - started)
            metrics.QBO_REQUESTS.labels(realm=self.realm_id, entity=entity.lower(), method=method, status=str(status), kind=kind).inc()
            self._count(kind)
            if self.gate is not None:
                self.gate.after_call(status, retry_after)

            if status == 200:
                try:
                    data = jsonutil.loads_decimal(raw)
                except ValueError:
                    raise QboError(parse_fault(status, raw), ErrorClass.RETRIABLE) from None
                if isinstance(data, dict) and "Fault" in data:
                    fault = parse_fault(status, raw)
                    raise QboError(fault, classify(fault))
                return data if isinstance(data, dict) else {}

            fault = parse_fault(status, raw)
            error_class = classify(fault)
            if error_class is ErrorClass.AUTH and attempt == 1:
                log.info("realm=%s QBO answered 401 (%s): refreshing the access token", self.realm_id, fault.detail[:60])
                token = await self._tokens.refresh(stale=token)
                continue
            raise QboError(fault, error_class)
        raise AssertionError("unreachable")
