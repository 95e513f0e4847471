"""Prices of actions and metered metrics (admin keys)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Request

from api import body, money
from api.deps import ApiKey, Pool
from api.models import ActionPriceIn, ActionPriceOut, ErrorBody, MetricPriceIn, MetricPriceOut
from db import queries

router = APIRouter(prefix="/v1", tags=["catalog"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 413, 422, 503)
}
Name = Annotated[
    str, Path(max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:-]*$", examples=["report.generate"])
]


@router.put(
    "/actions/{action}",
    response_model=ActionPriceOut,
    summary="Price an action",
    responses=ERRORS,
    openapi_extra=body.openapi_body(ActionPriceIn),
)
async def set_action_price(
    action: Name, request: Request, api_key: ApiKey, pool: Pool
) -> ActionPriceOut:
    """Admin keys: what one run of an action costs, in `price` (a decimal) or `price_minor`.
    It is the payment a 402 asks for and the credit hold `POST /v1/authorize` places. A PUT
    replaces the price."""
    ask = await body.parse(request, ActionPriceIn)
    async with pool.connection() as conn:
        done = await queries.set_action_price(
            conn,
            api_key=api_key,
            action=action,
            price=await money.required_decimal(conn, ask.currency, ask.price, ask.price_minor),
            currency=ask.currency.upper(),
            description=ask.description,
        )
        minor = await money.minors(conn, done.currency, price=done.price)
    return ActionPriceOut.model_validate(asdict(done) | minor)


@router.put(
    "/metrics/{metric}",
    response_model=MetricPriceOut,
    summary="Price a metric",
    responses=ERRORS,
    openapi_extra=body.openapi_body(MetricPriceIn),
)
async def set_metric_price(
    metric: Name, request: Request, api_key: ApiKey, pool: Pool
) -> MetricPriceOut:
    """Admin keys: the price per unit of a metered metric (a decimal; it may be a fraction of
    a minor unit, "0.00002"), debited from credits as `POST /v1/usage` records it."""
    ask = await body.parse(request, MetricPriceIn)
    async with pool.connection() as conn:
        done = await queries.set_metric_price(
            conn,
            api_key=api_key,
            metric=metric,
            unit_price=ask.unit_price,
            currency=ask.currency.upper(),
        )
    return MetricPriceOut.model_validate(done, from_attributes=True)
