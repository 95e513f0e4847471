"""Transactions: record, read, settle, fail, reverse. The lifecycle rules are the database's."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request

from api import body, money, pages
from api.deps import ApiKey, Pool, ReadPool
from api.models import (
    ErrorBody,
    Transaction,
    TransactionCreate,
    TransactionPage,
    TransactionStatus,
)
from db import queries
from db.errors import DomainError

router = APIRouter(prefix="/v1/transactions", tags=["transactions"])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 503)
}
Reference = Annotated[
    str, Path(max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", examples=["order-1042"])
]
# Admin keys name the account; other keys may omit it (their own) or name their own.
AccountQuery = Annotated[
    str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
]


@router.post(
    "",
    status_code=201,
    response_model=Transaction,
    summary="Record a transaction",
    responses=ERRORS,
    openapi_extra=body.openapi_body(TransactionCreate),
)
async def create_transaction(request: Request, api_key: ApiKey, pool: Pool) -> Transaction:
    """Record a pending transaction: money expected for an account, credited when it settles.
    `reference` is unique per account (409 `duplicate_reference`). `amount` is exact: "1250.50"
    or 1250.50, never rounded; or `amount_minor`, an integer of minor units (125050)."""
    new = await body.parse(request, TransactionCreate)
    async with pool.connection() as conn:
        created = await queries.create_transaction(
            conn,
            api_key=api_key,
            account=new.account_id,
            reference=new.reference,
            amount=await money.required_decimal(conn, new.currency, new.amount, new.amount_minor),
            currency=new.currency.upper(),
            payment=new.payment_id,
        )
    return Transaction.model_validate(created, from_attributes=True)


@router.get("", response_model=TransactionPage, responses=ERRORS, summary="List transactions")
async def list_transactions(
    api_key: ApiKey,
    pool: ReadPool,
    account_id: AccountQuery = None,
    status: TransactionStatus | None = None,
    limit: pages.Limit = pages.DEFAULT_LIMIT,
    cursor: pages.Cursor = None,
    before: Annotated[
        UUID | None,
        Query(description="the parameter before cursors: next_before of the previous page"),
    ] = None,
) -> TransactionPage:
    """An account's transactions, newest first, `limit` at a time; `cursor` (the previous
    page's `next_cursor`) continues from the last transaction of the previous page, as `before`
    (its `next_before`) does."""
    if cursor is not None and before is not None:
        raise DomainError("invalid", "invalid_cursor", "give cursor or before, not both")
    after = pages.uuid_key("transactions", cursor) or before
    async with pool.connection() as conn:
        found = await queries.list_transactions(
            conn, api_key=api_key, account=account_id, status=status, limit=limit, before=after
        )
    return TransactionPage(
        transactions=[Transaction.model_validate(t, from_attributes=True) for t in found],
        next_before=found[-1].id if len(found) == limit else None,
    )


@router.get(
    "/{reference}", response_model=Transaction, responses=ERRORS, summary="Read a transaction"
)
async def get_transaction(
    reference: Reference, api_key: ApiKey, pool: ReadPool, account_id: AccountQuery = None
) -> Transaction:
    """A transaction by its reference (an admin key names the account with `account_id`)."""
    async with pool.connection() as conn:
        found = await queries.get_transaction(
            conn, api_key=api_key, account=account_id, reference=reference
        )
    return Transaction.model_validate(found, from_attributes=True)


async def _move(
    pool: Pool, api_key: str, account_id: str | None, reference: str, status: str
) -> Transaction:
    async with pool.connection() as conn:
        moved = await queries.move_transaction(
            conn, api_key=api_key, account=account_id, reference=reference, status=status
        )
    return Transaction.model_validate(moved, from_attributes=True)


@router.post(
    "/{reference}/settle",
    response_model=Transaction,
    responses=ERRORS,
    summary="Settle a transaction",
)
async def settle_transaction(
    reference: Reference, api_key: ApiKey, pool: Pool, account_id: AccountQuery = None
) -> Transaction:
    """Admin keys: pending -> settled, which credits the account's balance (a balanced ledger
    posting). Settling a settled transaction answers it again and posts nothing."""
    return await _move(pool, api_key, account_id, reference, "settled")


@router.post(
    "/{reference}/fail",
    response_model=Transaction,
    responses=ERRORS,
    summary="Fail a transaction",
)
async def fail_transaction(
    reference: Reference, api_key: ApiKey, pool: Pool, account_id: AccountQuery = None
) -> Transaction:
    """Admin keys: pending -> failed; nothing is posted. Repeating it answers the failed
    transaction again."""
    return await _move(pool, api_key, account_id, reference, "failed")


@router.post(
    "/{reference}/reverse",
    response_model=Transaction,
    responses=ERRORS,
    summary="Reverse a transaction",
)
async def reverse_transaction(
    reference: Reference, api_key: ApiKey, pool: Pool, account_id: AccountQuery = None
) -> Transaction:
    """Admin keys: settled -> reversed, with a compensating posting (the original is never
    edited); 409 `insufficient_funds` if the balance may not go negative and is too low."""
    return await _move(pool, api_key, account_id, reference, "reversed")
