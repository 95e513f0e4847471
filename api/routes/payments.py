"""POST and GET /v1/payments, GET /v1/payments/{ref} and POST /v1/payments/{ref}/refunds."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from api import body, money, operations, pages
from api.deps import (
    ApiKey,
    IdempotencyKeyHeader,
    Pool,
    ReadPool,
    SettingsDep,
    Stripe,
    require_idempotency_key,
)
from api.models import (
    ErrorBody,
    Payment,
    PaymentCreate,
    PaymentCreated,
    PaymentPage,
    PaymentRead,
    PaymentStatus,
    Refund,
    RefundCreate,
)
from db import queries

router = APIRouter(prefix="/v1/payments", tags=["payments"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 402, 404, 409, 422, 502, 503)
}
LIST_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 404, 422, 503)
}
PaymentRef = Annotated[
    str,
    Path(
        max_length=255,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Tollgate's payment id, or Stripe's PaymentIntent id (pi_...)",
        examples=["pi_3QxYz2AbCdEf"],
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=PaymentCreated,
    summary="Create a payment",
    responses=ERRORS,
    openapi_extra=body.openapi_body(PaymentCreate),
)
async def create_payment(
    request: Request,
    api_key: ApiKey,
    pool: Pool,
    stripe: Stripe,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> PaymentCreated:
    """Create a Stripe PaymentIntent and record it, exactly once per Idempotency-Key.

    The key is claimed in PostgreSQL, Stripe is called, and the payment is recorded, all in one
    transaction: a failure anywhere leaves nothing behind. A request whose key is in use by one
    still in progress polls until that one ends, then replays its response (or, if it failed,
    proceeds itself); past the Stripe timeout it gets 409 idempotency_in_progress.
    `amount` is a decimal in the currency's units ("12.50" or 12.50, read exactly), or
    `amount_minor` an integer of minor units (1250): one of the two. Confirm the payment with
    its `client_secret` (Stripe.js or an SDK); its status follows Stripe's webhooks.
    """
    ask = await body.parse(request, PaymentCreate)
    key = require_idempotency_key(idempotency_key)
    paid = await operations.create_payment(
        pool,
        stripe,
        api_key=api_key,
        ask=ask,
        idempotency_key=key,
        wait=settings.stripe_timeout + 2,
    )
    if paid.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return paid.payment


@router.get("", response_model=PaymentPage, responses=LIST_ERRORS, summary="List payments")
async def list_payments(
    api_key: ApiKey,
    pool: ReadPool,
    account_id: Annotated[
        str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    ] = None,
    status: PaymentStatus | None = None,
    purpose: Annotated[
        str | None, Query(max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")
    ] = None,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> PaymentPage:
    """The account's payments (the key's own; admin keys name one with `account_id`), newest
    first, optionally of one `status` or `purpose`."""
    async with pool.connection() as conn:
        rows = await queries.list_payments(
            conn,
            api_key=api_key,
            account=account_id,
            status=status,
            purpose=purpose,
            limit=limit,
            after=pages.uuid_key("payments", cursor),
        )
        payments = [
            Payment.model_validate(await money.payment_fields(conn, asdict(r))) for r in rows
        ]
    return PaymentPage(
        payments=payments, next_cursor=pages.next_cursor("payments", rows, limit, lambda r: r.id)
    )


@router.get("/{ref}", response_model=PaymentRead, responses=ERRORS, summary="Read a payment")
async def get_payment(ref: PaymentRef, api_key: ApiKey, pool: ReadPool) -> PaymentRead:
    """A payment by Tollgate id or Stripe id (pi_...), with its status as the Stripe events
    applied so far made it, and `events_received`: how many more of its events were received
    and are waiting to be applied (webhooks store first, the applier applies within moments).
    404 unless the key may see it."""
    async with pool.connection() as conn:
        found = await queries.get_payment_with_events(conn, api_key=api_key, ref=ref)
        shown = await money.payment_fields(conn, asdict(found))
    return PaymentRead.model_validate(shown)


@router.post(
    "/{ref}/refunds",
    status_code=201,
    response_model=Refund,
    summary="Refund a payment",
    responses=ERRORS | {403: {"model": ErrorBody}},
    openapi_extra=body.openapi_body(RefundCreate, required=False),
)
async def create_refund(
    ref: PaymentRef,
    request: Request,
    api_key: ApiKey,
    pool: Pool,
    stripe: Stripe,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Refund:
    """Admin keys: refund (part of) a succeeded payment at Stripe, once per Idempotency-Key.

    `amount` (a decimal, "2.50") or `amount_minor` (250), or neither for all that is not
    refunded yet. Refused before Stripe is called: more than is left (422
    refund_exceeds_payment), a payment not succeeded or refunded in full (409
    payment_not_refundable), a disputed one (409 payment_disputed). The credits or the paid run
    it bought are taken back when Stripe's events report the refund.
    """
    ask = await body.parse(request, RefundCreate, empty_ok=True)
    key = require_idempotency_key(idempotency_key)
    refunded = await operations.create_refund(
        pool,
        stripe,
        api_key=api_key,
        payment=ref,
        ask=ask,
        idempotency_key=key,
        wait=settings.stripe_timeout + 2,
    )
    if refunded.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return refunded.refund
