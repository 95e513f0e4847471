"""What the HTTP routes and the MCP tools both do, in one place: paying (a Stripe call between
two stored functions), authorizing (with the payment options a refusal carries), recording
usage (each event answered on its own) and reading balances. Every rule is still the
database's; this is only the order of the calls."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter, ValidationError

from api import money
from api.models import (
    ApiError,
    Authorization,
    AuthorizeRequest,
    Balance,
    Balances,
    CaptureRequest,
    HoldOut,
    Payment,
    PaymentCreate,
    PaymentCreated,
    PaymentOption,
    PaymentRequest,
    PaymentRequired,
    Refund,
    RefundCreate,
    UsageEvent,
    UsageReceipt,
    UsageResult,
)
from api.stripe_gateway import StripeGateway
from db import queries
from db.errors import DomainError

PoolT = AsyncConnectionPool[AsyncConnection[Any]]
EVENT = TypeAdapter(UsageEvent)


@dataclass(frozen=True, slots=True)
class Paid:
    payment: PaymentCreated
    replayed: bool


async def create_payment(
    pool: PoolT,
    stripe: StripeGateway,
    *,
    api_key: str,
    ask: PaymentCreate,
    idempotency_key: str,
    wait: float,
) -> Paid:
    """Create a Stripe PaymentIntent and record it, exactly once per idempotency key.

    The key is claimed in PostgreSQL, Stripe is called, and the payment is recorded, all in one
    transaction: a failure anywhere leaves nothing behind. A request whose key is in use by one
    still in progress polls until that one ends (at most ``wait`` seconds), then replays its
    response (or, if it failed, proceeds itself); past that, idempotency_in_progress.
    """
    deadline = time.monotonic() + wait
    pause = 0.02
    while True:
        try:
            return await _create_once(pool, stripe, api_key, ask, idempotency_key)
        except DomainError as exc:
            if exc.code != "idempotency_in_progress" or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


async def _create_once(
    pool: PoolT, stripe: StripeGateway, api_key: str, ask: PaymentCreate, idempotency_key: str
) -> Paid:
    async with pool.connection() as conn, conn.transaction():
        amount = await money.as_minor(conn, ask.currency, ask.amount, ask.amount_minor)
        assert amount is not None  # PaymentCreate requires one of the two
        claim = await queries.begin_payment(
            conn,
            api_key=api_key,
            idempotency_key=idempotency_key,
            account=ask.account_id,
            amount=amount,
            currency=ask.currency.upper(),
            purpose=ask.purpose,
            description=ask.description,
            payment_method=ask.payment_method,
        )
        if claim.replayed:
            if claim.response is None:  # cannot happen: a claim commits with its response
                raise DomainError("conflict", "idempotency_in_progress", "retry this request")
            replay = await money.payment_fields(conn, claim.response)
            return Paid(PaymentCreated.model_validate(replay), replayed=True)
        if claim.stripe_amount is None:  # cannot happen: set for every new claim
            raise DomainError("conflict", "idempotency_in_progress", "retry this request")
        intent = await stripe.create_payment_intent(
            amount=claim.stripe_amount,
            currency=claim.currency,
            payment_method=ask.payment_method,
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
        shown = await money.payment_fields(conn, recorded)
    return Paid(PaymentCreated.model_validate(shown), replayed=False)


async def get_payment(pool: PoolT, *, api_key: str, ref: str) -> Payment:
    """A payment by Tollgate id or Stripe id, with its amount in both forms."""
    async with pool.connection() as conn:
        found = await queries.get_payment(conn, api_key=api_key, ref=ref)
        shown = await money.payment_fields(conn, asdict(found))
    return Payment.model_validate(shown)


@dataclass(frozen=True, slots=True)
class Refunded:
    refund: Refund
    replayed: bool


async def create_refund(
    pool: PoolT,
    stripe: StripeGateway,
    *,
    api_key: str,
    payment: str,
    ask: RefundCreate,
    idempotency_key: str,
    wait: float,
) -> Refunded:
    """Refund (part of) a payment at Stripe, exactly once per idempotency key: claimed in
    PostgreSQL (which refuses what cannot be refunded), asked of Stripe, recorded, in one
    transaction. The money is taken back when Stripe's events say it was refunded. A request
    whose key (or another refund of the payment) is in progress polls as create_payment does."""
    deadline = time.monotonic() + wait
    pause = 0.02
    while True:
        try:
            return await _refund_once(pool, stripe, api_key, payment, ask, idempotency_key)
        except DomainError as exc:
            if exc.code != "idempotency_in_progress" or time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.25)


async def _refund_once(
    pool: PoolT,
    stripe: StripeGateway,
    api_key: str,
    payment: str,
    ask: RefundCreate,
    idempotency_key: str,
) -> Refunded:
    async with pool.connection() as conn, conn.transaction():
        claim = await queries.begin_refund(
            conn,
            api_key=api_key,
            payment=payment,
            idempotency_key=idempotency_key,
            amount=ask.amount,
            amount_minor=ask.amount_minor,
        )
        if claim.replayed:
            if claim.response is None:  # cannot happen: a claim commits with its response
                raise DomainError("conflict", "idempotency_in_progress", "retry this request")
            return Refunded(Refund.model_validate(claim.response), replayed=True)
        if claim.stripe_amount is None:  # cannot happen: set for every new claim
            raise DomainError("conflict", "idempotency_in_progress", "retry this request")
        created = await stripe.create_refund(
            payment_intent=claim.payment_stripe_id,
            amount=claim.stripe_amount,
            metadata={"tollgate_refund_id": str(claim.refund_id)},
            idempotency_key=claim.stripe_idempotency_key,
        )
        recorded = await queries.finish_refund(
            conn,
            api_key=api_key,
            refund_id=claim.refund_id,
            stripe_id=created.id,
            status=created.status,
        )
    return Refunded(Refund.model_validate(recorded), replayed=False)


async def authorize(
    pool: PoolT, *, api_key: str, ask: AuthorizeRequest
) -> Authorization | PaymentRequired:
    """Allowed (with the hold to capture, if credits paid), or the refusal with how to pay."""
    async with pool.connection() as conn:
        return await authorize_on(conn, api_key=api_key, ask=ask)


async def authorize_on(
    conn: AsyncConnection[Any], *, api_key: str, ask: AuthorizeRequest
) -> Authorization | PaymentRequired:
    """``authorize`` on the caller's connection, inside its transaction (x402's paid retry
    claims its payment identifier and places the hold in one transaction)."""
    found = await _authorization_row(conn, api_key=api_key, ask=ask)
    minor = await money.minors(conn, found.currency, remaining=found.remaining)
    if found.allowed:
        return Authorization.model_validate(asdict(found) | minor)
    return _refused(found, ask, minor)


async def _authorization_row(
    conn: AsyncConnection[Any], *, api_key: str, ask: AuthorizeRequest
) -> queries.AuthorizationRow:
    if ask.cost_minor is not None and ask.currency is None:
        raise DomainError(
            "invalid", "currency_required", "cost_minor needs the currency it counts in"
        )
    return await queries.authorize(
        conn,
        api_key=api_key,
        account=ask.account_id,
        action=ask.action,
        cost=await money.as_decimal(conn, ask.currency, ask.cost, ask.cost_minor),
        currency=ask.currency.upper() if ask.currency else None,
        agent=ask.agent_id,
        hold_seconds=ask.hold_seconds,
    )


async def quote_on(
    conn: AsyncConnection[Any], *, api_key: str, ask: AuthorizeRequest
) -> PaymentRequired:
    """What a payment for one run of ``ask`` asks, stated as a refusal, whatever the account
    holds already: the authorization is made in a savepoint that is rolled back, so nothing is
    held and no paid run is used (x402's card retry pays first: it is never let through on
    credits or entitlements it did not buy). A spend cap stays a refusal with no way to pay.
    ``remaining`` is left out: the account's credits are not the payer's."""
    async with conn.transaction(force_rollback=True):
        found = await _authorization_row(conn, api_key=api_key, ask=ask)
    if found.allowed or found.code is None:
        found = replace(
            found,
            allowed=False,
            code="payment_required",
            message=f"pay {found.pay} {found.currency} for one run of {found.action}",
        )
    found = replace(found, remaining=None)
    return _refused(found, ask, {"remaining_minor": None})


def _refused(
    found: queries.AuthorizationRow, ask: AuthorizeRequest, minor: dict[str, Any]
) -> PaymentRequired:
    return PaymentRequired(
        error=ApiError(code=found.code or "payment_required", message=found.message or ""),
        account_id=found.account_id,
        action=found.action,
        price=found.price,
        price_minor=found.price_minor,
        currency=found.currency,
        remaining=found.remaining,
        remaining_minor=minor["remaining_minor"],
        accepts=payment_options(found, ask.account_id),
    )


def payment_options(
    found: queries.AuthorizationRow, admin_account: str | None
) -> list[PaymentOption]:
    """The requests that would entitle the account: pay for this run, or buy credits. Each asks
    for the price rounded up to what Stripe can charge (``pay``, computed by the database):
    never less than Stripe's minimum charge for the currency."""
    if found.code != "payment_required" or found.pay_minor is None or found.currency is None:
        return []
    options = []
    for scheme, purpose, description in (
        (
            "stripe.payment",
            found.action,
            f"pay for one run of {found.action}, then authorize again",
        ),
        (
            "credits",
            "credits",
            f"buy {found.pay} {found.currency} of credits, then authorize again",
        ),
    ):
        payload: dict[str, object] = {
            "amount": found.pay,
            "currency": found.currency.lower(),
            "purpose": purpose,
        }
        if admin_account is not None:
            payload["account_id"] = admin_account
        options.append(
            PaymentOption(
                scheme=scheme,
                description=description,
                amount=found.pay or "",
                amount_minor=found.pay_minor,
                currency=found.currency,
                request=PaymentRequest(
                    method="POST",
                    url="/v1/payments",
                    headers={
                        "Idempotency-Key": f"{purpose}-{uuid.uuid4()}",
                        "Content-Type": "application/json",
                    },
                    body=payload,
                ),
            )
        )
    return options


async def hold(
    pool: PoolT,
    *,
    api_key: str,
    hold_id: uuid.UUID,
    to: Literal["capture", "release"] | None = None,
    ask: CaptureRequest | None = None,
) -> HoldOut:
    """A hold (``to`` None), or captured (``to="capture"``, at ``ask``'s amount) or released,
    with its amounts in both forms."""
    async with pool.connection() as conn:
        if to == "capture":
            ask = ask or CaptureRequest()
            amount = ask.amount
            if ask.amount_minor is not None:  # in the hold's currency
                held = await queries.get_hold(conn, api_key=api_key, hold_id=hold_id)
                amount = await money.as_decimal(conn, held.currency, None, ask.amount_minor)
            found = await queries.capture_hold(
                conn, api_key=api_key, hold_id=hold_id, amount=amount
            )
        elif to == "release":
            found = await queries.release_hold(conn, api_key=api_key, hold_id=hold_id)
        else:
            found = await queries.get_hold(conn, api_key=api_key, hold_id=hold_id)
        minor = await money.minors(
            conn, found.currency, amount=found.amount, captured_amount=found.captured_amount
        )
    return HoldOut.model_validate(asdict(found) | minor)


async def record_usage(pool: PoolT, *, api_key: str, events: list[Any]) -> UsageReceipt:
    """Each event validated on its own (a bad one is rejected, the rest go on), then the valid
    ones recorded in one call; answers in the order sent."""
    results: dict[int, UsageResult] = {}
    sent: list[tuple[int, UsageEvent]] = []
    for index, raw in enumerate(events):
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
                events=[
                    queries.UsageEventV1(
                        e.id, e.account_id, e.agent_id, e.metric, e.quantity, e.occurred_at
                    )
                    for _, e in sent
                ],
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
    ordered = [results[i] for i in range(len(events))]
    return UsageReceipt(
        accepted=sum(r.outcome == "accepted" for r in ordered),
        duplicates=sum(r.outcome == "duplicate" for r in ordered),
        rejected=sum(r.outcome == "rejected" for r in ordered),
        results=ordered,
    )


def _problem(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    return f"invalid_event: {field or 'event'}: {first.get('msg')}"


async def balances(pool: PoolT, *, api_key: str, account: str | None) -> Balances:
    """The account's balances (the key's own account when ``account`` is None)."""
    async with pool.connection() as conn:
        if account is None:
            account = (await queries.whoami(conn, api_key=api_key)).account_id
        rows = await queries.balances(conn, api_key=api_key, account=account)
    return Balances(
        account_id=account, balances=[Balance.model_validate(r, from_attributes=True) for r in rows]
    )
