"""Prices of actions and metered metrics: set by admin keys, read by every key."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Request

from api import body, money, pages
from api.deps import ApiKey, Pool, ReadPool
from api.models import (
    ActionPage,
    ActionPriceIn,
    ActionPriceOut,
    ErrorBody,
    MetricPriceIn,
    MetricPriceOut,
    MetricPricePage,
)
from db import queries

router = APIRouter(prefix="/v1", tags=["catalog"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 413, 422, 503)
}
READ_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 422, 503)
}
Name = Annotated[
    str, Path(max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:-]*$", examples=["report.generate"])
]


@router.get("/actions", response_model=ActionPage, responses=READ_ERRORS)
async def list_actions(
    api_key: ApiKey,
    pool: ReadPool,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> ActionPage:
    """Every priced action, by name: what one run costs. Any key may read prices."""
    async with pool.connection() as conn:
        rows = await queries.list_actions(
            conn, api_key=api_key, limit=limit, after=pages.key("actions", cursor)
        )
    return ActionPage(
        actions=[ActionPriceOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=pages.next_cursor("actions", rows, limit, lambda r: r.action),
    )


@router.get("/metrics", response_model=MetricPricePage, responses=READ_ERRORS)
async def list_metric_prices(
    api_key: ApiKey,
    pool: ReadPool,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> MetricPricePage:
    """Every metered metric with a price, by name: its price per unit, exactly (it may be a
    fraction of a minor unit). Any key may read prices."""
    async with pool.connection() as conn:
        rows = await queries.list_metric_prices(
            conn, api_key=api_key, limit=limit, after=pages.key("metrics", cursor)
        )
    return MetricPricePage(
        metrics=[MetricPriceOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=pages.next_cursor("metrics", rows, limit, lambda r: r.metric),
    )


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
