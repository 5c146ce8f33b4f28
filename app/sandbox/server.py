"""A local QuickBooks Online: the OAuth2 token endpoint and Accounting API v3 for what magqb uses,
with QBO's quotas and a fault-injection rig.

Never imported by production code; `magqb sandbox` runs it. Operator endpoints
live under `/_sandbox/` so they cannot be mistaken for QBO's API.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from aiohttp import web
from pydantic import ValidationError

from app import jsonutil
from app.sandbox import faults
from app.sandbox.chaos import Dice, FaultSettings, RealmQuota
from app.sandbox.company import CREATABLE, NAME_LISTS, SALES_FORMS, URL_ENTITIES, Company
from app.sandbox.faults import SandboxFault, qbo_time
from app.sandbox.query import evaluate, parse
from app.sandbox.store import SandboxStore, flush_forever
from app.sandbox.tokens import ACCOUNTING_SCOPE, TokenAuthority

log = logging.getLogger("magqb.sandbox")

REQUEST_ID_MAX = 50
BATCH_REQUEST_ID_MAX = 36
BATCH_MAX_ITEMS = 30
JSON_OK = "application/json;charset=utf-8"
THROTTLE_MESSAGE = "message=ThrottleExceeded; errorCode=003001; statusCode=429"
THROTTLE_DETAIL = "The request limit was reached.  Try again later"


@dataclass
class SandboxConfig:
    realm_id: str
    client_id: str
    client_secret: str
    refresh_token: str
    faults: FaultSettings = field(default_factory=FaultSettings)
    db: Path | None = None
    tax_codes: dict[str, str] = field(default_factory=dict)  # extra TaxCodes, Id → Name


@dataclass
class Sandbox:
    config: SandboxConfig
    company: Company = field(init=False)
    tokens: TokenAuthority = field(init=False)
    faults: FaultSettings = field(init=False)
    dice: Dice = field(init=False)
    quota: RealmQuota = field(default_factory=RealmQuota)
    idempotency: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    idempotency_dirty: set[str] = field(default_factory=set)
    requests: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    store: SandboxStore | None = None

    def __post_init__(self) -> None:
        self.faults = self.config.faults
        self.dice = Dice(self.faults.seed)
        self.reset()

    def reset(self) -> None:
        self.company = Company(realm_id=self.config.realm_id, extra_tax_codes=dict(self.config.tax_codes),
                               custom_txn_numbers=self.faults.custom_txn_numbers)
        self.tokens = TokenAuthority(self.config.refresh_token, self.faults.token_ttl, self.faults.refresh_token_grace,
                                     hard_ttl=self.faults.refresh_token_hard_ttl)
        self.quota.clear()
        self.idempotency.clear()
        self.idempotency_dirty.clear()
        self.requests.clear()
        self.created.clear()
        self.injected.clear()
        self.throttled = 0

    def set_faults(self, update: dict[str, Any]) -> FaultSettings:
        merged = FaultSettings.model_validate({**self.faults.model_dump(), **update})
        if "seed" in update:
            self.dice = Dice(merged.seed)
        self.faults = merged
        self.company.custom_txn_numbers = merged.custom_txn_numbers
        self.tokens.token_ttl = merged.token_ttl
        self.tokens.refresh_token_grace = merged.refresh_token_grace
        self.tokens.hard_ttl = merged.refresh_token_hard_ttl
        return merged

    def remember(self, key: str, status: int, body: bytes) -> None:
        self.idempotency[key] = (status, body)
        self.idempotency_dirty.add(key)

    # ------------------------------------------------------------ persistence

    async def open_store(self, path: Path) -> None:
        self.store = SandboxStore(path)
        await self.store.open()
        saved = await self.store.load()
        if saved is None:
            self.company.all_dirty()
            await self.flush()
            log.info("sandbox: new company %s stored in %s", self.config.realm_id, path)
            return
        meta = saved["meta"]
        self.company.load(saved["entities"], meta["company"])
        self.tokens.load(meta["tokens"])
        self.idempotency = saved["idempotency"]
        log.info("sandbox: company %s loaded from %s (%d customers, %d items, %d sales forms)",
                 self.config.realm_id, path, len(self.company.entities["Customer"]),
                 len(self.company.entities["Item"]),
                 len(self.company.entities["SalesReceipt"]) + len(self.company.entities["Invoice"]))

    async def flush(self) -> None:
        if self.store is None:
            return
        dirty, self.company.dirty = self.company.dirty, set()
        idem, self.idempotency_dirty = self.idempotency_dirty, set()
        entities = [(e, i, self.company.entities[e][i]) for e, i in dirty if i in self.company.entities[e]]
        await self.store.delete([(e, i) for e, i in dirty if i not in self.company.entities[e]])
        await self.store.save(
            entities,
            [(k, *self.idempotency[k]) for k in idem if k in self.idempotency],
            {"company": self.company.meta(), "tokens": self.tokens.dump()},
        )


SANDBOX_KEY: web.AppKey[Sandbox] = web.AppKey("sandbox")
BATCH_BODY_KEY: web.RequestKey[Any] = web.RequestKey("batch_body", object)


def _json(body: Any, status: int = 200, content_type: str = JSON_OK, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(body=jsonutil.dumps(body), status=status, headers=headers)
    resp.headers["Content-Type"] = content_type
    return resp


def _raw(status: int, body: bytes) -> web.Response:
    resp = web.Response(body=body, status=status)
    resp.headers["Content-Type"] = JSON_OK if status == 200 else "application/json"
    return resp


def _fault(fault: SandboxFault) -> web.Response:
    return _json(fault.body(), status=fault.status, content_type="application/json")


def _unauthorized(detail: str) -> web.Response:
    return _json(
        faults.token_expired_body(detail),
        status=401,
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'},
    )


def _throttled(sandbox: Sandbox) -> web.Response:
    sandbox.throttled += 1
    headers = {"Retry-After": "60"} if sandbox.faults.retry_after else None
    if sandbox.faults.throttle_xml:
        xml = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<IntuitResponse time="{qbo_time()}" xmlns="http://schema.intuit.com/finance/v3">'
            f'<Fault type="SERVICE"><Error code="3001"><Message>{THROTTLE_MESSAGE}</Message>'
            f"<Detail>{THROTTLE_DETAIL}</Detail></Error></Fault></IntuitResponse>"
        )
        resp = web.Response(body=xml.encode(), status=429, headers=headers)
        resp.headers["Content-Type"] = "application/xml"
        return resp
    fault = SandboxFault("3001", THROTTLE_MESSAGE, THROTTLE_DETAIL, status=429, type_="SERVICE")
    return _json(fault.body(), status=429, content_type="application/json", headers=headers)


def _server_error(sandbox: Sandbox) -> web.Response:
    if sandbox.dice.choice((500, 503)) == 500:
        fault = SandboxFault("10000", "An application error has occurred while processing your request",
                             "System Failure Error: java.lang.Throwable: simulated failure", "SystemFailureError",
                             status=500, type_="SystemFault")
        return _fault(fault)
    # Gateway-level 503s come back as HTML, not JSON.
    resp = web.Response(body=b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", status=503)
    resp.headers["Content-Type"] = "text/html"
    return resp


def _endpoint(request: web.Request) -> str:
    path = request.path
    if path.startswith("/v3/company/"):
        parts = path.split("/")
        rest = parts[4:] if len(parts) > 4 else []
        return "/v3/" + "/".join(p if not p.isdigit() else "{id}" for p in rest)
    return path


def _authorize(request: web.Request, sandbox: Sandbox) -> web.Response | None:
    problem = sandbox.tokens.check(request.headers.get("Authorization"))
    if problem:
        return _unauthorized(problem)
    realm = request.match_info.get("realm") or request.path.split("/")[3]
    if realm != sandbox.config.realm_id:
        body = faults.token_expired_body("")
        body["fault"]["error"][0].update(
            {"message": "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403", "detail": None,
             "code": "3100"}
        )
        body["fault"]["type"] = "SERVICE"
        return _json(body, status=403, content_type="application/json")
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _qbo_gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What QBO's gateway does before and after the API: auth, quotas, and the injected faults."""
    sandbox = request.app[SANDBOX_KEY]
    try:
        if request.path.startswith("/v3/company/"):
            resp = await _through_gateway(request, handler, sandbox)
        else:
            resp = await handler(request)
    except SandboxFault as fault:
        resp = _fault(fault)
    except web.HTTPException as exc:
        if exc.status == 404 and request.path.startswith("/v3/"):
            resp = _fault(faults.unsupported_operation(request.path))
        else:
            raise
    resp.headers["intuit_tid"] = f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
    if request.path.startswith(("/v3/", "/oauth2/", "/connect/")):  # QBO's traffic, not the rig's or a scraper's
        sandbox.requests[f"{request.method} {_endpoint(request)} {resp.status}"] += 1
    return resp


async def _through_gateway(request: web.Request, handler: Handler, sandbox: Sandbox) -> web.StreamResponse:
    denied = _authorize(request, sandbox)
    if denied is not None:
        return denied
    settings = sandbox.faults
    is_batch = request.path.endswith("/batch")
    calls = 1
    if is_batch:
        request[BATCH_BODY_KEY] = body = await _read_json(request)
        items = body.get("BatchItemRequest") if isinstance(body, dict) else None
        calls = max(len(items), 1) if isinstance(items, list) else 1
    if not sandbox.quota.admit(settings, calls=calls, batch=is_batch):
        return _throttled(sandbox)
    if sandbox.dice.hit(settings.throttle_rate):
        sandbox.injected["throttle"] += 1
        return _throttled(sandbox)
    if sandbox.dice.hit(settings.fail_rate):
        sandbox.injected["fail"] += 1
        return _server_error(sandbox)
    if sandbox.dice.hit(settings.hang_rate):
        sandbox.injected["hang"] += 1
        await asyncio.sleep(settings.hang_seconds)
        return _server_error(sandbox)
    delay = sandbox.dice.latency(settings)
    if delay:
        await asyncio.sleep(delay)
    resp = await handler(request)
    if request.method == "POST" and not request.path.endswith("/query") and resp.status == 200 \
            and sandbox.dice.hit(settings.commit_then_fail_rate):
        # The write is committed; the client never learns it. Naive clients create a duplicate here.
        sandbox.injected["commit_then_fail"] += 1
        if sandbox.dice.choice((0, 1)) and request.transport is not None:
            request.transport.abort()  # the connection drops: no status line at all
            return web.Response(status=500)
        return _server_error(sandbox)
    return resp


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return jsonutil.loads_decimal(raw)
    except ValueError:
        raise faults.request_body_invalid("request body is not valid JSON") from None


# ---------------------------------------------------------------- OAuth2


async def token_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    cfg = sandbox.config
    auth = request.headers.get("Authorization", "")
    try:
        client_id, _, client_secret = base64.b64decode(auth.removeprefix("Basic ").strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        client_id, client_secret = "", ""
    if not auth.startswith("Basic ") or client_id != cfg.client_id or client_secret != cfg.client_secret:
        return _json({"error": "invalid_client"}, status=401, content_type="application/json")
    form = parse_qs((await request.read()).decode(errors="replace"))
    grant = form.get("grant_type", [""])[0]
    hard = request.headers.get("x-include-refresh-token-hard-expires-in", "").lower() == "true"
    if grant == "authorization_code":
        answer = sandbox.tokens.exchange(form.get("code", [""])[0], form.get("redirect_uri", [""])[0], hard)
        if answer is not None:
            answer["realmId"] = sandbox.config.realm_id
    elif grant == "refresh_token":
        answer = sandbox.tokens.refresh(form.get("refresh_token", [""])[0], hard)
    else:
        return _json({"error": "unsupported_grant_type"}, status=400, content_type="application/json")
    if answer is None:
        return _json({"error_description": "Token invalid", "error": "invalid_grant"}, status=400,
                     content_type="application/json")
    return _json(answer, content_type="application/json")


async def authorize_endpoint(request: web.Request) -> web.Response:
    """Intuit's consent page (appcenter.intuit.com/connect/oauth2), consenting at once: back to the
    redirect URI with a one-time code, the state, and the company's realmId."""
    sandbox = request.app[SANDBOX_KEY]
    q = request.query
    redirect_uri = q.get("redirect_uri", "")
    if q.get("client_id") != sandbox.config.client_id or not redirect_uri.startswith(("http://", "https://")):
        return _json({"error": "invalid_client"}, status=400, content_type="application/json")
    params: dict[str, str] = {"state": q.get("state", "")}
    if q.get("response_type") != "code":
        params["error"] = "unsupported_response_type"
    elif ACCOUNTING_SCOPE not in q.get("scope", "").split():
        params["error"] = "invalid_scope"
    else:
        params.update(code=sandbox.tokens.authorize(redirect_uri), realmId=sandbox.config.realm_id)
    sep = "&" if "?" in redirect_uri else "?"
    raise web.HTTPFound(redirect_uri + sep + urlencode(params))


# ---------------------------------------------------------------- Accounting API


def _run_query(sandbox: Sandbox, text: str) -> dict[str, Any]:
    q = parse(text, set(URL_ENTITIES.values()))
    return evaluate(q, sandbox.company.rows(q.entity), active_filter=q.entity in NAME_LISTS)


async def query_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    text = request.query.get("query")
    if text is None and request.method == "POST":
        text = (await request.read()).decode(errors="replace")
    if not text:
        raise faults.query_parse_error('Encountered "<EOF>" at line 1, column 1.')
    return _json({"QueryResponse": _run_query(sandbox, text), "time": qbo_time()})


async def preferences_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    return _json({"Preferences": sandbox.company.preferences(), "time": qbo_time()})


async def read_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    entity = URL_ENTITIES.get(request.match_info["entity"])
    if entity is None:
        raise faults.unsupported_operation(request.path)
    id_ = request.match_info["id"]
    if not id_.isdigit() and entity != "TaxCode":
        raise SandboxFault("2030", "Invalid ID", f"Id should be a valid number. Supplied value:{id_}", "Id")
    found = sandbox.company.get(entity, id_)
    if found is None:
        raise faults.object_not_found(entity, id_)
    return _json({entity: found, "time": qbo_time()})


def _request_id_too_long(request_id: str, limit: int) -> SandboxFault:
    return SandboxFault(
        "6000", "A business validation error has occurred while processing your request",
        f"Business Validation Error: You cannot enter more than {limit} characters in the request_id "
        f"field. You tried entering {request_id}, which is {len(request_id)} characters.",
    )


def _create(sandbox: Sandbox, entity: str, payload: Any, allow_duplicate_docnum: bool) -> dict[str, Any]:
    created = sandbox.company.create(entity, payload, allow_duplicate_docnum=allow_duplicate_docnum)
    sandbox.created[entity] += 1
    log.info("created %s Id=%s%s", entity, created["Id"],
             f" DocNumber={created['DocNumber']}" if "DocNumber" in created else "")
    return created


async def create_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    entity = CREATABLE.get(request.match_info["entity"])
    operation = request.query.get("operation")
    if entity is None or operation not in (None, "delete", "void") or (operation == "delete" and entity not in SALES_FORMS):
        raise faults.unsupported_operation(request.path)
    if operation == "void":
        voided = sandbox.company.void(entity, await _read_json(request))
        log.info("voided %s Id=%s", entity, voided["Id"])
        return _json({entity: voided, "time": qbo_time()})
    if operation == "delete":
        deleted = sandbox.company.delete(entity, await _read_json(request))
        log.info("deleted %s Id=%s", entity, deleted["Id"])
        return _json({entity: deleted, "time": qbo_time()})
    request_id = request.query.get("requestid")
    if request_id is not None and len(request_id) > REQUEST_ID_MAX:
        raise _request_id_too_long(request_id, REQUEST_ID_MAX)
    raw = await request.read()
    key = f"{entity}\x1f{request_id}"
    # No await between the lookup and the store below: concurrent repeats cannot both create.
    if request_id and key in sandbox.idempotency:
        if not sandbox.dice.hit(sandbox.faults.requestid_forget_rate):
            return _raw(*sandbox.idempotency[key])
        sandbox.injected["requestid_forgotten"] += 1  # handled as a new request: a second document if nothing else stops it
    try:
        payload = jsonutil.loads_decimal(raw)
        include = {v.strip().lower() for v in request.query.get("include", "").split(",")}
        if isinstance(payload, dict) and "Id" in payload and entity in ("Customer", "Item"):
            created = sandbox.company.update(entity, payload)  # an update is a POST with Id and SyncToken
            log.info("updated %s Id=%s", entity, created["Id"])
        else:
            created = _create(sandbox, entity, payload, "allowduplicatedocnum" in include)
        status, body = 200, jsonutil.dumps({entity: created, "time": qbo_time()})
    except ValueError:
        fault = faults.request_body_invalid("request body is not valid JSON")
        status, body = fault.status, jsonutil.dumps(fault.body())
    except SandboxFault as fault:
        status, body = fault.status, jsonutil.dumps(fault.body())
    if request_id:
        sandbox.remember(key, status, body)
    return _raw(status, body)


def _batch_item(sandbox: Sandbox, item: Any, request_id: str | None) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("bId"), str) or not item["bId"]:
        return {"Fault": faults.required_missing("bId").body()["Fault"], "bId": None}
    bid = item["bId"]
    try:
        if request_id and len(request_id) + len(bid) > REQUEST_ID_MAX:
            raise _request_id_too_long(request_id + bid, REQUEST_ID_MAX)
        if "Query" in item:
            return {"QueryResponse": _run_query(sandbox, str(item["Query"])), "bId": bid}
        operation = item.get("operation")
        entities = [k for k in item if k in CREATABLE.values()]
        if len(entities) != 1:
            raise faults.request_body_invalid("a batch item names exactly one entity or a Query")
        entity = entities[0]
        body = item[entity]
        if operation == "create":
            allow = "allowduplicatedocnum" in str(item.get("optionsData", "")).lower()
            return {entity: _create(sandbox, entity, body, allow), "bId": bid}
        if operation == "delete" and entity in SALES_FORMS:
            return {entity: sandbox.company.delete(entity, body), "bId": bid}
        if operation in ("update", "delete"):
            sandbox.company.current(entity, body)  # 610 or 5010 first, as QBO answers
        raise faults.unsupported_operation(f"batch operation {operation!r} on {entity}")
    except SandboxFault as fault:
        return {"Fault": fault.body()["Fault"], "bId": bid}


async def batch_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    request_id = request.query.get("requestid")
    if request_id is not None and len(request_id) > BATCH_REQUEST_ID_MAX:
        raise _request_id_too_long(request_id, BATCH_REQUEST_ID_MAX)
    key = f"batch\x1f{request_id}"
    if request_id and key in sandbox.idempotency:
        return _raw(*sandbox.idempotency[key])
    body = request.get(BATCH_BODY_KEY)
    if body is None:
        body = await _read_json(request)
    items = body.get("BatchItemRequest") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise faults.required_missing("BatchItemRequest")
    if len(items) > BATCH_MAX_ITEMS:
        raise SandboxFault(
            "6000", "A business validation error has occurred while processing your request",
            f"Business Validation Error: a batch request can hold at most {BATCH_MAX_ITEMS} items; "
            f"this one has {len(items)}.",
        )
    answers = [_batch_item(sandbox, item, request_id) for item in items]
    status, raw = 200, jsonutil.dumps({"BatchItemResponse": answers, "time": qbo_time()})
    if request_id:
        sandbox.remember(key, status, raw)
    return _raw(status, raw)


# ---------------------------------------------------------------- operator endpoints


async def stats_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    return _json({
        "realm_id": sandbox.config.realm_id,
        "requests": dict(sorted(sandbox.requests.items())),
        "requests_total": sum(sandbox.requests.values()),
        "throttled": sandbox.throttled,
        "injected": dict(sandbox.injected),
        "documents_created": dict(sandbox.created),
    }, content_type="application/json")


async def metrics_endpoint(request: web.Request) -> web.Response:
    """The sandbox's traffic for Prometheus (the same figures as /_sandbox/stats): what QuickBooks saw."""
    sandbox = request.app[SANDBOX_KEY]
    realm = sandbox.config.realm_id

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    lines = ["# HELP magqb_sandbox_requests_total Requests the sandbox answered, by method, path and status.",
             "# TYPE magqb_sandbox_requests_total counter"]
    for key, n in sorted(sandbox.requests.items()):
        method, path, status = (key.split(" ") + ["", "", ""])[:3]
        lines.append(f'magqb_sandbox_requests_total{{realm="{esc(realm)}",method="{esc(method)}",'
                     f'path="{esc(path)}",status="{esc(status)}"}} {n}')
    lines += ["# HELP magqb_sandbox_throttled_total Requests answered 429 (quota).",
              "# TYPE magqb_sandbox_throttled_total counter",
              f'magqb_sandbox_throttled_total{{realm="{esc(realm)}"}} {sandbox.throttled}',
              "# HELP magqb_sandbox_documents_created_total Entities created.",
              "# TYPE magqb_sandbox_documents_created_total counter"]
    for entity, n in sorted(sandbox.created.items()):
        lines.append(f'magqb_sandbox_documents_created_total{{realm="{esc(realm)}",entity="{esc(entity)}"}} {n}')
    lines += ["# HELP magqb_sandbox_injected_faults_total Faults injected by the rig, by kind.",
              "# TYPE magqb_sandbox_injected_faults_total counter"]
    for fault, n in sorted(sandbox.injected.items()):
        lines.append(f'magqb_sandbox_injected_faults_total{{realm="{esc(realm)}",fault="{esc(fault)}"}} {n}')
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def tokens_endpoint(request: web.Request) -> web.Response:
    """Every token this sandbox issued (a test rig's endpoint: tests search outputs for them)."""
    tokens = request.app[SANDBOX_KEY].tokens
    return _json({"refresh_tokens": sorted(tokens.refresh_tokens), "access_tokens": sorted(tokens.access_tokens)},
                 content_type="application/json")


async def expire_tokens_endpoint(request: web.Request) -> web.Response:
    """Every access token issued so far is expired now: the next call with one gets QBO's 401."""
    tokens = request.app[SANDBOX_KEY].tokens
    tokens.expire_access_tokens()
    return _json({"expired": len(tokens.access_tokens)}, content_type="application/json")


async def reset_endpoint(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    sandbox.reset()
    if sandbox.store is not None:
        await sandbox.store.wipe()
        sandbox.company.all_dirty()
        await sandbox.flush()
    return _json({"reset": True}, content_type="application/json")


async def faults_get(request: web.Request) -> web.Response:
    return _json(request.app[SANDBOX_KEY].faults.model_dump(), content_type="application/json")


async def faults_put(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX_KEY]
    try:
        update = jsonutil.loads(await request.read())
        if not isinstance(update, dict):
            raise ValueError("expected a JSON object")
        settings = sandbox.set_faults(update)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]}
                  for e in exc.errors(include_url=False, include_input=False)]
        return _json({"error": "invalid fault settings", "errors": errors}, status=422,
                     content_type="application/json")
    except ValueError as exc:
        return _json({"error": f"body is not a JSON object: {exc}"}, status=400, content_type="application/json")
    log.info("sandbox: faults now %s", settings.model_dump(exclude_defaults=True) or "off")
    return _json(settings.model_dump(), content_type="application/json")


async def unsupported(request: web.Request) -> web.Response:
    raise faults.unsupported_operation(request.path)


async def _persistence(app: web.Application) -> AsyncIterator[None]:
    sandbox = app[SANDBOX_KEY]
    if sandbox.config.db is None:
        yield
        return
    await sandbox.open_store(sandbox.config.db)
    task = asyncio.create_task(flush_forever(sandbox.flush))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sandbox.flush()
        assert sandbox.store is not None
        await sandbox.store.close()


def build_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[_qbo_gateway], client_max_size=10 * 1024 * 1024)
    app[SANDBOX_KEY] = Sandbox(config)
    app.cleanup_ctx.append(_persistence)
    app.router.add_post("/oauth2/v1/tokens/bearer", token_endpoint)
    app.router.add_get("/connect/oauth2", authorize_endpoint)
    app.router.add_route("GET", "/v3/company/{realm}/query", query_endpoint)
    app.router.add_route("POST", "/v3/company/{realm}/query", query_endpoint)
    app.router.add_post("/v3/company/{realm}/batch", batch_endpoint)
    app.router.add_get("/v3/company/{realm}/preferences", preferences_endpoint)
    app.router.add_get("/v3/company/{realm}/{entity}/{id}", read_endpoint)
    app.router.add_post("/v3/company/{realm}/{entity}", create_endpoint)
    app.router.add_get("/_sandbox/stats", stats_endpoint)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_post("/_sandbox/reset", reset_endpoint)
    app.router.add_get("/_sandbox/tokens", tokens_endpoint)
    app.router.add_post("/_sandbox/expire-tokens", expire_tokens_endpoint)
    app.router.add_get("/_sandbox/faults", faults_get)
    app.router.add_put("/_sandbox/faults", faults_put)
    app.router.add_route("*", "/v3/{tail:.*}", unsupported)
    return app
