"""Typed calls of the named queries in ``queries.sql``.

Each helper takes the connection to run on, so a caller can put several calls in one
transaction, and the query's parameters as typed keywords; it returns rows as dataclasses
named ``...Row`` (the HTTP models of api/models.py have the plain names). psycopg errors leave
as DomainError (see db/errors.py) or, for defects, unchanged. Nothing else runs these queries
(tests/test_names.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, LiteralString, NamedTuple, TypeVar, cast
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, Connection, sql
from psycopg.rows import class_row
from psycopg.types.composite import CompositeInfo, register_composite
from psycopg.types.json import Jsonb

from db import errors

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(path: Path) -> dict[str, sql.SQL]:
    """Split a file of ``-- name: x`` blocks into {name: query}."""
    text = path.read_text(encoding="utf-8")
    parts = _NAME.split(text)[1:]
    return {
        name: sql.SQL(cast(LiteralString, body.strip().rstrip(";")))
        for name, body in zip(parts[::2], parts[1::2], strict=True)
    }


QUERIES = load_queries(Path(__file__).with_name("queries.sql"))

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PaymentClaimRow:
    replayed: bool
    payment_id: UUID
    account_uuid: UUID
    amount: int
    currency: str
    stripe_idempotency_key: str
    response: dict[str, Any] | None
    # In Stripe's units for the currency (not always ISO's); None for a replay.
    stripe_amount: int | None


@dataclass(frozen=True, slots=True)
class PaymentRow:
    id: UUID
    stripe_id: str
    account_id: str
    amount: int
    currency: str
    status: str
    purpose: str | None
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ContinuationRow:
    allowed: bool
    status: str | None
    payment_id: UUID | None
    account_id: str
    purpose: str | None


@dataclass(frozen=True, slots=True)
class EventOutcomeRow:
    outcome: str
    event_id: str
    payment_id: UUID | None
    payment_status: str | None


@dataclass(frozen=True, slots=True)
class CreatedKeyRow:
    key_id: UUID
    account_id: str


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    key_id: UUID
    account_id: str
    key_prefix: str
    is_admin: bool
    label: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class TransactionRow:
    id: UUID
    account_id: str
    reference: str
    amount: str
    amount_minor: int
    currency: str
    status: str
    payment_id: UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TransferRow:
    replayed: bool
    posting_id: UUID
    from_account: str
    to_account: str
    amount: str
    currency: str
    created_at: dt.datetime


class TransferItemV1(NamedTuple):
    """One element of api.transfer_item_v1[] (migrations/0031), fields in the type's order."""

    from_account: str | None  # external id; None: the key's own account
    to_account: str
    amount: Decimal | None  # in the currency's units; None when amount_minor is given
    amount_minor: int | None
    currency: str


@dataclass(frozen=True, slots=True)
class TransferBatchRow:
    ord: int
    replayed: bool
    posting_id: UUID
    from_account: str
    to_account: str
    amount: str
    amount_minor: int
    currency: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class BalanceRow:
    account_id: str
    name: str
    currency: str
    balance: str
    balance_minor: int
    version: int
    allow_negative: bool


@dataclass(frozen=True, slots=True)
class _ResponseRow:
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _RevokedRow:
    revoked: bool


@contextmanager
def _translated() -> Iterator[None]:
    """psycopg errors as domain errors (or unchanged, for defects)."""
    try:
        yield
    except psycopg.Error as exc:
        raise errors.translate(exc) from exc
    except UnicodeEncodeError as exc:  # text psycopg cannot send, e.g. a lone surrogate
        raise errors.DomainError("invalid", "invalid_text", "text must be valid Unicode") from exc


async def _one(conn: AsyncConnection[Any], row: type[T], name: str, params: Mapping[str, Any]) -> T:
    with _translated():
        cur = conn.cursor(row_factory=class_row(row))
        await cur.execute(QUERIES[name], params)
        result = await cur.fetchone()
    if result is None:  # every api function returns a row or raises
        raise RuntimeError(f"query {name} returned no row")
    return result


async def _all(
    conn: AsyncConnection[Any], row: type[T], name: str, params: Mapping[str, Any]
) -> list[T]:
    with _translated():
        cur = conn.cursor(row_factory=class_row(row))
        await cur.execute(QUERIES[name], params)
        return await cur.fetchall()


def _all_sync(conn: Connection[Any], row: type[T], name: str, params: Mapping[str, Any]) -> list[T]:
    with _translated():
        cur = conn.cursor(row_factory=class_row(row))
        cur.execute(QUERIES[name], params)
        return cur.fetchall()


def _one_sync(conn: Connection[Any], row: type[T], name: str, params: Mapping[str, Any]) -> T:
    with _translated():
        cur = conn.cursor(row_factory=class_row(row))
        cur.execute(QUERIES[name], params)
        result = cur.fetchone()
    if result is None:  # every api function returns a row or raises
        raise RuntimeError(f"query {name} returned no row")
    return result


# The composite types batches are sent as (migrations/0027), each with its Python type.
def _composites() -> dict[str, type[tuple[Any, ...]]]:
    return {
        "api.usage_event_v1": UsageEventV1,
        "api.reconciliation_line_v1": ReconciliationLineV1,
        "api.transfer_item_v1": TransferItemV1,
    }


async def register_types(conn: AsyncConnection[Any]) -> None:
    """Teach the connection to send UsageEventV1 and ReconciliationLineV1 as their composite
    types. queries.sql sends them in binary (%(events)b: adapting 1000 usage events takes about
    half the CPU that six parallel arrays did), which needs this first; the pool does it for
    every connection it opens."""
    for name, factory in _composites().items():
        info = await CompositeInfo.fetch(conn, name)
        if info is not None:  # None: a database before the migration that made the type
            register_composite(info, conn, factory)


def register_types_sync(conn: Connection[Any]) -> None:
    for name, factory in _composites().items():
        info = CompositeInfo.fetch(conn, name)
        if info is not None:
            register_composite(info, conn, factory)


async def ping(conn: AsyncConnection[Any]) -> None:
    with _translated():
        await conn.execute(QUERIES["ping"])


@dataclass(frozen=True, slots=True)
class WalPositionRow:
    lsn: str | None  # a pg_lsn as text, 16/B374D848


async def wal_written(conn: AsyncConnection[Any]) -> WalPositionRow:
    return await _one(conn, WalPositionRow, "wal_written", {})


async def wal_replayed(conn: AsyncConnection[Any]) -> WalPositionRow:
    return await _one(conn, WalPositionRow, "wal_replayed", {})


async def begin_payment(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    idempotency_key: str,
    account: str | None,
    amount: int,
    currency: str,
    purpose: str | None,
    description: str | None,
    payment_method: str | None,
) -> PaymentClaimRow:
    params = {
        "api_key": api_key,
        "idempotency_key": idempotency_key,
        "account": account,
        "amount": amount,
        "currency": currency,
        "purpose": purpose,
        "description": description,
        "payment_method": payment_method,
    }
    return await _one(conn, PaymentClaimRow, "begin_payment", params)


async def finish_payment(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    payment_id: UUID,
    stripe_id: str,
    status: str,
    client_secret: str | None,
) -> dict[str, Any]:
    params = {
        "api_key": api_key,
        "payment_id": payment_id,
        "stripe_id": stripe_id,
        "status": status,
        "client_secret": client_secret,
    }
    return (await _one(conn, _ResponseRow, "finish_payment", params)).response


@dataclass(frozen=True, slots=True)
class RefundClaimRow:
    replayed: bool
    refund_id: UUID
    payment_stripe_id: str
    amount: int
    currency: str
    # In Stripe's units for the currency (not always ISO's); None for a replay.
    stripe_amount: int | None
    stripe_idempotency_key: str
    response: dict[str, Any] | None


async def begin_refund(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    payment: str,
    idempotency_key: str,
    amount: Decimal | None,
    amount_minor: int | None,
) -> RefundClaimRow:
    params = {
        "api_key": api_key,
        "payment": payment,
        "idempotency_key": idempotency_key,
        "amount": amount,
        "amount_minor": amount_minor,
    }
    return await _one(conn, RefundClaimRow, "begin_refund", params)


async def finish_refund(
    conn: AsyncConnection[Any], *, api_key: str, refund_id: UUID, stripe_id: str, status: str
) -> dict[str, Any]:
    params = {"api_key": api_key, "refund_id": refund_id, "stripe_id": stripe_id, "status": status}
    return (await _one(conn, _ResponseRow, "finish_refund", params)).response


async def get_payment(conn: AsyncConnection[Any], *, api_key: str, ref: str) -> PaymentRow:
    return await _one(conn, PaymentRow, "get_payment", {"api_key": api_key, "ref": ref})


async def can_continue(
    conn: AsyncConnection[Any], *, api_key: str, account: str, purpose: str | None
) -> ContinuationRow:
    return await _one(
        conn,
        ContinuationRow,
        "can_continue",
        {"api_key": api_key, "account": account, "purpose": purpose},
    )


async def ingest_stripe_webhook(
    conn: AsyncConnection[Any], *, payload: str, signature: str | None
) -> EventOutcomeRow:
    """Verify a webhook's Stripe-Signature over its raw body, then store the event for the
    applier (both in the database; a bad signature raises invalid_signature and writes
    nothing)."""
    params = {"payload": payload, "signature": signature}
    return await _one(conn, EventOutcomeRow, "ingest_stripe_webhook", params)


def ingest_stripe_event_sync(conn: Connection[Any], *, event: str) -> EventOutcomeRow:
    """Store and apply a Stripe event the caller built from Stripe's API itself (`tollgate
    reconcile stripe`); an owner-side call: the service's role may not skip the signature."""
    return _one_sync(conn, EventOutcomeRow, "ingest_stripe_event", {"event": event})


@dataclass(frozen=True, slots=True)
class AppliedEventsRow:
    events: int


async def apply_stripe_events(conn: AsyncConnection[Any], *, limit: int, isolate: bool) -> int:
    """Apply up to ``limit`` received Stripe events, oldest first, in one transaction (the
    statement's, on an autocommit connection); how many it looked at. ``isolate``: an event
    whose rules raise is kept as ignored instead of failing the batch."""
    params = {"limit": limit, "isolate": isolate}
    return (await _one(conn, AppliedEventsRow, "apply_stripe_events", params)).events


def apply_stripe_events_sync(conn: Connection[Any], *, limit: int, isolate: bool) -> int:
    """apply_stripe_events, on a blocking connection."""
    params = {"limit": limit, "isolate": isolate}
    return _one_sync(conn, AppliedEventsRow, "apply_stripe_events", params).events


@dataclass(frozen=True, slots=True)
class PaymentWithEventsRow:
    id: UUID
    stripe_id: str
    account_id: str
    amount: int
    currency: str
    status: str
    purpose: str | None
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    # Stripe events about it stored but not applied yet (its status does not reflect them).
    events_received: int


async def get_payment_with_events(
    conn: AsyncConnection[Any], *, api_key: str, ref: str
) -> PaymentWithEventsRow:
    params = {"api_key": api_key, "ref": ref}
    return await _one(conn, PaymentWithEventsRow, "get_payment_with_events", params)


@dataclass(frozen=True, slots=True)
class AddedWebhookSecretRow:
    secret_id: UUID
    prefix: str
    added: bool


@dataclass(frozen=True, slots=True)
class WebhookSecretRow:
    secret_id: UUID
    prefix: str
    label: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _RemovedRow:
    removed: bool


def operator_add_webhook_secret(
    conn: Connection[Any], *, secret: str, label: str | None
) -> AddedWebhookSecretRow:
    """Register a Stripe webhook signing secret (a no-op, added=False, if it already is)."""
    params = {"secret": secret, "label": label}
    return _one_sync(conn, AddedWebhookSecretRow, "operator_add_webhook_secret", params)


def operator_list_webhook_secrets(conn: Connection[Any]) -> list[WebhookSecretRow]:
    return _all_sync(conn, WebhookSecretRow, "operator_list_webhook_secrets", {})


def operator_remove_webhook_secret(conn: Connection[Any], *, secret_id: UUID) -> bool:
    params = {"secret_id": secret_id}
    return _one_sync(conn, _RemovedRow, "operator_remove_webhook_secret", params).removed


@dataclass(frozen=True, slots=True)
class _StripeStateRow:
    stripe_id: str
    state: str


def operator_stripe_states(conn: Connection[Any], *, stripe_ids: Sequence[str]) -> dict[str, str]:
    """Tollgate's record of each of these PaymentIntents and subscriptions it knows, as text
    that changes whenever an event changes the record (absent: Tollgate has none)."""
    params = {"stripe_ids": list(stripe_ids)}
    rows = _all_sync(conn, _StripeStateRow, "operator_stripe_states", params)
    return {r.stripe_id: r.state for r in rows}


async def create_transaction(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    reference: str,
    amount: Decimal,
    currency: str,
    payment: str | None,
) -> TransactionRow:
    params = {
        "api_key": api_key,
        "account": account,
        "reference": reference,
        "amount": amount,
        "currency": currency,
        "payment": payment,
    }
    return await _one(conn, TransactionRow, "create_transaction", params)


async def get_transaction(
    conn: AsyncConnection[Any], *, api_key: str, account: str | None, reference: str
) -> TransactionRow:
    params = {"api_key": api_key, "account": account, "reference": reference}
    return await _one(conn, TransactionRow, "get_transaction", params)


async def list_transactions(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    status: str | None,
    limit: int,
    before: UUID | None,
) -> list[TransactionRow]:
    params = {
        "api_key": api_key,
        "account": account,
        "status": status,
        "limit": limit,
        "before": before,
    }
    return await _all(conn, TransactionRow, "list_transactions", params)


async def move_transaction(
    conn: AsyncConnection[Any], *, api_key: str, account: str | None, reference: str, status: str
) -> TransactionRow:
    params = {"api_key": api_key, "account": account, "reference": reference, "status": status}
    return await _one(conn, TransactionRow, "move_transaction", params)


async def transfer(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    from_account: str | None,
    to_account: str,
    amount: Decimal,
    currency: str,
    idempotency_key: str,
) -> TransferRow:
    params = {
        "api_key": api_key,
        "from_account": from_account,
        "to_account": to_account,
        "amount": amount,
        "currency": currency,
        "idempotency_key": idempotency_key,
    }
    return await _one(conn, TransferRow, "transfer", params)


async def transfer_batch(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    transfers: Sequence[TransferItemV1],
    idempotency_key: str | None,
) -> list[TransferBatchRow]:
    """One row per transfer, in the order sent; all posted or none."""
    params = {"api_key": api_key, "transfers": list(transfers), "idempotency_key": idempotency_key}
    return await _all(conn, TransferBatchRow, "transfer_batch", params)


async def balances(conn: AsyncConnection[Any], *, api_key: str, account: str) -> list[BalanceRow]:
    return await _all(conn, BalanceRow, "balances", {"api_key": api_key, "account": account})


def create_api_key(
    conn: Connection[Any], *, account: str, api_key: str, is_admin: bool, label: str | None
) -> CreatedKeyRow:
    params = {"account": account, "api_key": api_key, "is_admin": is_admin, "label": label}
    return _one_sync(conn, CreatedKeyRow, "create_api_key", params)


def revoke_api_key(conn: Connection[Any], *, key_id: UUID) -> bool:
    return _one_sync(conn, _RevokedRow, "revoke_api_key", {"key_id": key_id}).revoked


def list_api_keys(conn: Connection[Any], *, account: str | None) -> list[ApiKeyRow]:
    return _all_sync(conn, ApiKeyRow, "list_api_keys", {"account": account})


# ---------------------------------------------------------------------------------------------
# Gating: authorize, holds, usage, prices and caps
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationRow:
    allowed: bool
    via: str | None
    code: str | None
    message: str | None
    account_id: str
    action: str
    hold_id: UUID | None
    uses_left: int | None
    remaining: str | None
    currency: str | None
    price: str | None
    price_minor: int | None
    expires_at: dt.datetime | None
    pay: str | None  # what a payment covering the price asks for (Stripe's minimum, units)
    pay_minor: int | None


@dataclass(frozen=True, slots=True)
class HoldRow:
    id: UUID
    account_id: str
    agent_id: str | None
    action: str
    amount: str
    captured_amount: str | None
    currency: str
    status: str
    expires_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime


class UsageEventV1(NamedTuple):
    """One element of api.usage_event_v1[] (migrations/0027): psycopg sends a tuple as a
    composite, so the fields are in the type's order."""

    id: str
    account: str | None  # external id; None: the key's own account
    agent: str | None
    metric: str
    quantity: Decimal
    occurred_at: dt.datetime


@dataclass(frozen=True, slots=True)
class UsageResultRow:
    ord: int
    id: str
    outcome: str
    reason: str | None
    cost: str | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class UsagePeriodRow:
    period_start: dt.datetime
    metric: str
    events: int
    quantity_sum: Decimal
    quantity_max: Decimal
    cost: str | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class ActionPriceRow:
    action: str
    price: str
    currency: str
    description: str | None


@dataclass(frozen=True, slots=True)
class MetricPriceRow:
    metric: str
    unit_price: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class SpendCapRow:
    account_id: str
    agent_id: str | None
    period: str
    currency: str
    hard_limit: str
    soft_pct: int


async def authorize(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    action: str,
    cost: Decimal | None,
    currency: str | None,
    agent: str | None,
    hold_seconds: int | None,
) -> AuthorizationRow:
    params = {
        "api_key": api_key,
        "account": account,
        "action": action,
        "cost": cost,
        "currency": currency,
        "agent": agent,
        "hold_seconds": hold_seconds,
    }
    return await _one(conn, AuthorizationRow, "authorize", params)


@dataclass(frozen=True, slots=True)
class X402ClaimRow:
    response: dict[str, Any] | None  # the stored answer when this payload was settled before


@dataclass(frozen=True, slots=True)
class X402SettledRow:
    settled: bool


async def x402_claim(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    identifier: str,
    payload_sha256: bytes,
    action: str,
    cost: Decimal | None,
    cost_minor: int | None,
    currency: str | None,
) -> X402ClaimRow:
    """Claim ``identifier`` for this payload and request (action, cost as asked)."""
    params = {
        "api_key": api_key,
        "account": account,
        "identifier": identifier,
        "payload_sha256": payload_sha256,
        "action": action,
        "cost": cost,
        "cost_minor": cost_minor,
        "currency": currency,
    }
    return await _one(conn, X402ClaimRow, "x402_claim", params)


async def x402_settle(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    identifier: str,
    hold_id: UUID,
    response: Jsonb,
) -> X402SettledRow:
    params = {
        "api_key": api_key,
        "account": account,
        "identifier": identifier,
        "hold_id": hold_id,
        "response": response,
    }
    return await _one(conn, X402SettledRow, "x402_settle", params)


async def capture_hold(
    conn: AsyncConnection[Any], *, api_key: str, hold_id: UUID, amount: Decimal | None
) -> HoldRow:
    params = {"api_key": api_key, "hold_id": hold_id, "amount": amount}
    return await _one(conn, HoldRow, "capture_hold", params)


async def release_hold(conn: AsyncConnection[Any], *, api_key: str, hold_id: UUID) -> HoldRow:
    return await _one(conn, HoldRow, "release_hold", {"api_key": api_key, "hold_id": hold_id})


async def get_hold(conn: AsyncConnection[Any], *, api_key: str, hold_id: UUID) -> HoldRow:
    return await _one(conn, HoldRow, "get_hold", {"api_key": api_key, "hold_id": hold_id})


async def record_usage(
    conn: AsyncConnection[Any], *, api_key: str, events: Sequence[UsageEventV1]
) -> list[UsageResultRow]:
    """One result per event, in the order sent."""
    params = {"api_key": api_key, "events": list(events)}
    return await _all(conn, UsageResultRow, "record_usage", params)


@dataclass(frozen=True, slots=True)
class _ReceiptRow:
    receipt: str


async def record_usage_receipt(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    ids: Sequence[str],
    accounts: Sequence[str],
    agents: Sequence[str | None],
    metrics: Sequence[str],
    quantities: Sequence[Decimal],
    occurred_at: Sequence[dt.datetime],
) -> str:
    """The same as record_usage, with the events as one list per field (the same length, in
    batch order), answered as the JSON text of a receipt: accepted, duplicates, rejected, and
    results (index from 0, id, outcome, reason, cost, currency), in order."""
    params = {
        "api_key": api_key,
        "ids": ids,
        "accounts": accounts,
        "agents": agents,
        "metrics": metrics,
        "quantities": quantities,
        "occurred_at": occurred_at,
    }
    return (await _one(conn, _ReceiptRow, "record_usage_receipt", params)).receipt


async def usage(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str,
    metric: str | None,
    period: str,
    start: dt.datetime | None,
    end: dt.datetime | None,
) -> list[UsagePeriodRow]:
    """Usage per metric and UTC day or month, from ``start`` (inclusive) to ``end``."""
    params = {
        "api_key": api_key,
        "account": account,
        "metric": metric,
        "period": period,
        "start": start,
        "end": end,
    }
    return await _all(conn, UsagePeriodRow, "usage", params)


async def set_action_price(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    action: str,
    price: Decimal,
    currency: str,
    description: str | None,
) -> ActionPriceRow:
    params = {
        "api_key": api_key,
        "action": action,
        "price": price,
        "currency": currency,
        "description": description,
    }
    return await _one(conn, ActionPriceRow, "set_action_price", params)


async def set_metric_price(
    conn: AsyncConnection[Any], *, api_key: str, metric: str, unit_price: Decimal, currency: str
) -> MetricPriceRow:
    params = {"api_key": api_key, "metric": metric, "unit_price": unit_price, "currency": currency}
    return await _one(conn, MetricPriceRow, "set_metric_price", params)


async def set_spend_cap(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str,
    agent: str | None,
    period: str,
    currency: str,
    hard_limit: Decimal,
    soft_pct: int,
) -> SpendCapRow:
    params = {
        "api_key": api_key,
        "account": account,
        "agent": agent,
        "period": period,
        "currency": currency,
        "hard_limit": hard_limit,
        "soft_pct": soft_pct,
    }
    return await _one(conn, SpendCapRow, "set_spend_cap", params)


def operator_set_action_price(
    conn: Connection[Any], *, action: str, price: Decimal, currency: str, description: str | None
) -> ActionPriceRow:
    params = {"action": action, "price": price, "currency": currency, "description": description}
    return _one_sync(conn, ActionPriceRow, "operator_set_action_price", params)


@dataclass(frozen=True, slots=True)
class OverdraftRow:
    account_id: str
    currency: str
    allow_negative: bool


@dataclass(frozen=True, slots=True)
class OverdraftLimitRow:
    account_id: str
    currency: str
    overdraft_limit: str
    overdraft_limit_minor: int
    allow_negative: bool


@dataclass(frozen=True, slots=True)
class LowBalanceRow:
    account_id: str
    currency: str
    low_balance: str | None


async def set_allow_negative(
    conn: AsyncConnection[Any], *, api_key: str, account: str, currency: str, allow: bool
) -> OverdraftRow:
    params = {"api_key": api_key, "account": account, "currency": currency, "allow": allow}
    return await _one(conn, OverdraftRow, "set_allow_negative", params)


async def set_overdraft_limit(
    conn: AsyncConnection[Any], *, api_key: str, account: str, currency: str, limit: Decimal
) -> OverdraftLimitRow:
    params = {"api_key": api_key, "account": account, "currency": currency, "limit": limit}
    return await _one(conn, OverdraftLimitRow, "set_overdraft_limit", params)


async def set_low_balance(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str,
    currency: str,
    threshold: Decimal | None,
) -> LowBalanceRow:
    params = {"api_key": api_key, "account": account, "currency": currency, "threshold": threshold}
    return await _one(conn, LowBalanceRow, "set_low_balance", params)


# ---------------------------------------------------------------------------------------------
# Reviews and reconciliation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewRow:
    id: UUID
    account_id: str
    subject: str
    subject_ref: str
    rules: list[str]
    detail: str
    status: str
    decided_by: str | None
    note: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class RiskRuleRow:
    account_id: str | None
    currency: str
    max_amount: str | None
    velocity_count: int | None
    velocity_seconds: int | None
    first_amount_max: str | None


class ReconciliationLineV1(NamedTuple):
    """One element of api.reconciliation_line_v1[] (migrations/0027), fields in the type's
    order."""

    reference: str
    amount: Decimal | None  # in the currency's units (12.50); None is refused, naming the line
    currency: str
    happened_on: dt.date
    account: str | None  # external id; None: the reference alone decides


@dataclass(frozen=True, slots=True)
class ReconciliationLineRow:
    batch_id: UUID
    line_no: int
    reference: str
    status: str
    transaction_id: UUID | None
    note: str | None


async def list_reviews(
    conn: AsyncConnection[Any], *, api_key: str, status: str | None
) -> list[ReviewRow]:
    return await _all(conn, ReviewRow, "list_reviews", {"api_key": api_key, "status": status})


async def decide_review(
    conn: AsyncConnection[Any], *, api_key: str, review_id: UUID, decision: str, note: str | None
) -> ReviewRow:
    params = {"api_key": api_key, "review_id": review_id, "decision": decision, "note": note}
    return await _one(conn, ReviewRow, "decide_review", params)


async def set_risk_rule(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    currency: str,
    max_amount: Decimal | None,
    velocity_count: int | None,
    velocity_seconds: int | None,
    first_amount_max: Decimal | None,
) -> RiskRuleRow:
    """Thresholds that open a review, for one account or (account None) for all."""
    params = {
        "api_key": api_key,
        "account": account,
        "currency": currency,
        "max_amount": max_amount,
        "velocity_count": velocity_count,
        "velocity_seconds": velocity_seconds,
        "first_amount_max": first_amount_max,
    }
    return await _one(conn, RiskRuleRow, "set_risk_rule", params)


async def import_reconciliation(
    conn: AsyncConnection[Any], *, api_key: str, source: str, lines: Sequence[ReconciliationLineV1]
) -> list[ReconciliationLineRow]:
    params = {"api_key": api_key, "source": source, "lines": list(lines)}
    return await _all(conn, ReconciliationLineRow, "import_reconciliation", params)


def operator_import_reconciliation(
    conn: Connection[Any], *, source: str, lines: Sequence[ReconciliationLineV1]
) -> list[ReconciliationLineRow]:
    """As import_reconciliation, for the CLI (no key: the migrating role)."""
    params = {"source": source, "lines": list(lines)}
    return _all_sync(conn, ReconciliationLineRow, "operator_import_reconciliation", params)


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityRow:
    account_id: str
    is_admin: bool
    key_id: UUID


async def whoami(conn: AsyncConnection[Any], *, api_key: str) -> IdentityRow:
    return await _one(conn, IdentityRow, "whoami", {"api_key": api_key})


@dataclass(frozen=True, slots=True)
class MetricRow:
    metric: str  # a gauge's name, without the tollgate_ prefix
    labels: dict[str, str]
    value: Decimal


async def metrics(conn: AsyncConnection[Any]) -> list[MetricRow]:
    """The database's gauges for GET /metrics: backlogs, dead letters, holds, audit problems."""
    return await _all(conn, MetricRow, "metrics", {})


# ---------------------------------------------------------------------------------------------
# Currencies
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrencyRow:
    code: str
    exponent: int


async def currencies(conn: AsyncConnection[Any]) -> list[CurrencyRow]:
    """Every currency Tollgate accepts, with its exponent (decimals of the minor unit)."""
    return await _all(conn, CurrencyRow, "currencies", {})


# ---------------------------------------------------------------------------------------------
# Reading back what was set: every list is a page of at most ``limit`` rows after ``after``, the
# key of the last row of the previous page (None: the first page)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedActionRow:
    action: str
    price: str
    price_minor: int
    currency: str
    description: str | None
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ListedMetricPriceRow:
    metric: str
    unit_price: Decimal
    currency: str
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ListedSpendCapRow:
    id: UUID
    account_id: str
    agent_id: str | None
    period: str
    currency: str
    hard_limit: str
    hard_limit_minor: int
    soft_pct: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class WalletRow:
    account_id: str
    currency: str
    balance: str
    balance_minor: int
    held: str
    held_minor: int
    available: str | None  # None: no limit (only Tollgate's own accounts)
    available_minor: int | None
    overdraft_limit: str | None
    overdraft_limit_minor: int | None
    allow_negative: bool
    low_balance: str | None
    low_balance_minor: int | None
    version: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ListedRiskRuleRow:
    id: UUID
    account_id: str | None
    currency: str
    max_amount: str | None
    max_amount_minor: int | None
    velocity_count: int | None
    velocity_seconds: int | None
    first_amount_max: str | None
    first_amount_max_minor: int | None
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AccountEventRow:
    """An outbox event of an account, under the names of the JSON listeners receive."""

    outbox_id: int
    id: UUID
    type: str
    account_id: str
    data: dict[str, Any]
    created: dt.datetime


async def list_actions(
    conn: AsyncConnection[Any], *, api_key: str, limit: int, after: str | None
) -> list[ListedActionRow]:
    params = {"api_key": api_key, "limit": limit, "after": after}
    return await _all(conn, ListedActionRow, "list_actions", params)


async def list_metric_prices(
    conn: AsyncConnection[Any], *, api_key: str, limit: int, after: str | None
) -> list[ListedMetricPriceRow]:
    params = {"api_key": api_key, "limit": limit, "after": after}
    return await _all(conn, ListedMetricPriceRow, "list_metric_prices", params)


async def list_spend_caps(
    conn: AsyncConnection[Any], *, api_key: str, account: str, limit: int, after: UUID | None
) -> list[ListedSpendCapRow]:
    params = {"api_key": api_key, "account": account, "limit": limit, "after": after}
    return await _all(conn, ListedSpendCapRow, "list_spend_caps", params)


async def list_wallets(
    conn: AsyncConnection[Any], *, api_key: str, account: str, limit: int, after: str | None
) -> list[WalletRow]:
    params = {"api_key": api_key, "account": account, "limit": limit, "after": after}
    return await _all(conn, WalletRow, "list_wallets", params)


async def list_holds(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    status: str | None,
    action: str | None,
    agent: str | None,
    limit: int,
    after: UUID | None,
) -> list[HoldRow]:
    params = {
        "api_key": api_key,
        "account": account,
        "status": status,
        "action": action,
        "agent": agent,
        "limit": limit,
        "after": after,
    }
    return await _all(conn, HoldRow, "list_holds", params)


async def list_risk_rules(
    conn: AsyncConnection[Any], *, api_key: str, account: str | None, limit: int, after: UUID | None
) -> list[ListedRiskRuleRow]:
    params = {"api_key": api_key, "account": account, "limit": limit, "after": after}
    return await _all(conn, ListedRiskRuleRow, "list_risk_rules", params)


async def list_account_keys(
    conn: AsyncConnection[Any], *, api_key: str, account: str, limit: int, after: UUID | None
) -> list[ApiKeyRow]:
    """The account's keys by id and prefix: never a key, nor its hash."""
    params = {"api_key": api_key, "account": account, "limit": limit, "after": after}
    return await _all(conn, ApiKeyRow, "list_account_keys", params)


async def list_payments(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    status: str | None,
    purpose: str | None,
    limit: int,
    after: UUID | None,
) -> list[PaymentRow]:
    params = {
        "api_key": api_key,
        "account": account,
        "status": status,
        "purpose": purpose,
        "limit": limit,
        "after": after,
    }
    return await _all(conn, PaymentRow, "list_payments", params)


async def list_events(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str,
    topic: str | None,
    limit: int,
    after: int | None,
) -> list[AccountEventRow]:
    """Newest first; ``after`` is the ``outbox_id`` of the last event of the previous page."""
    params = {
        "api_key": api_key,
        "account": account,
        "topic": topic,
        "limit": limit,
        "after": after,
    }
    return await _all(conn, AccountEventRow, "list_events", params)


# ---------------------------------------------------------------------------------------------
# Outbox delivery: `tollgate listen` and `tollgate outbox` (db/listener.py), on connections of
# their own, so these are sync
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    consumer: str
    created: bool
    backfilled: int


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A leased delivery: the lease token of its batch and the event, under the names of the
    JSON handlers send on (queries.sql renames the outbox row's columns)."""

    lease_token: UUID
    outbox_id: int
    id: UUID
    type: str
    account_id: str
    data: dict[str, Any]
    created: dt.datetime
    attempt: int


@dataclass(frozen=True, slots=True)
class DeadDeliveryRow:
    outbox_id: int
    event_id: UUID
    topic: str
    account_id: str
    attempts: int
    last_error: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _CountRow:
    count: int


@dataclass(frozen=True, slots=True)
class _StatusRow:
    status: str | None


@dataclass(frozen=True, slots=True)
class _DueRow:
    due: dt.datetime | None


def register_consumer(conn: Connection[Any], *, consumer: str, from_start: bool) -> ConsumerRow:
    """Register the consumer (a no-op, created=False, if it is already)."""
    params = {"consumer": consumer, "from_start": from_start}
    return _one_sync(conn, ConsumerRow, "register_consumer", params)


def claim_deliveries(
    conn: Connection[Any], *, consumer: str, limit: int, lease: dt.timedelta, max_attempts: int
) -> list[DeliveryRow]:
    """Lease up to ``limit`` due deliveries, in outbox order, all with one lease token."""
    params = {"consumer": consumer, "limit": limit, "lease": lease, "max_attempts": max_attempts}
    return _all_sync(conn, DeliveryRow, "claim_deliveries", params)


def renew_leases(
    conn: Connection[Any],
    *,
    consumer: str,
    lease_token: UUID,
    outbox_ids: Sequence[int],
    lease: dt.timedelta,
) -> int:
    """How many of the deliveries were still leased with the token, and now are for ``lease``."""
    params = {
        "consumer": consumer,
        "lease_token": lease_token,
        "outbox_ids": list(outbox_ids),
        "lease": lease,
    }
    return _one_sync(conn, _CountRow, "renew_leases", params).count


def deliveries_done(
    conn: Connection[Any], *, consumer: str, lease_token: UUID, outbox_ids: Sequence[int]
) -> int:
    """How many of the deliveries the token still leased, now delivered."""
    params = {"consumer": consumer, "lease_token": lease_token, "outbox_ids": list(outbox_ids)}
    return _one_sync(conn, _CountRow, "deliveries_done", params).count


def delivery_failed(
    conn: Connection[Any],
    *,
    consumer: str,
    lease_token: UUID,
    outbox_id: int,
    error: str,
    max_attempts: int,
    retry_base: dt.timedelta,
) -> str | None:
    """The delivery's status after the failure: pending (retried after a backoff) or dead;
    None: the token no longer leases it (its lease ran out and another claim took it)."""
    params = {
        "consumer": consumer,
        "lease_token": lease_token,
        "outbox_id": outbox_id,
        "error": error,
        "max_attempts": max_attempts,
        "retry_base": retry_base,
    }
    return _one_sync(conn, _StatusRow, "delivery_failed", params).status


def release_deliveries(
    conn: Connection[Any], *, consumer: str, lease_token: UUID, outbox_ids: Sequence[int]
) -> int:
    """Hand leased deliveries back untried (due at once, the attempt not counted)."""
    params = {"consumer": consumer, "lease_token": lease_token, "outbox_ids": list(outbox_ids)}
    return _one_sync(conn, _CountRow, "release_deliveries", params).count


def next_delivery_due(conn: Connection[Any], *, consumer: str) -> dt.datetime | None:
    """When the consumer's next pending delivery is due; None: none is pending."""
    return _one_sync(conn, _DueRow, "next_delivery_due", {"consumer": consumer}).due


def dead_deliveries(conn: Connection[Any], *, consumer: str) -> list[DeadDeliveryRow]:
    return _all_sync(conn, DeadDeliveryRow, "dead_deliveries", {"consumer": consumer})


def replay_deliveries(conn: Connection[Any], *, consumer: str, event_id: UUID | None) -> int:
    """Make dead deliveries pending again (one event's, or all); how many."""
    params = {"consumer": consumer, "event_id": event_id}
    return _one_sync(conn, _CountRow, "replay_deliveries", params).count


def unregister_consumer(conn: Connection[Any], *, consumer: str) -> int:
    """Remove the consumer; how many of its deliveries went with it."""
    return _one_sync(conn, _CountRow, "unregister_consumer", {"consumer": consumer}).count


def prune_deliveries(conn: Connection[Any], *, older_than: dt.timedelta) -> int:
    """Forget deliveries done more than ``older_than`` ago; how many."""
    return _one_sync(conn, _CountRow, "prune_deliveries", {"older_than": older_than}).count


ARCHIVE_KINDS = ("payment_events", "usage_events", "audit", "outbox")


def archive_batch(conn: Connection[Any], *, kind: str, older_than: dt.timedelta, batch: int) -> int:
    """Move one batch of at most ``batch`` final rows of ``kind`` (``ARCHIVE_KINDS``) older
    than ``older_than`` to its archive table (db/sql/89-retention.sql); how many moved. Needs a
    connection whose role may use schema retention (the migrating role)."""
    params = {"kind": kind, "older_than": older_than, "batch": batch}
    return _one_sync(conn, _CountRow, "archive_batch", params).count
