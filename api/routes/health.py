"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Pool
from api.models import ErrorBody, Health
from db import queries

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}})
async def readyz(pool: Pool) -> Health:
    """The database answers (503 with Retry-After when it does not)."""
    async with pool.connection() as conn:
        await queries.ping(conn)
    return Health(status="ready")
