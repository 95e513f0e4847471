"""Risk reviews (admin keys): list, approve, reject; and the thresholds that open them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request

from api import body, money, pages
from api.deps import ApiKey, Pool, ReadPool
from api.models import DecisionIn, ErrorBody, ReviewOut, RiskRuleIn, RiskRuleOut, RiskRulePage
from db import queries

router = APIRouter(prefix="/v1", tags=["risk"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422, 503)
}
LIST_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 422, 503)
}


@router.get(
    "/reviews", response_model=list[ReviewOut], responses=ERRORS, summary="List risk reviews"
)
async def list_reviews(
    api_key: ApiKey, pool: ReadPool, status: Literal["open", "approved", "rejected"] | None = "open"
) -> list[ReviewOut]:
    """Admin keys: risk reviews with this `status` (`open` by default), oldest first, each
    naming the transaction or payment it holds and the rules that opened it."""
    async with pool.connection() as conn:
        rows = await queries.list_reviews(conn, api_key=api_key, status=status)
    return [ReviewOut.model_validate(r, from_attributes=True) for r in rows]


async def _decide(
    review_id: UUID, decision: str, request: Request, api_key: str, pool: Pool
) -> ReviewOut:
    ask = await body.parse(request, DecisionIn, empty_ok=True)
    async with pool.connection() as conn, conn.transaction():
        done = await queries.decide_review(
            conn, api_key=api_key, review_id=review_id, decision=decision, note=ask.note
        )
    return ReviewOut.model_validate(done, from_attributes=True)


@router.post(
    "/reviews/{review_id}/approve",
    response_model=ReviewOut,
    summary="Approve a review",
    responses=ERRORS,
    openapi_extra=body.openapi_body(DecisionIn, required=False),
)
async def approve(review_id: UUID, request: Request, api_key: ApiKey, pool: Pool) -> ReviewOut:
    """Admin keys: the flagged transaction or payment goes ahead: it settles (now, if its
    payment already succeeded) and grants what it paid for. Final; an optional `note` is kept in
    the audit trail."""
    return await _decide(review_id, "approved", request, api_key, pool)


@router.post(
    "/reviews/{review_id}/reject",
    response_model=ReviewOut,
    summary="Reject a review",
    responses=ERRORS,
    openapi_extra=body.openapi_body(DecisionIn, required=False),
)
async def reject(review_id: UUID, request: Request, api_key: ApiKey, pool: Pool) -> ReviewOut:
    """Admin keys: the flagged transaction fails and grants nothing (a refund at Stripe is
    left to the operator). Final; an optional `note` is kept in the audit trail."""
    return await _decide(review_id, "rejected", request, api_key, pool)


@router.get("/risk-rules", response_model=RiskRulePage, responses=LIST_ERRORS)
async def list_risk_rules(
    api_key: ApiKey,
    pool: ReadPool,
    account_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> RiskRulePage:
    """Admin keys: the review thresholds, the defaults (`account_id` null) first, then each
    account's own, by currency; with `account_id`, that account's own rules only."""
    async with pool.connection() as conn:
        rows = await queries.list_risk_rules(
            conn,
            api_key=api_key,
            account=account_id,
            limit=limit,
            after=pages.uuid_key("risk-rules", cursor),
        )
    return RiskRulePage(
        risk_rules=[RiskRuleOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=pages.next_cursor("risk-rules", rows, limit, lambda r: r.id),
    )


@router.put(
    "/risk-rules/{currency}",
    response_model=RiskRuleOut,
    summary="Set review thresholds",
    responses=ERRORS,
    openapi_extra=body.openapi_body(RiskRuleIn),
)
async def set_risk_rule(
    currency: Annotated[str, Path(pattern=r"^[A-Za-z]{3}$", examples=["USD"])],
    request: Request,
    api_key: ApiKey,
    pool: Pool,
    account_id: Annotated[str | None, Query(max_length=200)] = None,
) -> RiskRuleOut:
    """Admin keys: the thresholds in a currency that open a risk review, for one account or
    (without `account_id`) for every account: an amount above `max_amount`, more than
    `velocity_count` in `velocity_seconds`, or an account's first amount above
    `first_amount_max`. A PUT replaces the whole rule."""
    ask = await body.parse(request, RiskRuleIn)
    async with pool.connection() as conn:
        done = await queries.set_risk_rule(
            conn,
            api_key=api_key,
            account=account_id,
            currency=currency.upper(),
            max_amount=await money.as_decimal(conn, currency, ask.max_amount, ask.max_amount_minor),
            velocity_count=ask.velocity_count,
            velocity_seconds=ask.velocity_seconds,
            first_amount_max=await money.as_decimal(
                conn, currency, ask.first_amount_max, ask.first_amount_max_minor
            ),
        )
        minor = await money.minors(
            conn, done.currency, max_amount=done.max_amount, first_amount_max=done.first_amount_max
        )
    return RiskRuleOut.model_validate(asdict(done) | minor)
