"""JSON bodies whose numbers must stay exact.

FastAPI parses JSON numbers as floats; 1250.505 would arrive as the nearest double. Routes that
take decimal amounts read the body here instead: numbers become Decimal, NaN and Infinity are
refused, and the model validates as usual (errors answer like any other 422).
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


def openapi_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The requestBody entry for a route that parses its body with ``parse``."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
