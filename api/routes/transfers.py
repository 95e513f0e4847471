"""POST /v1/transfers: one account's balance to another's, idempotent on Idempotency-Key;
POST /v1/transfers/batch: many transfers at once, all or none."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api import body, money
from api.deps import ApiKey, IdempotencyKeyHeader, Pool, require_idempotency_key
from api.models import ErrorBody, Transfer, TransferBatch, TransferBatchCreate, TransferCreate
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


@router.post(
    "/batch",
    status_code=201,
    response_model=TransferBatch,
    summary="Transfer in a batch, all or none",
    responses={code: {"model": ErrorBody} for code in (400, 401, 402, 404, 409, 413, 422, 503)},
    openapi_extra=body.openapi_body(TransferBatchCreate),
)
async def create_transfer_batch(
    request: Request,
    response: Response,
    api_key: ApiKey,
    pool: Pool,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TransferBatch:
    """Up to 1000 transfers, each as `POST /v1/transfers` takes one, in one call: all are made,
    in order, or none. Each is a posting of its own; one refused transfer refuses the batch
    with that transfer's error, its message starting `transfer N:` (N from 1). Once per
    Idempotency-Key (at most 250 characters here): the same batch again answers the first
    postings with `Idempotent-Replayed: true`, another batch under the key 409
    `idempotency_key_reused`."""
    key = require_idempotency_key(idempotency_key)
    batch = await body.parse(request, TransferBatchCreate)
    items = [
        queries.TransferItemV1(
            from_account=t.from_account_id,
            to_account=t.to_account_id,
            amount=t.amount,
            amount_minor=t.amount_minor,
            currency=t.currency.upper(),
        )
        for t in batch.transfers
    ]
    async with pool.connection() as conn:
        done = await queries.transfer_batch(
            conn, api_key=api_key, transfers=items, idempotency_key=key
        )
    if done and done[0].replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return TransferBatch(
        transfers=[
            Transfer(
                posting_id=d.posting_id,
                from_account_id=d.from_account,
                to_account_id=d.to_account,
                amount=d.amount,
                amount_minor=d.amount_minor,
                currency=d.currency,
                created_at=d.created_at,
            )
            for d in done
        ]
    )
