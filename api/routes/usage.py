"""POST /v1/usage: a batch of metered usage events, each answered on its own."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError

from api import body
from api.deps import ApiKey, Pool
from api.models import ErrorBody, UsageBatch, UsageEvent, UsageReceipt, UsageResult
from db import queries

router = APIRouter(prefix="/v1", tags=["usage"])

EVENT = TypeAdapter(UsageEvent)


def _problem(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    return f"invalid_event: {field or 'event'}: {first.get('msg')}"


@router.post(
    "/usage",
    response_model=UsageReceipt,
    responses={code: {"model": ErrorBody} for code in (400, 401, 413, 422, 503)},
    openapi_extra=body.openapi_body(UsageBatch),
)
async def record_usage(request: Request, api_key: ApiKey, pool: Pool) -> UsageReceipt:
    """Up to 1000 events `{id, account_id?, agent_id?, metric, quantity, occurred_at}`. An id
    is recorded once per account: a retried batch answers `duplicate` for what it already
    recorded. Priced metrics are debited from credits with the events."""
    batch = await body.parse(request, UsageBatch, max_bytes=1 << 20)
    results: dict[int, UsageResult] = {}
    sent: list[tuple[int, UsageEvent]] = []
    for index, raw in enumerate(batch.events):
        try:
            sent.append((index, EVENT.validate_python(raw)))
        except ValidationError as exc:
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            results[index] = UsageResult(
                index=index,
                id=raw_id if isinstance(raw_id, str) else None,
                outcome="rejected",
                reason=_problem(exc),
            )
    if sent:
        async with pool.connection() as conn:
            answered = await queries.record_usage(
                conn,
                api_key=api_key,
                ids=[e.id for _, e in sent],
                accounts=[e.account_id for _, e in sent],
                agents=[e.agent_id for _, e in sent],
                metrics=[e.metric for _, e in sent],
                quantities=[e.quantity for _, e in sent],
                occurred_at=[e.occurred_at for _, e in sent],
            )
        for (index, _), row in zip(sent, answered, strict=True):
            results[index] = UsageResult(
                index=index,
                id=row.id,
                outcome=row.outcome,
                reason=row.reason,
                cost=row.cost,
                currency=row.currency,
            )
    ordered = [results[i] for i in range(len(batch.events))]
    return UsageReceipt(
        accepted=sum(r.outcome == "accepted" for r in ordered),
        duplicates=sum(r.outcome == "duplicate" for r in ordered),
        rejected=sum(r.outcome == "rejected" for r in ordered),
        results=ordered,
    )
