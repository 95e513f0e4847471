"""Typed calls of the named queries in ``queries.sql``.

Each helper takes the connection to run on, so a caller can put several calls in one
transaction, and returns rows as dataclasses. psycopg errors leave as DomainError
(see db/errors.py) or, for defects, unchanged.
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
class PaymentClaim:
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
class Payment:
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
class Continuation:
    allowed: bool
    status: str | None
    payment_id: UUID | None
    account_id: str
    purpose: str | None


@dataclass(frozen=True, slots=True)
class EventOutcome:
    outcome: str
    event_id: str
    payment_id: UUID | None
    payment_status: str | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key_id: UUID
    account_id: UUID


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: UUID
    account_id: str
    key_prefix: str
    is_admin: bool
    label: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Transaction:
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
class Transfer:
    replayed: bool
    posting_id: UUID
    from_account: str
    to_account: str
    amount: str
    currency: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    name: str
    currency: str
    balance: str
    balance_minor: int
    version: int
    allow_negative: bool


@dataclass(frozen=True, slots=True)
class _Response:
    response: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Revoked:
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


# The composite types batches are sent as (migrations/0027), each with its Python type.
def _composites() -> dict[str, type[tuple[Any, ...]]]:
    return {"api.usage_event_v1": UsageEventV1, "api.reconciliation_line_v1": ReconciliationLineV1}


async def register_types(conn: AsyncConnection[Any]) -> None:
    """Teach the connection to send UsageEventV1 and ReconciliationLineV1 as their composite
    types. queries.sql sends them in binary (%(events)b: adapting 1000 usage events takes about
    half the CPU that six parallel arrays did), which needs this first; the pool does it for
    every connection it opens."""
    for name, factory in _composites().items():
        info = await CompositeInfo.fetch(conn, name)
        if info is not None:  # None: a database before migration 0027
            register_composite(info, conn, factory)


def register_types_sync(conn: Connection[Any]) -> None:
    for name, factory in _composites().items():
        info = CompositeInfo.fetch(conn, name)
        if info is not None:
            register_composite(info, conn, factory)


async def ping(conn: AsyncConnection[Any]) -> None:
    with _translated():
        await conn.execute(QUERIES["ping"])


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
) -> PaymentClaim:
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
    return await _one(conn, PaymentClaim, "begin_payment", params)


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
    return (await _one(conn, _Response, "finish_payment", params)).response


@dataclass(frozen=True, slots=True)
class RefundClaim:
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
) -> RefundClaim:
    params = {
        "api_key": api_key,
        "payment": payment,
        "idempotency_key": idempotency_key,
        "amount": amount,
        "amount_minor": amount_minor,
    }
    return await _one(conn, RefundClaim, "begin_refund", params)


async def finish_refund(
    conn: AsyncConnection[Any], *, api_key: str, refund_id: UUID, stripe_id: str, status: str
) -> dict[str, Any]:
    params = {"api_key": api_key, "refund_id": refund_id, "stripe_id": stripe_id, "status": status}
    return (await _one(conn, _Response, "finish_refund", params)).response


async def get_payment(conn: AsyncConnection[Any], *, api_key: str, ref: str) -> Payment:
    return await _one(conn, Payment, "get_payment", {"api_key": api_key, "ref": ref})


async def can_continue(
    conn: AsyncConnection[Any], *, api_key: str, account: str, purpose: str | None
) -> Continuation:
    return await _one(
        conn,
        Continuation,
        "can_continue",
        {"api_key": api_key, "account": account, "purpose": purpose},
    )


async def ingest_stripe_webhook(
    conn: AsyncConnection[Any], *, payload: str, signature: str | None
) -> EventOutcome:
    """Verify a webhook's Stripe-Signature over its raw body, then store and apply the event
    (both in the database; a bad signature raises invalid_signature and writes nothing)."""
    params = {"payload": payload, "signature": signature}
    return await _one(conn, EventOutcome, "ingest_stripe_webhook", params)


def ingest_stripe_event_sync(conn: Connection[Any], *, event: str) -> EventOutcome:
    """Store and apply a Stripe event the caller built from Stripe's API itself (`tollgate
    reconcile stripe`); an owner-side call: the service's role may not skip the signature."""
    (outcome,) = _all_sync(conn, EventOutcome, "ingest_stripe_event", {"event": event})
    return outcome


@dataclass(frozen=True, slots=True)
class AddedWebhookSecret:
    secret_id: UUID
    prefix: str
    added: bool


@dataclass(frozen=True, slots=True)
class WebhookSecretInfo:
    secret_id: UUID
    prefix: str
    label: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class _Removed:
    removed: bool


def operator_add_webhook_secret(
    conn: Connection[Any], *, secret: str, label: str | None
) -> AddedWebhookSecret:
    """Register a Stripe webhook signing secret (a no-op, added=False, if it already is)."""
    params = {"secret": secret, "label": label}
    return _all_sync(conn, AddedWebhookSecret, "operator_add_webhook_secret", params)[0]


def operator_list_webhook_secrets(conn: Connection[Any]) -> list[WebhookSecretInfo]:
    return _all_sync(conn, WebhookSecretInfo, "operator_list_webhook_secrets", {})


def operator_remove_webhook_secret(conn: Connection[Any], *, secret_id: UUID) -> bool:
    params = {"secret_id": secret_id}
    return _all_sync(conn, _Removed, "operator_remove_webhook_secret", params)[0].removed


def operator_known_payments(conn: Connection[Any], stripe_ids: list[str]) -> set[str]:
    """Which of these PaymentIntent ids Tollgate created."""
    with _translated():
        rows = conn.execute(QUERIES["operator_known_payments"], {"stripe_ids": stripe_ids})
        return {str(r[0]) for r in rows.fetchall()}


async def create_transaction(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    reference: str,
    amount: Decimal,
    currency: str,
    payment: str | None,
) -> Transaction:
    params = {
        "api_key": api_key,
        "account": account,
        "reference": reference,
        "amount": amount,
        "currency": currency,
        "payment": payment,
    }
    return await _one(conn, Transaction, "create_transaction", params)


async def get_transaction(
    conn: AsyncConnection[Any], *, api_key: str, account: str | None, reference: str
) -> Transaction:
    params = {"api_key": api_key, "account": account, "reference": reference}
    return await _one(conn, Transaction, "get_transaction", params)


async def list_transactions(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str | None,
    status: str | None,
    limit: int,
    before: UUID | None,
) -> list[Transaction]:
    params = {
        "api_key": api_key,
        "account": account,
        "status": status,
        "limit": limit,
        "before": before,
    }
    return await _all(conn, Transaction, "list_transactions", params)


async def move_transaction(
    conn: AsyncConnection[Any], *, api_key: str, account: str | None, reference: str, status: str
) -> Transaction:
    params = {"api_key": api_key, "account": account, "reference": reference, "status": status}
    return await _one(conn, Transaction, "move_transaction", params)


async def transfer(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    from_account: str | None,
    to_account: str,
    amount: Decimal,
    currency: str,
    idempotency_key: str,
) -> Transfer:
    params = {
        "api_key": api_key,
        "from_account": from_account,
        "to_account": to_account,
        "amount": amount,
        "currency": currency,
        "idempotency_key": idempotency_key,
    }
    return await _one(conn, Transfer, "transfer", params)


async def balances(conn: AsyncConnection[Any], *, api_key: str, account: str) -> list[Balance]:
    return await _all(conn, Balance, "balances", {"api_key": api_key, "account": account})


def create_api_key(
    conn: Connection[Any], *, account: str, api_key: str, is_admin: bool, label: str | None
) -> CreatedKey:
    params = {"account": account, "api_key": api_key, "is_admin": is_admin, "label": label}
    return _all_sync(conn, CreatedKey, "create_api_key", params)[0]


def revoke_api_key(conn: Connection[Any], *, key_id: UUID) -> bool:
    return _all_sync(conn, _Revoked, "revoke_api_key", {"key_id": key_id})[0].revoked


def list_api_keys(conn: Connection[Any], *, account: str | None) -> list[ApiKeyInfo]:
    return _all_sync(conn, ApiKeyInfo, "list_api_keys", {"account": account})


# ---------------------------------------------------------------------------------------------
# Gating: authorize, holds, usage, prices and caps
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authorization:
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
class Hold:
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
class UsageResult:
    ord: int
    id: str
    outcome: str
    reason: str | None
    cost: str | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class UsageRow:
    period_start: dt.datetime
    metric: str
    events: int
    quantity_sum: Decimal
    quantity_max: Decimal
    cost: str | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class ActionPrice:
    action: str
    price: str
    currency: str
    description: str | None


@dataclass(frozen=True, slots=True)
class MetricPrice:
    metric: str
    unit_price: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class SpendCap:
    account_id: str
    agent_id: str | None
    period: str
    currency: str
    hard_limit: str
    soft_pct: int


async def authorize(conn: AsyncConnection[Any], **params: Any) -> Authorization:
    """params: api_key, account, action, cost, currency, agent, hold_seconds."""
    return await _one(conn, Authorization, "authorize", params)


async def capture_hold(
    conn: AsyncConnection[Any], *, api_key: str, hold_id: UUID, amount: Decimal | None
) -> Hold:
    params = {"api_key": api_key, "hold_id": hold_id, "amount": amount}
    return await _one(conn, Hold, "capture_hold", params)


async def release_hold(conn: AsyncConnection[Any], *, api_key: str, hold_id: UUID) -> Hold:
    return await _one(conn, Hold, "release_hold", {"api_key": api_key, "hold_id": hold_id})


async def get_hold(conn: AsyncConnection[Any], *, api_key: str, hold_id: UUID) -> Hold:
    return await _one(conn, Hold, "get_hold", {"api_key": api_key, "hold_id": hold_id})


async def record_usage(
    conn: AsyncConnection[Any], *, api_key: str, events: Sequence[UsageEventV1]
) -> list[UsageResult]:
    """One result per event, in the order sent."""
    params = {"api_key": api_key, "events": list(events)}
    return await _all(conn, UsageResult, "record_usage", params)


async def usage(conn: AsyncConnection[Any], **params: Any) -> list[UsageRow]:
    """params: api_key, account, metric, period, start, end."""
    return await _all(conn, UsageRow, "usage", params)


async def set_action_price(conn: AsyncConnection[Any], **params: Any) -> ActionPrice:
    """params: api_key, action, price, currency, description."""
    return await _one(conn, ActionPrice, "set_action_price", params)


async def set_metric_price(conn: AsyncConnection[Any], **params: Any) -> MetricPrice:
    """params: api_key, metric, unit_price, currency."""
    return await _one(conn, MetricPrice, "set_metric_price", params)


async def set_spend_cap(conn: AsyncConnection[Any], **params: Any) -> SpendCap:
    """params: api_key, account, agent, period, currency, hard_limit, soft_pct."""
    return await _one(conn, SpendCap, "set_spend_cap", params)


def operator_set_action_price(
    conn: Connection[Any], *, action: str, price: Decimal, currency: str, description: str | None
) -> ActionPrice:
    params = {"action": action, "price": price, "currency": currency, "description": description}
    return _all_sync(conn, ActionPrice, "operator_set_action_price", params)[0]


@dataclass(frozen=True, slots=True)
class Overdraft:
    account_id: str
    currency: str
    allow_negative: bool


@dataclass(frozen=True, slots=True)
class OverdraftLimit:
    account_id: str
    currency: str
    overdraft_limit: str
    overdraft_limit_minor: int
    allow_negative: bool


@dataclass(frozen=True, slots=True)
class LowBalance:
    account_id: str
    currency: str
    low_balance: str | None


async def set_allow_negative(
    conn: AsyncConnection[Any], *, api_key: str, account: str, currency: str, allow: bool
) -> Overdraft:
    params = {"api_key": api_key, "account": account, "currency": currency, "allow": allow}
    return await _one(conn, Overdraft, "set_allow_negative", params)


async def set_overdraft_limit(
    conn: AsyncConnection[Any], *, api_key: str, account: str, currency: str, limit: Decimal
) -> OverdraftLimit:
    params = {"api_key": api_key, "account": account, "currency": currency, "limit": limit}
    return await _one(conn, OverdraftLimit, "set_overdraft_limit", params)


async def set_low_balance(
    conn: AsyncConnection[Any],
    *,
    api_key: str,
    account: str,
    currency: str,
    threshold: Decimal | None,
) -> LowBalance:
    params = {"api_key": api_key, "account": account, "currency": currency, "threshold": threshold}
    return await _one(conn, LowBalance, "set_low_balance", params)


# ---------------------------------------------------------------------------------------------
# Reviews and reconciliation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Review:
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
class RiskRule:
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
class ReconciliationLine:
    batch_id: UUID
    line_no: int
    reference: str
    status: str
    transaction_id: UUID | None
    note: str | None


async def list_reviews(
    conn: AsyncConnection[Any], *, api_key: str, status: str | None
) -> list[Review]:
    return await _all(conn, Review, "list_reviews", {"api_key": api_key, "status": status})


async def decide_review(
    conn: AsyncConnection[Any], *, api_key: str, review_id: UUID, decision: str, note: str | None
) -> Review:
    params = {"api_key": api_key, "review_id": review_id, "decision": decision, "note": note}
    return await _one(conn, Review, "decide_review", params)


async def set_risk_rule(conn: AsyncConnection[Any], **params: Any) -> RiskRule:
    """params: api_key, account, currency, max_amount, velocity_count, velocity_seconds,
    first_amount_max."""
    return await _one(conn, RiskRule, "set_risk_rule", params)


async def import_reconciliation(
    conn: AsyncConnection[Any], *, api_key: str, source: str, lines: Sequence[ReconciliationLineV1]
) -> list[ReconciliationLine]:
    params = {"api_key": api_key, "source": source, "lines": list(lines)}
    return await _all(conn, ReconciliationLine, "import_reconciliation", params)


def operator_import_reconciliation(
    conn: Connection[Any], *, source: str, lines: Sequence[ReconciliationLineV1]
) -> list[ReconciliationLine]:
    """As import_reconciliation, for the CLI (no key: the migrating role)."""
    params = {"source": source, "lines": list(lines)}
    return _all_sync(conn, ReconciliationLine, "operator_import_reconciliation", params)


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    account_id: str
    is_admin: bool
    key_id: UUID


async def whoami(conn: AsyncConnection[Any], *, api_key: str) -> Identity:
    return await _one(conn, Identity, "whoami", {"api_key": api_key})


# ---------------------------------------------------------------------------------------------
# Currencies
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    exponent: int


async def currencies(conn: AsyncConnection[Any]) -> list[Currency]:
    """Every currency Tollgate accepts, with its exponent (decimals of the minor unit)."""
    return await _all(conn, Currency, "currencies", {})
