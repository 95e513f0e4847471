"""POST /v1/usage: a batch of metered usage events, each answered on its own."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api import body, operations
from api.deps import ApiKey, Pool
from api.models import ErrorBody, UsageBatch, UsageReceipt

router = APIRouter(prefix="/v1", tags=["usage"])


@router.post(
    "/usage",
    response_model=UsageReceipt,
    summary="Record usage",
    responses={code: {"model": ErrorBody} for code in (400, 401, 413, 422, 503)},
    openapi_extra=body.openapi_body(UsageBatch),
)
async def record_usage(request: Request, api_key: ApiKey, pool: Pool) -> UsageReceipt:
    """Metered usage: up to 1000 events `{id, account_id?, agent_id?, metric, quantity,
    occurred_at}`, each answered on its own (`accepted`, `duplicate` or `rejected` with a
    reason). An id is recorded once per account, so a batch is safe to retry as it was: what
    it already recorded answers `duplicate`. Priced metrics are debited from credits with the
    events, while credits and spend caps last."""
    batch = await body.parse(request, UsageBatch, max_bytes=1 << 20)
    return await operations.record_usage(pool, api_key=api_key, events=batch.events)
