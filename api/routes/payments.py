"""POST /v1/payments and GET /v1/payments/{ref}."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Response
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.deps import ApiKey, Pool, SettingsDep, Stripe
from api.models import ErrorBody, Payment, PaymentCreate, PaymentCreated
from api.stripe_gateway import StripeGateway
from db import queries
from db.errors import DomainError

router = APIRouter(prefix="/v1/payments", tags=["payments"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 402, 404, 409, 422, 502, 503)
}


@router.post("", status_code=201, response_model=PaymentCreated, responses=ERRORS)
async def create_payment(
    body: PaymentCreate,
    api_key: ApiKey,
    pool: Pool,
    stripe: Stripe,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> PaymentCreated:
    """Create a Stripe PaymentIntent and record it, exactly once per Idempotency-Key.

    The key is claimed in PostgreSQL, Stripe is called, and the payment is recorded, all in one
    transaction: a failure anywhere leaves nothing behind. A request whose key is in use by one
    still in progress polls until that one ends, then replays its response (or, if it failed,
    proceeds itself); past the Stripe timeout it gets 409 idempotency_in_progress.
    """
    if idempotency_key is None:
        raise DomainError(
            "invalid", "idempotency_key_required", "send an Idempotency-Key header with each POST"
        )
    deadline = time.monotonic() + settings.stripe_timeout + 2
    pause = 0.02
    while True:
        try:
            return await _create_once(body, api_key, idempotency_key, pool, stripe, response)
        except DomainError as exc:
            if exc.code != "idempotency_in_progress" or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


async def _create_once(
    body: PaymentCreate,
    api_key: str,
    idempotency_key: str,
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    stripe: StripeGateway,
    response: Response,
) -> PaymentCreated:
    async with pool.connection() as conn, conn.transaction():
        claim = await queries.begin_payment(
            conn,
            api_key=api_key,
            idempotency_key=idempotency_key,
            account=body.account_id,
            amount=body.amount,
            currency=body.currency.upper(),
            purpose=body.purpose,
            description=body.description,
            payment_method=body.payment_method,
        )
        if claim.replayed:
            if claim.response is None:  # cannot happen: a claim commits with its response
                raise DomainError("conflict", "idempotency_in_progress", "retry this request")
            response.headers["Idempotent-Replayed"] = "true"
            return PaymentCreated.model_validate(claim.response)
        intent = await stripe.create_payment_intent(
            amount=claim.amount,
            currency=claim.currency,
            payment_method=body.payment_method,
            metadata={
                "tollgate_payment_id": str(claim.payment_id),
                "tollgate_account_id": str(claim.account_uuid),
            },
            idempotency_key=claim.stripe_idempotency_key,
        )
        recorded = await queries.finish_payment(
            conn,
            api_key=api_key,
            payment_id=claim.payment_id,
            stripe_id=intent.id,
            status=intent.status,
            client_secret=intent.client_secret,
        )
    return PaymentCreated.model_validate(recorded)


@router.get("/{ref}", response_model=Payment, responses=ERRORS)
async def get_payment(
    ref: Annotated[str, Path(max_length=255, pattern=r"^[A-Za-z0-9_-]+$")],
    api_key: ApiKey,
    pool: Pool,
) -> Payment:
    """A payment by Tollgate id or Stripe id (pi_...); 404 unless the key may see it."""
    async with pool.connection() as conn:
        found = await queries.get_payment(conn, api_key=api_key, ref=ref)
    return Payment.model_validate(found, from_attributes=True)
