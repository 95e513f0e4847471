"""POST /v1/usage: a batch of metered usage events, each answered on its own."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter, ValidationError

from api import body, operations
from api.deps import ApiKey, Pool
from api.models import ErrorBody, UsageBatch, UsageEvent, UsageReceipt
from db import queries

router = APIRouter(prefix="/v1", tags=["usage"])

# A whole batch validated in one call: about half the time of one call per event.
EVENTS = TypeAdapter(list[UsageEvent])


@router.post(
    "/usage",
    response_model=UsageReceipt,
    summary="Record usage",
    responses={code: {"model": ErrorBody} for code in (400, 401, 413, 422, 503)},
    openapi_extra=body.openapi_body(UsageBatch),
)
async def record_usage(request: Request, api_key: ApiKey, pool: Pool) -> Response | UsageReceipt:
    """Metered usage: up to 1000 events `{id, account_id?, agent_id?, metric, quantity,
    occurred_at}`, each answered on its own (`accepted`, `duplicate` or `rejected` with a
    reason). An id is recorded once per account, so a batch is safe to retry as it was: what
    it already recorded answers `duplicate`. Priced metrics are debited from credits with the
    events, while credits and spend caps last."""
    batch = await body.parse(request, UsageBatch, max_bytes=1 << 20)
    try:
        events = EVENTS.validate_python(batch.events)
    except ValidationError:
        # An event is malformed: each is checked on its own, and the bad ones rejected with
        # what is wrong while the rest are recorded.
        return await operations.record_usage(pool, api_key=api_key, events=batch.events)
    # Every event well-formed (the usual batch): the database answers with the receipt's JSON.
    # One list per field (zip transposes the events in C): psycopg sends each as one array.
    rows = [(e.id, e.account_id, e.agent_id, e.metric, e.quantity, e.occurred_at) for e in events]
    columns = [list(field) for field in zip(*rows, strict=True)] if rows else [[]] * 6
    ids, accounts, agents, metrics, quantities, occurred_at = columns
    async with pool.connection() as conn:
        receipt = await queries.record_usage_receipt(
            conn,
            api_key=api_key,
            ids=ids,
            accounts=accounts,
            agents=agents,
            metrics=metrics,
            quantities=quantities,
            occurred_at=occurred_at,
        )
    return Response(receipt, media_type="application/json")
