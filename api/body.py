"""JSON bodies whose numbers must stay exact.

FastAPI parses JSON numbers as floats; 1250.505 would arrive as the nearest double. Routes that
take decimal amounts read the body here instead: numbers become Decimal, NaN and Infinity are
refused, and the model validates as usual (errors answer like any other 422). A body sent as
anything but JSON (``Content-Type: application/json``, or another ``application/*+json``) is
refused with 415 before it is parsed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from db.errors import DomainError

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 64 * 1024


def _integer(text: str) -> int | Decimal:
    # Beyond 40 digits no field takes it as an int; Decimal lets the model refuse it (422)
    # where int() would stop at Python's digit limit.
    return int(text) if len(text) <= 40 else Decimal(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_capped(request: Request, max_bytes: int, what: str = "the body") -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``max_bytes``: by its
    Content-Length before anything is read, else while it streams in (chunked uploads)."""
    too_large = DomainError(
        "too_large", "payload_too_large", f"{what} is larger than {max_bytes} bytes"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_media_type(given: str) -> DomainError:
    shown = f"it is {given[:100]}" if given else "it has none"
    return DomainError(
        "unsupported_media_type",
        "unsupported_media_type",
        f"send the body as JSON with Content-Type: application/json ({shown})",
    )


async def parse(
    request: Request, model: type[M], *, max_bytes: int = MAX_BODY_BYTES, empty_ok: bool = False
) -> M:
    """The body as ``model``; an empty body (no bytes at all) reads as {} when ``empty_ok``."""
    body = await read_capped(request, max_bytes)
    if empty_ok and not body:
        body = b"{}"
    else:
        given = request.headers.get("content-type", "")
        if body and not _is_json(given):
            raise _refuse_media_type(given)
    try:
        data = json.loads(
            body, parse_float=Decimal, parse_int=_integer, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError) as exc:
        raise DomainError(
            "invalid", "malformed_json", "the request body is not valid JSON"
        ) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


# Routes that read no body still refuse one that is not JSON, so a form post or a text body
# never passes for an empty one. The Stripe webhook reads its raw bytes itself (their
# signature covers them, whatever Stripe calls their type).
RAW_BODY_PATHS = frozenset({"/v1/webhooks/stripe"})


async def require_json_body(request: Request) -> None:
    """Every route's dependency: a request with a body that is not JSON is refused (415)."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    if request.url.path in RAW_BODY_PATHS:
        return
    declared = request.headers.get("content-length", "")
    has_body = (declared.isdigit() and int(declared) > 0) or (
        "transfer-encoding" in request.headers
    )
    given = request.headers.get("content-type", "")
    if has_body and not _is_json(given):
        raise _refuse_media_type(given)


# The OpenAPI entry of a 415, for every route that reads its body here.
UNSUPPORTED_MEDIA_TYPE = {
    "description": "the body was not sent as JSON (`Content-Type: application/json`)",
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"},
            "example": {
                "error": {
                    "code": "unsupported_media_type",
                    "message": "send the body as JSON with Content-Type: application/json "
                    "(it is application/x-www-form-urlencoded)",
                }
            },
        }
    },
}


def openapi_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The requestBody entry for a route that parses its body with ``parse``, with the model's
    first example, and its 415. Nested models are referred to in the components
    (``#/components/schemas/...``); the app's OpenAPI schema moves their ``$defs`` there
    (``api.docs``)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    media: dict[str, Any] = {"schema": schema}
    examples = schema.get("examples")
    if examples:
        media["example"] = examples[0]
    return {
        "requestBody": {"required": required, "content": {"application/json": media}},
        "responses": {"415": UNSUPPORTED_MEDIA_TYPE},
    }
