"""POST /v1/transfers: one account's balance to another's, idempotent on Idempotency-Key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from api import body, money
from api.deps import ApiKey, Pool
from api.models import ErrorBody, Transfer, TransferCreate
from db import queries
from db.errors import DomainError

router = APIRouter(prefix="/v1/transfers", tags=["ledger"])


@router.post(
    "",
    status_code=201,
    response_model=Transfer,
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 503)},
    openapi_extra=body.openapi_body(TransferCreate),
)
async def create_transfer(
    request: Request,
    response: Response,
    api_key: ApiKey,
    pool: Pool,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Transfer:
    """Move money between accounts in one balanced posting. 409 insufficient_funds when the
    sender's balance may not go negative and is too low."""
    if idempotency_key is None:
        raise DomainError(
            "invalid", "idempotency_key_required", "send an Idempotency-Key header with each POST"
        )
    new = await body.parse(request, TransferCreate)
    async with pool.connection() as conn:
        done = await queries.transfer(
            conn,
            api_key=api_key,
            from_account=new.from_account_id,
            to_account=new.to_account_id,
            amount=await money.required_decimal(conn, new.currency, new.amount, new.amount_minor),
            currency=new.currency.upper(),
            idempotency_key=idempotency_key,
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
