"""Accounts: who a key is, can-continue, balances, usage, spend caps, wallets, keys, events."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from api import body, money, operations, pages, x402
from api.deps import ApiKey, Pool, ReadPool
from api.models import (
    ApiError,
    ApiKeyOut,
    ApiKeyPage,
    Balances,
    Continuation,
    ErrorBody,
    Event,
    EventPage,
    Identity,
    SpendCapIn,
    SpendCapOut,
    SpendCapPage,
    UsageReport,
    UsageRow,
    Wallet,
    WalletIn,
    WalletOut,
    WalletPage,
)
from db import queries

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
me_router = APIRouter(prefix="/v1", tags=["accounts"])

AccountId = Annotated[
    str,
    Path(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$", examples=["dev_account"]),
]
READ_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 404, 422, 503)
}


@me_router.get(
    "/me", response_model=Identity, summary="Who am I", responses={401: {"model": ErrorBody}}
)
async def whoami(api_key: ApiKey, pool: ReadPool) -> Identity:
    """The key's account, the key's id, and whether it is an admin key (which may act for any
    account)."""
    async with pool.connection() as conn:
        found = await queries.whoami(conn, api_key=api_key)
    return Identity.model_validate(found, from_attributes=True)


@router.get(
    "/{account_id}/can-continue",
    response_model=Continuation,
    summary="May the agent continue?",
    responses={
        402: {
            "model": Continuation,
            "description": "the account must pay before continuing",
            "content": {
                "application/json": {
                    "example": {
                        "allowed": False,
                        "status": "requires_payment_method",
                        "payment_id": "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f",
                        "account_id": "dev_account",
                        "purpose": "report.generate",
                        "error": {
                            "code": "payment_required",
                            "message": "the newest payment is requires_payment_method, "
                            "not succeeded",
                        },
                    }
                }
            },
        },
        401: {"model": ErrorBody},
        404: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
)
async def can_continue(
    request: Request,
    account_id: AccountId,
    api_key: ApiKey,
    pool: ReadPool,
    purpose: Annotated[
        str | None, Query(max_length=100, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")
    ] = None,
) -> JSONResponse:
    """200 `allowed: true` when the account's newest payment (for `purpose`, if given)
    succeeded; otherwise 402 `allowed: false` with that payment's status (`under_review` while
    a risk review holds it, null when there is none). A 402 also carries x402 v2's
    `PAYMENT-REQUIRED` header."""
    async with pool.connection() as conn:
        found = await queries.can_continue(
            conn, api_key=api_key, account=account_id, purpose=purpose
        )
    answer = Continuation.model_validate(found, from_attributes=True)
    if not answer.allowed:
        answer.error = ApiError(
            code="payment_required",
            message="no succeeded payment"
            if answer.status is None
            else "the newest payment is held for risk review"
            if answer.status == "under_review"
            else f"the newest payment is {answer.status}, not succeeded",
        )
    return JSONResponse(
        answer.model_dump(mode="json", exclude_none=False),
        status_code=200 if answer.allowed else 402,
        headers=None
        if answer.allowed
        else x402.required_header(x402.for_continuation(answer, str(request.url))),
    )


@router.get(
    "/{account_id}/balances",
    response_model=Balances,
    summary="Account balances",
    responses={code: {"model": ErrorBody} for code in (401, 404, 503)},
)
async def balances(account_id: AccountId, api_key: ApiKey, pool: ReadPool) -> Balances:
    """The account's ledger balances, one per ledger account and currency: `main` is its
    credits; `debt` (negative) what it owes after a refund of spent credits. Amounts come as a
    decimal string and in minor units."""
    return await operations.balances(pool, api_key=api_key, account=account_id)


@router.get(
    "/{account_id}/usage",
    response_model=UsageReport,
    summary="Usage report",
    responses={code: {"model": ErrorBody} for code in (401, 404, 422, 503)},
)
async def usage_report(
    account_id: AccountId,
    api_key: ApiKey,
    pool: ReadPool,
    metric: Annotated[str | None, Query(max_length=100, pattern=r"^[a-z][a-z0-9_.:-]*$")] = None,
    period: Literal["day", "month"] = "day",
    start: Annotated[dt.datetime | None, Query(alias="from")] = None,
    end: Annotated[dt.datetime | None, Query(alias="to")] = None,
) -> UsageReport:
    """Recorded usage per metric and UTC day or month (`period`), optionally for one
    `metric` and between `from` and `to`: the number of events, the total and largest
    quantity, and what it cost."""
    async with pool.connection() as conn:
        rows = await queries.usage(
            conn,
            api_key=api_key,
            account=account_id,
            metric=metric,
            period=period,
            start=start,
            end=end,
        )
    return UsageReport(
        account_id=account_id,
        period=period,
        rows=[UsageRow.model_validate(r, from_attributes=True) for r in rows],
    )


@router.put(
    "/{account_id}/spend-caps",
    response_model=SpendCapOut,
    summary="Set a spend cap",
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 422, 503)},
    openapi_extra=body.openapi_body(SpendCapIn),
)
async def set_spend_cap(
    account_id: AccountId, request: Request, api_key: ApiKey, pool: Pool
) -> SpendCapOut:
    """Admin keys: what the account (or one agent of it, `agent_id`) may spend from its
    credits per UTC day or month. Past `hard_limit` holds, usage and transfers are refused
    with 402 `spend_cap_exceeded`; at `soft_pct` percent a `spend.threshold_reached` event is
    announced once per period. A PUT replaces the cap."""
    ask = await body.parse(request, SpendCapIn)
    async with pool.connection() as conn:
        done = await queries.set_spend_cap(
            conn,
            api_key=api_key,
            account=account_id,
            agent=ask.agent_id,
            period=ask.period,
            currency=ask.currency.upper(),
            hard_limit=await money.required_decimal(
                conn, ask.currency, ask.hard_limit, ask.hard_limit_minor
            ),
            soft_pct=ask.soft_pct,
        )
        minor = await money.minors(conn, done.currency, hard_limit=done.hard_limit)
    return SpendCapOut.model_validate(asdict(done) | minor)


@router.put(
    "/{account_id}/wallets/{currency}",
    response_model=WalletOut,
    summary="Set wallet rules",
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422, 503)},
    openapi_extra=body.openapi_body(WalletIn),
)
async def set_wallet(
    account_id: AccountId,
    currency: Annotated[str, Path(pattern=r"^[A-Za-z]{3}$", examples=["USD"])],
    request: Request,
    api_key: ApiKey,
    pool: Pool,
) -> WalletOut:
    """Admin keys: how far an account's balance in a currency may go below zero
    (`overdraft_limit`, or `allow_negative` for the largest limit) and below which balance a
    `credits.low` event is announced (`low_balance`; null: never). Fields left out are not
    changed."""
    ask = await body.parse(request, WalletIn)
    given = ask.model_fields_set
    cur = currency.upper()
    overdraft: bool | None = None
    limit: str | None = None
    limit_minor: int | None = None
    low: str | None = None
    low_minor: int | None = None
    async with pool.connection() as conn, conn.transaction():
        if "allow_negative" in given and ask.allow_negative is not None:
            done = await queries.set_allow_negative(
                conn, api_key=api_key, account=account_id, currency=cur, allow=ask.allow_negative
            )
            overdraft = done.allow_negative
        if ask.overdraft_limit is not None or ask.overdraft_limit_minor is not None:
            bounded = await queries.set_overdraft_limit(
                conn,
                api_key=api_key,
                account=account_id,
                currency=cur,
                limit=await money.required_decimal(
                    conn, cur, ask.overdraft_limit, ask.overdraft_limit_minor
                ),
            )
            overdraft = bounded.allow_negative
            limit, limit_minor = bounded.overdraft_limit, bounded.overdraft_limit_minor
        if given & {"low_balance", "low_balance_minor"}:
            low = (
                await queries.set_low_balance(
                    conn,
                    api_key=api_key,
                    account=account_id,
                    currency=cur,
                    threshold=await money.as_decimal(
                        conn, cur, ask.low_balance, ask.low_balance_minor
                    ),
                )
            ).low_balance
            low_minor = (await money.minors(conn, cur, low_balance=low))["low_balance_minor"]
    return WalletOut(
        account_id=account_id,
        currency=cur,
        allow_negative=overdraft,
        low_balance=low,
        low_balance_minor=low_minor,
        overdraft_limit=limit,
        overdraft_limit_minor=limit_minor,
    )


@router.get("/{account_id}/spend-caps", response_model=SpendCapPage, responses=READ_ERRORS)
async def list_spend_caps(
    account_id: AccountId,
    api_key: ApiKey,
    pool: ReadPool,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> SpendCapPage:
    """The account's spend caps (its own key, or an admin key): the account's own first, then
    each agent's, by period and currency."""
    async with pool.connection() as conn:
        rows = await queries.list_spend_caps(
            conn,
            api_key=api_key,
            account=account_id,
            limit=limit,
            after=pages.uuid_key("spend-caps", cursor),
        )
    return SpendCapPage(
        spend_caps=[SpendCapOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=pages.next_cursor("spend-caps", rows, limit, lambda r: r.id),
    )


@router.get("/{account_id}/wallets", response_model=WalletPage, responses=READ_ERRORS)
async def list_wallets(
    account_id: AccountId,
    api_key: ApiKey,
    pool: ReadPool,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> WalletPage:
    """The account's credits, one wallet per currency: the balance, what active holds reserve
    of it (`held`), what can still be held or spent (`available`: the balance plus the
    overdraft limit, less `held`), and the wallet's settings."""
    async with pool.connection() as conn:
        rows = await queries.list_wallets(
            conn,
            api_key=api_key,
            account=account_id,
            limit=limit,
            after=pages.key("wallets", cursor),
        )
    return WalletPage(
        wallets=[Wallet.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=pages.next_cursor("wallets", rows, limit, lambda r: r.currency),
    )


@router.get("/{account_id}/keys", response_model=ApiKeyPage, responses=READ_ERRORS)
async def list_keys(
    account_id: AccountId,
    api_key: ApiKey,
    pool: ReadPool,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> ApiKeyPage:
    """The account's API keys, oldest first, revoked ones too: id, prefix, admin or not, label,
    dates. Never a key, nor its hash (Tollgate keeps only the hash)."""
    async with pool.connection() as conn:
        rows = await queries.list_account_keys(
            conn,
            api_key=api_key,
            account=account_id,
            limit=limit,
            after=pages.uuid_key("keys", cursor),
        )
    return ApiKeyPage(
        keys=[ApiKeyOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=pages.next_cursor("keys", rows, limit, lambda r: r.key_id),
    )


@router.get("/{account_id}/events", response_model=EventPage, responses=READ_ERRORS)
async def list_events(
    account_id: AccountId,
    api_key: ApiKey,
    pool: ReadPool,
    type: Annotated[
        str | None, Query(max_length=100, pattern=r"^[a-z_]+\.[a-z_]+$", examples=["credits.low"])
    ] = None,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
) -> EventPage:
    """The account's events, newest first (of one `type` if given): what `tollgate listen`
    delivers, `{id, type, created, account_id, data}`."""
    async with pool.connection() as conn:
        rows = await queries.list_events(
            conn,
            api_key=api_key,
            account=account_id,
            topic=type,
            limit=limit,
            after=pages.int_key("events", cursor),
        )
    return EventPage(
        events=[Event.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=pages.next_cursor("events", rows, limit, lambda r: r.outbox_id),
    )
