"""POST /v1/transfers: one account's balance to another's, idempotent on Idempotency-Key."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api import body, money
from api.deps import ApiKey, IdempotencyKeyHeader, Pool, require_idempotency_key
from api.models import ErrorBody, Transfer, TransferCreate
from db import queries

router = APIRouter(prefix="/v1/transfers", tags=["ledger"])


@router.post(
    "",
    status_code=201,
    response_model=Transfer,
    summary="Transfer between accounts",
    responses={code: {"model": ErrorBody} for code in (400, 401, 402, 404, 409, 413, 422, 503)},
    openapi_extra=body.openapi_body(TransferCreate),
)
async def create_transfer(
    request: Request,
    response: Response,
    api_key: ApiKey,
    pool: Pool,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Transfer:
    """Move money from one account's balance (the key's own, unless an admin key names
    `from_account_id`) to another's in one balanced posting, once per Idempotency-Key. 409
    `insufficient_funds` when the sender's balance (less holds, plus its overdraft limit) is
    too low, 402 `spend_cap_exceeded` past the sender's cap."""
    key = require_idempotency_key(idempotency_key)
    new = await body.parse(request, TransferCreate)
    async with pool.connection() as conn:
        done = await queries.transfer(
            conn,
            api_key=api_key,
            from_account=new.from_account_id,
            to_account=new.to_account_id,
            amount=await money.required_decimal(conn, new.currency, new.amount, new.amount_minor),
            currency=new.currency.upper(),
            idempotency_key=key,
        )
        amount_minor = await money.minor(conn, done.currency, done.amount)
    if done.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return Transfer(
        posting_id=done.posting_id,
        from_account_id=done.from_account,
        to_account_id=done.to_account,
        amount=done.amount,
        amount_minor=amount_minor,
        currency=done.currency,
        created_at=done.created_at,
    )
