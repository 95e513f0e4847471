"""FastAPI dependencies, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.config import Settings
from api.stripe_gateway import StripeGateway
from db.errors import DomainError


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> AsyncConnectionPool[AsyncConnection[Any]]:
    pool: AsyncConnectionPool[AsyncConnection[Any]] = request.app.state.pool
    return pool


def _stripe(request: Request) -> StripeGateway:
    gateway: StripeGateway = request.app.state.stripe
    return gateway


def _api_key(authorization: Annotated[str | None, Header()] = None) -> str:
    """The bearer key; whether it is valid is checked by the database."""
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


SettingsDep = Annotated[Settings, Depends(_settings)]
Pool = Annotated[AsyncConnectionPool[AsyncConnection[Any]], Depends(_pool)]
Stripe = Annotated[StripeGateway, Depends(_stripe)]
ApiKey = Annotated[str, Depends(_api_key)]
