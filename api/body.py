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


async def parse(
    request: Request, model: type[M], *, max_bytes: int = MAX_BODY_BYTES, empty_ok: bool = False
) -> M:
    """The body as ``model``; an empty body reads as {} when ``empty_ok``."""
    body = await request.body()
    if len(body) > max_bytes:
        raise DomainError(
            "too_large", "payload_too_large", f"the body is larger than {max_bytes} bytes"
        )
    if empty_ok and not body.strip():
        body = b"{}"
    else:
        given = request.headers.get("content-type", "")
        if body and not _is_json(given):
            shown = f"it is {given[:100]}" if given else "it has none"
            raise DomainError(
                "unsupported_media_type",
                "unsupported_media_type",
                f"send the body as JSON with Content-Type: application/json ({shown})",
            )
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
