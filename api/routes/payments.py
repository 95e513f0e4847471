"""POST /v1/payments and GET /v1/payments/{ref}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from api.deps import KeyHash, Pool, Stripe
from api.models import ErrorBody, Payment, PaymentCreate, PaymentCreated
from db import queries
from db.errors import DomainError

router = APIRouter(prefix="/v1/payments", tags=["payments"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 402, 404, 409, 422, 502, 503)
}


@router.post("", status_code=201, response_model=PaymentCreated, responses=ERRORS)
async def create_payment(
    body: PaymentCreate,
    key_hash: KeyHash,
    pool: Pool,
    stripe: Stripe,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> PaymentCreated:
    """Create a Stripe PaymentIntent and record it, exactly once per Idempotency-Key.

    The key is claimed in PostgreSQL, Stripe is called, and the payment is recorded, all in one
    transaction: a failure anywhere leaves nothing behind, and a concurrent request with the
    same key waits for the first and then gets its response.
    """
    if idempotency_key is None:
        raise DomainError(
            "invalid", "idempotency_key_required", "send an Idempotency-Key header with each POST"
        )
    async with pool.connection() as conn, conn.transaction():
        claim = await queries.begin_payment(
            conn,
            key_hash=key_hash,
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
            key_hash=key_hash,
            payment_id=claim.payment_id,
            stripe_id=intent.id,
            status=intent.status,
            client_secret=intent.client_secret,
        )
    return PaymentCreated.model_validate(recorded)


@router.get("/{ref}", response_model=Payment, responses=ERRORS)
async def get_payment(
    ref: Annotated[str, Path(max_length=255, pattern=r"^[A-Za-z0-9_-]+$")],
    key_hash: KeyHash,
    pool: Pool,
) -> Payment:
    """A payment by Tollgate id or Stripe id (pi_...); 404 unless the key may see it."""
    async with pool.connection() as conn:
        found = await queries.get_payment(conn, key_hash=key_hash, ref=ref)
    return Payment.model_validate(found, from_attributes=True)
