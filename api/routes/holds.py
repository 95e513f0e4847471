"""Holds on credits: list and read them, capture the actual cost, or release."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request

from api import body, money, operations, pages
from api.deps import ApiKey, Pool, ReadPool
from api.models import CaptureRequest, ErrorBody, HoldOut, HoldPage, HoldStatus
from db import queries

router = APIRouter(prefix="/v1/holds", tags=["gating"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 503)
}
LIST_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 404, 422, 503)
}


@router.get("", response_model=HoldPage, responses=LIST_ERRORS)
async def list_holds(
    api_key: ApiKey,
    pool: ReadPool,
    account_id: Annotated[
        str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    ] = None,
    status: HoldStatus | None = None,
    action: Annotated[str | None, Query(max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")] = None,
    agent_id: Annotated[
        str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    ] = None,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> HoldPage:
    """The account's holds (the key's own; admin keys name one with `account_id`), newest
    first, optionally of one `status` (an active hold past its expiry is `expired`), `action`
    or `agent_id`."""
    async with pool.connection() as conn:
        rows = await queries.list_holds(
            conn,
            api_key=api_key,
            account=account_id,
            status=status,
            action=action,
            agent=agent_id,
            limit=limit,
            after=pages.uuid_key("holds", cursor),
        )
        holds = [
            HoldOut.model_validate(
                asdict(r)
                | await money.minors(
                    conn, r.currency, amount=r.amount, captured_amount=r.captured_amount
                )
            )
            for r in rows
        ]
    return HoldPage(
        holds=holds, next_cursor=pages.next_cursor("holds", rows, limit, lambda r: r.id)
    )


@router.get("/{hold_id}", response_model=HoldOut, responses=ERRORS, summary="Read a hold")
async def get_hold(hold_id: UUID, api_key: ApiKey, pool: ReadPool) -> HoldOut:
    """A hold that `POST /v1/authorize` placed on credits: its amount, what was captured, and
    its status (`active`, `captured`, `released` or `expired`)."""
    return await operations.hold(pool, api_key=api_key, hold_id=hold_id)


@router.post(
    "/{hold_id}/capture",
    response_model=HoldOut,
    summary="Capture a hold",
    responses=ERRORS,
    openapi_extra=body.openapi_body(CaptureRequest, required=False),
)
async def capture_hold(hold_id: UUID, request: Request, api_key: ApiKey, pool: Pool) -> HoldOut:
    """Take the actual cost (at most the hold, unless the account may go negative) from the
    credits and free the rest. Without a body the whole hold is captured. `amount` is a
    decimal ("0.30"), `amount_minor` minor units of the hold's currency (30): one or neither.
    Capturing the same amount again answers the captured hold and spends nothing more."""
    ask = await body.parse(request, CaptureRequest, empty_ok=True)
    return await operations.hold(pool, api_key=api_key, hold_id=hold_id, to="capture", ask=ask)


@router.post(
    "/{hold_id}/release", response_model=HoldOut, responses=ERRORS, summary="Release a hold"
)
async def release_hold(hold_id: UUID, api_key: ApiKey, pool: Pool) -> HoldOut:
    """Cancel an active hold: nothing is spent and the credits are free again. Releasing a
    released or expired hold answers it as it is; a captured one is 409."""
    return await operations.hold(pool, api_key=api_key, hold_id=hold_id, to="release")
