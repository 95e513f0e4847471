"""POST /v1/authorize: may the account run this action now? 200, or 402 with how to pay."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from x402.http.constants import PAYMENT_SIGNATURE_HEADER

from api import body, operations, x402
from api.deps import ApiKey, Pool, Stripe
from api.models import Authorization, AuthorizeRequest, ErrorBody, PaymentRequired

router = APIRouter(prefix="/v1", tags=["gating"])


@router.post(
    "/authorize",
    response_model=Authorization,
    summary="Authorize an action",
    responses={
        402: {"model": PaymentRequired, "description": "not entitled: how to pay, or a spend cap"},
        **{code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503)},
    },
    openapi_extra=body.openapi_body(AuthorizeRequest),
)
async def authorize(request: Request, api_key: ApiKey, pool: Pool, stripe: Stripe) -> JSONResponse:
    """May the account run `action` now? 200 when a current subscription, an unused paid run
    of the action, or its credits entitle it: with credits, the cost is held (`hold_id`), to
    capture with the actual cost or release when the work is done. Otherwise 402:
    `payment_required` with `accepts`, the exact payment requests (method, url, headers, body)
    that would entitle the account, or `spend_cap_exceeded`. Every 402 also carries x402 v2's
    `PAYMENT-REQUIRED` header (docs/X402.md); a retry with `PAYMENT-SIGNATURE` pays as it
    says (a card, or credits) and is answered 200 with `PAYMENT-RESPONSE`."""
    ask = await body.parse(request, AuthorizeRequest)
    signature = request.headers.get(PAYMENT_SIGNATURE_HEADER)
    if signature is not None:
        return await x402.pay(
            pool, stripe, api_key=api_key, ask=ask, signature=signature, url=str(request.url)
        )
    answer = await operations.authorize(pool, api_key=api_key, ask=ask)
    if isinstance(answer, PaymentRequired):
        required = x402.for_authorization(answer, str(request.url))
        return JSONResponse(
            answer.model_dump(mode="json"), status_code=402, headers=x402.required_header(required)
        )
    return JSONResponse(answer.model_dump(mode="json"), status_code=200)
