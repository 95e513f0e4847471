"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Pool
from api.models import ErrorBody, Health
from db import queries

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """200 `{"status": "ok"}` while the process runs; the database is not asked (see
    /readyz)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses={503: {"model": ErrorBody}},
)
async def readyz(pool: Pool) -> Health:
    """200 `{"status": "ready"}` when the database answers; 503 `database_unavailable` with
    Retry-After when it does not."""
    async with pool.connection() as conn:
        await queries.ping(conn)
    return Health(status="ready")
