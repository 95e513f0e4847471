"""Every error leaves as JSON ``{"error": {"code", "message", "request_id"}}`` with a fitting
status, and the request id in the ``X-Request-Id`` header too (api/observability.py).

Domain errors carry a kind; this module alone maps kinds to HTTP statuses.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from api import observability, x402
from api.models import AMOUNT_CODES
from db.errors import DomainError, Kind, translate

log = logging.getLogger("tollgate.api")

STATUS: dict[Kind, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "invalid": 422,
    "payment_required": 402,
    "unavailable": 503,
    "bad_gateway": 502,
    "too_large": 413,
    "unsupported_media_type": 415,
}

# Codes that are the caller's malformed request rather than a refused one.
BAD_REQUEST_CODES = {
    "invalid_signature",
    "invalid_event",
    "malformed_json",
    "idempotency_key_required",
    # x402's PAYMENT-SIGNATURE header (api/x402.py): malformed, or naming no offered scheme
    "invalid_payment_signature",
    "unsupported_x402_version",
    "invalid_payment_payload",
    "unsupported_payment_scheme",
    "invalid_payment_identifier",
}

RETRY_AFTER_SECONDS = "2"


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    ctx = observability.current()
    if ctx is not None:  # always, for an HTTP request
        ctx.error = code
        body["request_id"] = ctx.request_id
        # Set here too for the 500 of an unhandled exception, answered outside the middleware.
        headers = {**(headers or {}), observability.REQUEST_ID_HEADER: ctx.request_id}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def domain_error_response(exc: DomainError) -> JSONResponse:
    status = 400 if exc.code in BAD_REQUEST_CODES else STATUS[exc.kind]
    headers: dict[str, str] = {}
    if status == 503 or exc.code == "idempotency_in_progress":
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(status, exc.code, exc.message, headers=headers or None)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    response = domain_error_response(exc)
    if response.status_code == 402:  # a declined card, a spend cap: x402's header too
        required = x402.for_refusal(exc.code, exc.message, str(request.url))
        response.headers.update(x402.required_header(required))
    return response


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Errors raised outside db/queries.py (pool checkout, connection loss mid-transaction).
    assert isinstance(exc, psycopg.Error)
    translated = translate(exc)
    if isinstance(translated, DomainError):
        return domain_error_response(translated)
    log.exception("database error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected database error occurred")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "problem": e.get("msg")}
        for e in errors
    ]
    first = details[0] if details else {"field": "", "problem": "invalid request"}
    code = "invalid_request"
    # Both forms of an amount, or neither, has a code of its own (api/models.py one_amount).
    for error, detail in zip(errors, details, strict=True):
        if error.get("type") in AMOUNT_CODES:
            code, first = error["type"], detail
            break
    message = f"{first['field'] or 'request'}: {first['problem']}"
    return error_response(422, code, message, details=details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Raised by the router itself: no route has this path, or none takes this method.
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    path = request.url.path
    if len(path) > 200:
        path = path[:200] + "..."
    if exc.status_code == 404:
        return error_response(
            404, "not_found", f"no route {request.method} {path}: /docs lists every route"
        )
    if exc.status_code == 405:
        allowed = next((v for k, v in (headers or {}).items() if k.lower() == "allow"), "")
        return error_response(
            405,
            "method_not_allowed",
            f"{path} does not take {request.method}; it takes {allowed}",
            headers=headers,
        )
    return error_response(exc.status_code, "http_error", str(exc.detail), headers=headers)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # The client hung up while sending its body: nothing was read, nothing is written, and the
    # answer reaches no one. Not a server error.
    return error_response(400, "client_disconnected", "the client closed the connection")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(psycopg.Error, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
