"""FastAPI dependencies, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.config import Settings
from api.reads import READ_AFTER_HEADER, Reads
from api.stripe_gateway import StripeGateway
from db.errors import DomainError


# Coroutines, though they only read app.state: FastAPI runs a plain-function dependency in its
# thread pool, and that hand-off cost more than the rest of a simple route's Python.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _pool(request: Request) -> AsyncConnectionPool[AsyncConnection[Any]]:
    pool: AsyncConnectionPool[AsyncConnection[Any]] = request.app.state.pool
    return pool


async def _stripe(request: Request) -> StripeGateway:
    gateway: StripeGateway = request.app.state.stripe
    return gateway


def bearer_key(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; whether it is valid is checked by
    the database."""
    if not authorization:
        raise DomainError(
            "unauthorized", "missing_api_key", "send the key as Authorization: Bearer <key>"
        )
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 200:
        raise DomainError(
            "unauthorized", "malformed_authorization", "expected Authorization: Bearer <key>"
        )
    return key


class BearerKey(HTTPBearer):
    """The API key, declared in the OpenAPI schema as HTTP bearer authentication (so /docs has
    an Authorize button that sends it), and read with Tollgate's own errors rather than
    FastAPI's 403."""

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        key = bearer_key(request.headers.get("authorization"))
        # The key a route acted for: api.reads.Headers remembers its write position, once the
        # answer shows that the database took the key (not 401/403) and may have written.
        request.state.api_key = key
        return key


BEARER = BearerKey(
    scheme_name="bearer",
    bearerFormat="tg_...",
    description="An API key (`tollgate keys create`, or the one `make dev` prints), sent as "
    "`Authorization: Bearer tg_...`. It acts for its own account; an admin key for any.",
)

# The routes that take an Idempotency-Key, as /openapi.json names them.
IDEMPOTENT_ROUTES = (
    "POST /v1/payments",
    "POST /v1/payments/{ref}/refunds",
    "POST /v1/transfers",
    "POST /v1/transfers/batch",
)


def require_idempotency_key(key: str | None) -> str:
    """The Idempotency-Key header, or 400 idempotency_key_required naming the routes that need
    one."""
    if key is None:
        routes = ", ".join(IDEMPOTENT_ROUTES[:-1]) + " and " + IDEMPOTENT_ROUTES[-1]
        raise DomainError(
            "invalid",
            "idempotency_key_required",
            f"send an Idempotency-Key header: {routes} need one (a unique string per "
            "operation, the same one when retrying it)",
        )
    return key


async def _read_pool(
    request: Request, api_key: Annotated[str, Depends(BEARER)]
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """The pool a GET reads from: the standby's (DATABASE_READ_URL) once it shows what this
    caller wrote, else the primary's (api/reads.py), answered as Tollgate-Read-From."""
    reads: Reads | None = request.app.state.reads
    if reads is None:
        pool: AsyncConnectionPool[AsyncConnection[Any]] = request.app.state.pool
        return pool
    pool = await reads.pool_for(api_key, request.headers.get(READ_AFTER_HEADER))
    # Answered by api.reads.Headers, on errors as well.
    request.state.read_from = "standby" if pool is reads.standby else "primary"
    return pool


SettingsDep = Annotated[Settings, Depends(_settings)]
Pool = Annotated[AsyncConnectionPool[AsyncConnection[Any]], Depends(_pool)]
# For the GET routes that take a key: the standby when one is configured and has caught up.
ReadPool = Annotated[AsyncConnectionPool[AsyncConnection[Any]], Depends(_read_pool)]
Stripe = Annotated[StripeGateway, Depends(_stripe)]
ApiKey = Annotated[str, Depends(BEARER)]
# Optional in the signature so that a missing key answers 400 idempotency_key_required (through
# require_idempotency_key), not a validation error.
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Required: a unique string per operation (a UUID, or your own id such as "
        "`order-1042-pay`). Retry with the same key and the same body: the first answer is "
        "replayed (`Idempotent-Replayed: true`) and nothing is done twice; the same key with "
        "another body is 409 `idempotency_key_reused`.",
        examples=["order-1042-pay"],
    ),
]
