"""POST /v1/authorize: may the account run this action now? 200, or 402 with how to pay."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import body
from api.deps import ApiKey, Pool
from api.models import (
    ApiError,
    Authorization,
    AuthorizeRequest,
    ErrorBody,
    PaymentOption,
    PaymentRequest,
    PaymentRequired,
)
from db import queries

router = APIRouter(prefix="/v1", tags=["gating"])


def payment_options(found: queries.Authorization, admin_account: str | None) -> list[PaymentOption]:
    """The requests that would entitle the account: pay for this run, or buy credits."""
    if found.code != "payment_required" or found.price_minor is None or found.currency is None:
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
            f"buy {found.price} {found.currency} of credits, then authorize again",
        ),
    ):
        payload: dict[str, object] = {
            "amount": found.price_minor,
            "currency": found.currency.lower(),
            "purpose": purpose,
        }
        if admin_account is not None:
            payload["account_id"] = admin_account
        options.append(
            PaymentOption(
                scheme=scheme,
                description=description,
                amount=found.price or "",
                amount_minor=found.price_minor,
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


@router.post(
    "/authorize",
    response_model=Authorization,
    responses={
        402: {"model": PaymentRequired, "description": "not entitled: how to pay, or a spend cap"},
        **{code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503)},
    },
    openapi_extra=body.openapi_body(AuthorizeRequest),
)
async def authorize(request: Request, api_key: ApiKey, pool: Pool) -> JSONResponse:
    """Entitled by a subscription, an unused payment for the action, or credits (a hold of the
    cost, to capture or release when done). Otherwise 402: `payment_required` with the exact
    payment requests that would entitle the account, or `spend_cap_exceeded`."""
    ask = await body.parse(request, AuthorizeRequest)
    async with pool.connection() as conn:
        found = await queries.authorize(
            conn,
            api_key=api_key,
            account=ask.account_id,
            action=ask.action,
            cost=ask.cost,
            currency=ask.currency.upper() if ask.currency else None,
            agent=ask.agent_id,
            hold_seconds=ask.hold_seconds,
        )
    if found.allowed:
        answer = Authorization.model_validate(found, from_attributes=True)
        return JSONResponse(answer.model_dump(mode="json"))
    refusal = PaymentRequired(
        error=ApiError(code=found.code or "payment_required", message=found.message or ""),
        account_id=found.account_id,
        action=found.action,
        price=found.price,
        currency=found.currency,
        remaining=found.remaining,
        accepts=payment_options(found, ask.account_id),
    )
    return JSONResponse(refusal.model_dump(mode="json"), status_code=402)
