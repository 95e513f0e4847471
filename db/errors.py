"""The one place that turns PostgreSQL errors into Tollgate's domain errors.

Tollgate's own rules raise SQLSTATEs of class TG (see db/sql/10-guards.sql) and name the rule
in the error's CONSTRAINT field; table and domain constraints are named too. Both names are
part of the API: they become the stable ``code`` of an error response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import errors as pgerr
from psycopg_pool import PoolTimeout

Kind = Literal[
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "invalid",
    "payment_required",
    "unavailable",
    "bad_gateway",
    "too_large",
]


@dataclass
class DomainError(Exception):
    kind: Kind
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# Tollgate's own SQLSTATEs. The message is the one the function raised, written for people.
RULES: dict[str, tuple[Kind, str]] = {
    "TG001": ("unauthorized", "invalid_api_key"),
    "TG002": ("forbidden", "admin_key_required"),
    "TG003": ("not_found", "not_found"),
    "TG010": ("conflict", "invalid_transition"),
    "TG011": ("conflict", "immutable"),
    "TG012": ("conflict", "append_only"),
    "TG020": ("conflict", "idempotency_key_reused"),
    "TG021": ("conflict", "idempotency_in_progress"),
    "TG030": ("invalid", "invalid_event"),
    "TG040": ("conflict", "unbalanced_posting"),
    "TG050": ("conflict", "under_review"),
}

# Named table and domain constraints, and rules raised with a standard SQLSTATE, that a
# caller can run into: (kind, code, message). A message of None passes on the database's own,
# which is written for people; otherwise the message hides the schema.
CONSTRAINTS: dict[str, tuple[Kind, str, str | None]] = {
    "amount_minor_range": (
        "invalid",
        "invalid_amount",
        "amount must be positive, and at most 999999999999 minor units",
    ),
    "amount_decimals": ("invalid", "invalid_amount", None),
    "payment_amount_max": (
        "invalid",
        "invalid_amount",
        "amount is above the largest payment Stripe accepts (99999999 minor units)",
    ),
    "payment_intents_currency_fkey": ("invalid", "unknown_currency", None),
    "stripe_currency": ("invalid", "unsupported_currency", None),
    "stripe_amount_step": ("invalid", "invalid_amount", None),
    "stripe_minimum_charge": ("invalid", "amount_below_minimum", None),
    "currency_known": ("invalid", "unknown_currency", None),
    "purpose_format": (
        "invalid",
        "invalid_purpose",
        "purpose must be 1-100 characters of a-z, 0-9 and _ . : - starting with a letter or digit",
    ),
    "description_length": (
        "invalid",
        "invalid_description",
        "description is limited to 1000 characters",
    ),
    "idempotency_keys_key_format": (
        "invalid",
        "invalid_idempotency_key",
        "Idempotency-Key must be 1-255 printable ASCII characters without spaces",
    ),
    "ledger_postings_idempotency_key_format": (
        "invalid",
        "invalid_idempotency_key",
        "Idempotency-Key must be 1-255 printable ASCII characters without spaces",
    ),
    "accounts_external_id_format": (
        "invalid",
        "invalid_account_id",
        "account ids are 1-128 characters of letters, digits and _ . : @ -",
    ),
    "transactions_reference_format": (
        "invalid",
        "invalid_reference",
        "references are 1-128 letters, digits and _ . : -, starting with a letter or digit",
    ),
    "transactions_account_reference_key": (
        "conflict",
        "duplicate_reference",
        "a transaction with this reference already exists for the account",
    ),
    "transaction_matches_payment": ("invalid", "payment_mismatch", None),
    "transfer_distinct_accounts": ("invalid", "transfer_to_self", None),
    "transactions_payment_intent_id_key": (
        "conflict",
        "payment_already_linked",
        "the payment already backs another transaction",
    ),
    "ledger_postings_reverses_once": ("conflict", "already_reversed", "it was already reversed"),
    "overdraft_in_use": ("conflict", "overdraft_in_use", None),
    "hold_capture_within_hold": ("conflict", "capture_exceeds_hold", None),
    "spend_cap": ("payment_required", "spend_cap_exceeded", None),
    "usage_batch_size": ("invalid", "invalid_batch", None),
    "usage_period": ("invalid", "invalid_request", None),
    "holds_agent_id_format": ("invalid", "invalid_agent", None),
    "cost_currency": ("invalid", "invalid_currency", None),
    "reconciliation_line": ("invalid", "invalid_line", None),
    "risk_rules_velocity_pair": (
        "invalid",
        "invalid_request",
        "velocity_count and velocity_seconds go together",
    ),
    "ledger_accounts_balance_non_negative": (
        "conflict",
        "insufficient_funds",
        "the balance may not go below zero and is too low for this",
    ),
    "refund_refundable": ("conflict", "payment_not_refundable", None),
    "refund_within_payment": ("invalid", "refund_exceeds_payment", None),
    "refund_payment_disputed": ("conflict", "payment_disputed", None),
    "payment_dispute_open": ("conflict", "payment_disputed", None),
    "amount_one_form": ("invalid", "invalid_amount", None),
    "refunds_idempotency_key_format": (
        "invalid",
        "invalid_idempotency_key",
        "Idempotency-Key must be 1-255 printable ASCII characters without spaces",
    ),
    "refunds_stripe_id_format": (
        "bad_gateway",
        "stripe_error",
        "Stripe answered with a refund id Tollgate does not recognise",
    ),
    "payment_intents_amount_refunded_range": (
        "conflict",
        "invalid_refund",
        "a payment cannot have refunded more than its amount",
    ),
    "ledger_accounts_debt_not_positive": ("conflict", "invalid_debt", None),
    "payment_events_id_format": ("invalid", "invalid_event", "event id must look like evt_..."),
    "payment_events_type_format": ("invalid", "invalid_event", "event type is malformed"),
}

# Nothing was done: no connection could be had, or the transaction was rolled back. Safe to
# retry any request.
UNAVAILABLE = (
    PoolTimeout,  # no connection within the pool timeout: nothing was sent
    pgerr.CannotConnectNow,  # the server is starting or shutting down
    pgerr.TooManyConnections,
    pgerr.SerializationFailure,
    pgerr.DeadlockDetected,
    pgerr.LockNotAvailable,
    pgerr.QueryCanceled,
)

# The connection broke while a request used it: a statement may have committed (autocommit)
# before the answer was lost, so only an idempotent request may simply be sent again.
LOST = psycopg.OperationalError


def from_psycopg(exc: psycopg.Error) -> DomainError | None:
    """The domain error for ``exc``, or None when it is a defect rather than a refusal."""
    sqlstate = exc.sqlstate or ""
    constraint = exc.diag.constraint_name if exc.diag else None
    message = (exc.diag.message_primary if exc.diag else None) or str(exc)
    if sqlstate in RULES:
        kind, code = RULES[sqlstate]
        return DomainError(kind, code, message)
    if constraint in CONSTRAINTS:
        kind, code, friendly = CONSTRAINTS[constraint]
        return DomainError(kind, code, friendly or message)
    if isinstance(exc, UNAVAILABLE):
        return DomainError("unavailable", "database_unavailable", "the database is unavailable")
    if isinstance(exc, LOST):
        return DomainError(
            "unavailable",
            "database_connection_lost",
            "the connection to the database was lost; the request may have been applied:"
            " read before retrying, or retry with the same idempotency key",
        )
    if isinstance(exc, psycopg.DataError) and not sqlstate:  # refused by psycopg, e.g. a NUL
        return DomainError("invalid", "invalid_input", message)
    if sqlstate.startswith("22"):  # data exception: a value out of range or malformed
        return DomainError("invalid", "invalid_input", message)
    if sqlstate.startswith("23"):  # a constraint not listed above: still the caller's input
        return DomainError("invalid", "rejected_by_rule", message)
    return None


def translate(exc: psycopg.Error) -> Exception:
    """What to raise instead of ``exc``: a DomainError, or ``exc`` itself for a defect."""
    return from_psycopg(exc) or exc
