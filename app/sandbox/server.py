"""A local QuickBooks Online: the OAuth2 token endpoint and Accounting API v3 for what magqb uses.

Never imported by production code; `magqb sandbox` runs it. Operator endpoints
live under `/_sandbox/` so they cannot be mistaken for QBO's API.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from app import jsonutil
from app.sandbox import faults
from app.sandbox.company import CREATABLE, NAME_LISTS, URL_ENTITIES, Company
from app.sandbox.faults import SandboxFault, qbo_time
from app.sandbox.query import evaluate, parse

log = logging.getLogger("magqb.sandbox")

REQUEST_ID_MAX = 50
JSON_OK = "application/json;charset=utf-8"


@dataclass
class SandboxConfig:
    realm_id: str
    client_id: str
    client_secret: str
    refresh_token: str
    token_ttl: int = 3600
    # Intuit: "Your previous refresh tokens expire 24 hours after you receive a new one."
    refresh_token_grace: int = 24 * 3600
    refresh_token_ttl: int = 8726400


@dataclass
class _RefreshToken:
    issued_at: float
    superseded_at: float | None = None


@dataclass
class TokenAuthority:
    config: SandboxConfig
    refresh_tokens: dict[str, _RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (monotonic clock)

    def __post_init__(self) -> None:
        self.refresh_tokens[self.config.refresh_token] = _RefreshToken(issued_at=time.time())

    def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        now = time.time()
        entry = self.refresh_tokens.get(refresh_token)
        if entry is None:
            return None
        if entry.superseded_at is not None and now - entry.superseded_at > self.config.refresh_token_grace:
            return None
        if now - entry.issued_at > self.config.refresh_token_ttl:
            return None
        # Rotate: the newest token is the one to use; every older one keeps working for the grace period.
        for other in self.refresh_tokens.values():
            if other.superseded_at is None:
                other.superseded_at = now
        new_rt = "RT1-" + secrets.token_urlsafe(24)
        self.refresh_tokens[new_rt] = _RefreshToken(issued_at=now)
        access = "eyJ" + secrets.token_urlsafe(48)
        self.access_tokens[access] = time.monotonic() + self.config.token_ttl
        return {
            "access_token": access,
            "refresh_token": new_rt,
            "token_type": "bearer",
            "expires_in": self.config.token_ttl,
            "x_refresh_token_expires_in": self.config.refresh_token_ttl,
        }

    def check(self, header: str | None) -> str | None:
        """None when the bearer token is valid, else the 401 detail QBO gives."""
        if not header or not header.startswith("Bearer "):
            return "Malformed bearer token: too short or too long"
        token = header[len("Bearer ") :].strip()
        expiry = self.access_tokens.get(token)
        if expiry is None:
            return f"Token invalid: {token[:10]}"
        if time.monotonic() >= expiry:
            return f"Token expired: {token[:40]}"
        return None


@dataclass
class Sandbox:
    config: SandboxConfig
    company: Company = field(init=False)
    tokens: TokenAuthority = field(init=False)
    idempotency: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.company = Company(realm_id=self.config.realm_id)
        self.tokens = TokenAuthority(self.config)
        self.idempotency.clear()
        self.requests.clear()
        self.created.clear()


SANDBOX_KEY: web.AppKey["Sandbox"] = web.AppKey("sandbox")


def _json(body: Any, status: int = 200, content_type: str = JSON_OK, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(body=jsonutil.dumps(body), status=status, headers=headers)
    resp.headers["Content-Type"] = content_type
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


def _endpoint(request: web.Request) -> str:
    path = request.path
    if path.startswith("/v3/company/"):
        parts = path.split("/")
        rest = parts[4:] if len(parts) > 4 else []
        return "/v3/" + "/".join(p if not p.isdigit() else "{id}" for p in rest)
    return path


@web.middleware
async def _intuit_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    sandbox: Sandbox = request.app[SANDBOX_KEY]
    try:
        resp = await handler(request)
    except SandboxFault as fault:
        resp = _fault(fault)
    except web.HTTPException as exc:
        if exc.status == 404 and request.path.startswith("/v3/"):
            resp = _fault(faults.unsupported_operation(request.path))
        else:
            raise
    resp.headers["intuit_tid"] = f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
    if not request.path.startswith("/_sandbox/"):
        sandbox.requests[f"{request.method} {_endpoint(request)} {resp.status}"] += 1
    return resp


# ---------------------------------------------------------------- OAuth2


async def token_endpoint(request: web.Request) -> web.Response:
    sandbox: Sandbox = request.app[SANDBOX_KEY]
    cfg = sandbox.config
    auth = request.headers.get("Authorization", "")
    try:
        client_id, _, client_secret = base64.b64decode(auth.removeprefix("Basic ").strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        client_id, client_secret = "", ""
    if not auth.startswith("Basic ") or client_id != cfg.client_id or client_secret != cfg.client_secret:
        return _json({"error": "invalid_client"}, status=401, content_type="application/json")
    form = parse_qs((await request.read()).decode(errors="replace"))
    if form.get("grant_type", [""])[0] != "refresh_token":
        return _json({"error": "unsupported_grant_type"}, status=400, content_type="application/json")
    answer = sandbox.tokens.refresh(form.get("refresh_token", [""])[0])
    if answer is None:
        return _json({"error_description": "Token invalid", "error": "invalid_grant"}, status=400,
                     content_type="application/json")
    return _json(answer, content_type="application/json")


# ---------------------------------------------------------------- Accounting API


def _authorize(request: web.Request) -> web.Response | None:
    sandbox: Sandbox = request.app[SANDBOX_KEY]
    problem = sandbox.tokens.check(request.headers.get("Authorization"))
    if problem:
        return _unauthorized(problem)
    if request.match_info["realm"] != sandbox.config.realm_id:
        body = faults.token_expired_body("")
        body["fault"]["error"][0].update(
            {"message": "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403", "detail": None,
             "code": "3100"}
        )
        body["fault"]["type"] = "SERVICE"
        return _json(body, status=403, content_type="application/json")
    return None


async def query_endpoint(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    sandbox: Sandbox = request.app[SANDBOX_KEY]
    text = request.query.get("query")
    if text is None and request.method == "POST":
        text = (await request.read()).decode(errors="replace")
    if not text:
        raise faults.query_parse_error('Encountered "<EOF>" at line 1, column 1.')
    q = parse(text, set(URL_ENTITIES.values()))
    result = evaluate(q, sandbox.company.rows(q.entity), active_filter=q.entity in NAME_LISTS)
    return _json({"QueryResponse": result, "time": qbo_time()})


async def read_endpoint(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    sandbox: Sandbox = request.app[SANDBOX_KEY]
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


async def create_endpoint(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    sandbox: Sandbox = request.app[SANDBOX_KEY]
    entity = CREATABLE.get(request.match_info["entity"])
    if entity is None:
        raise faults.unsupported_operation(request.path)
    if request.query.get("operation"):
        raise faults.unsupported_operation(request.path)
    request_id = request.query.get("requestid")
    if request_id is not None and len(request_id) > REQUEST_ID_MAX:
        raise SandboxFault(
            "6000", "A business validation error has occurred while processing your request",
            f"Business Validation Error: You cannot enter more than {REQUEST_ID_MAX} characters in the request_id "
            f"field. You tried entering {request_id}, which is {len(request_id)} characters.",
        )
    key = (entity, request_id or "")
    raw = await request.read()
    # No await between the lookup and the store below: concurrent repeats cannot both create.
    if request_id and key in sandbox.idempotency:
        status, body = sandbox.idempotency[key]
        resp = web.Response(body=body, status=status)
        resp.headers["Content-Type"] = JSON_OK if status == 200 else "application/json"
        return resp
    try:
        payload = jsonutil.loads_decimal(raw)
        include = {v.strip().lower() for v in request.query.get("include", "").split(",")}
        created = sandbox.company.create(entity, payload, allow_duplicate_docnum="allowduplicatedocnum" in include)
        status, body = 200, jsonutil.dumps({entity: created, "time": qbo_time()})
        sandbox.created[entity] += 1
        log.info("created %s Id=%s%s", entity, created["Id"],
                 f" DocNumber={created['DocNumber']}" if "DocNumber" in created else "")
    except ValueError:
        fault = faults.request_body_invalid("request body is not valid JSON")
        status, body = fault.status, jsonutil.dumps(fault.body())
    except SandboxFault as fault:
        status, body = fault.status, jsonutil.dumps(fault.body())
    if request_id:
        sandbox.idempotency[key] = (status, body)
    resp = web.Response(body=body, status=status)
    resp.headers["Content-Type"] = JSON_OK if status == 200 else "application/json"
    return resp


# ---------------------------------------------------------------- operator endpoints


async def stats_endpoint(request: web.Request) -> web.Response:
    sandbox: Sandbox = request.app[SANDBOX_KEY]
    by_endpoint = dict(sorted(sandbox.requests.items()))
    return _json({
        "realm_id": sandbox.config.realm_id,
        "requests": by_endpoint,
        "requests_total": sum(sandbox.requests.values()),
        "documents_created": dict(sandbox.created),
    }, content_type="application/json")


async def reset_endpoint(request: web.Request) -> web.Response:
    request.app[SANDBOX_KEY].reset()
    return _json({"reset": True}, content_type="application/json")


async def unsupported(request: web.Request) -> web.Response:
    raise faults.unsupported_operation(request.path)


def build_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[_intuit_headers], client_max_size=10 * 1024 * 1024)
    app[SANDBOX_KEY] = Sandbox(config)
    app.router.add_post("/oauth2/v1/tokens/bearer", token_endpoint)
    app.router.add_route("GET", "/v3/company/{realm}/query", query_endpoint)
    app.router.add_route("POST", "/v3/company/{realm}/query", query_endpoint)
    app.router.add_get("/v3/company/{realm}/{entity}/{id}", read_endpoint)
    app.router.add_post("/v3/company/{realm}/{entity}", create_endpoint)
    app.router.add_get("/_sandbox/stats", stats_endpoint)
    app.router.add_post("/_sandbox/reset", reset_endpoint)
    app.router.add_route("*", "/v3/{tail:.*}", unsupported)
    return app
