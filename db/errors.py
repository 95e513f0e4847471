"""The one place that turns PostgreSQL errors into Tollgate's domain errors.

Tollgate's own rules raise SQLSTATEs of class TG (see db/sql/10-guards.sql) and name the rule
in the error's CONSTRAINT field; table and domain constraints are named too. Both names are
part of the API: they become the stable ``code`` of an error response.
"""

from __future__ import annotations

import re
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
    "unsupported_media_type",
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
    "TG022": ("conflict", "payment_already_used"),
    "TG030": ("invalid", "invalid_event"),
    "TG031": ("invalid", "invalid_signature"),
    "TG040": ("conflict", "unbalanced_posting"),
    "TG050": ("conflict", "under_review"),
}

# A refusal of one transfer of a batch (api.transfer_batch_v1) starts with its position: kept
# when the message is replaced.
BATCH_POSITION = re.compile(r"^transfer \d+: ")

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
    "payment_intents_currency_fkey": (
        "invalid",
        "unknown_currency",
        "unknown currency: use an ISO 4217 code",
    ),
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
    "transfer_batch_size": ("invalid", "invalid_batch", None),
    "transfer_batch_key_length": ("invalid", "invalid_idempotency_key", None),
    "transfer_amount_one": ("invalid", "invalid_amount", None),
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
        "the balance (less credits held, plus any overdraft limit) is too low for this",
    ),
    "overdraft_limit_range": ("invalid", "invalid_overdraft_limit", None),
    "ledger_accounts_overdraft_limit_range": (
        "invalid",
        "invalid_overdraft_limit",
        "an overdraft limit is 0 to 999999999999 minor units",
    ),
    "ledger_accounts_overdraft_bounded": (
        "invalid",
        "invalid_overdraft_limit",
        "every account's overdraft has a limit",
    ),
    "ledger_accounts_overdraft_flag": (
        "invalid",
        "invalid_overdraft_limit",
        "allow_negative says whether the overdraft limit is above zero",
    ),
    "ledger_accounts_balance_range": (
        "invalid",
        "amount_out_of_range",
        "this would take a balance beyond 10^18 minor units",
    ),
    "ledger_entries_amount_range": (
        "invalid",
        "amount_out_of_range",
        "a single movement is less than 10^15 minor units",
    ),
    "usage_events_cost_range": (
        "invalid",
        "amount_out_of_range",
        "a usage event costs at most 999999999999 minor units",
    ),
    "holds_expiry_range": (
        "invalid",
        "invalid_hold_seconds",
        "a hold lasts 1 to 86400 seconds",
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
    "stripe_webhook_secret_format": ("invalid", "invalid_webhook_secret", None),
}

# The rest of the schema's named constraints that a caller can run into, by what they guard.
_UNKNOWN_CURRENCY: tuple[Kind, str, str | None] = (
    "invalid",
    "unknown_currency",
    "unknown currency: use an ISO 4217 code",
)
CONSTRAINTS |= {
    name: _UNKNOWN_CURRENCY
    for name in (
        "actions_currency_fkey",
        "ledger_accounts_currency_fkey",
        "metric_prices_currency_fkey",
        "reconciliation_lines_currency_fkey",
        "risk_rules_currency_fkey",
        "spend_caps_currency_fkey",
        "spend_daily_currency_fkey",
        "transactions_currency_fkey",
        "usage_carry_currency_fkey",
        "usage_events_currency_fkey",
    )
}
_AGENT: tuple[Kind, str, str | None] = (
    "invalid",
    "invalid_agent",
    "agent ids are 1-128 letters, digits and _ . : @ -",
)
_METRIC: tuple[Kind, str, str | None] = (
    "invalid",
    "invalid_metric",
    "metric names are 1-100 characters of a-z, 0-9 and _ . : - starting with a letter",
)
_NOTE: tuple[Kind, str, str | None] = (
    "invalid",
    "invalid_note",
    "a note is at most 2000 characters",
)
CONSTRAINTS |= {
    "x402_settlements_answer": ("invalid", "invalid_settlement", None),
    "x402_settlements_identifier_format": (
        "invalid",
        "invalid_payment_identifier",
        "a payment identifier is 16-128 letters, digits, _ and -",
    ),
    "holds_agent_id_format": _AGENT,
    "spend_caps_agent_id_format": _AGENT,
    "usage_events_agent_id_format": _AGENT,
    "metric_prices_metric_format": _METRIC,
    "usage_events_metric_format": _METRIC,
    "audit_log_note_length": _NOTE,
    "reviews_note_length": _NOTE,
    "api_keys_label_length": (
        "invalid",
        "invalid_label",
        "a key's label is at most 200 characters",
    ),
    "stripe_webhook_secrets_label_length": (
        "invalid",
        "invalid_label",
        "a secret's label is at most 200 characters",
    ),
    "api_keys_key_hash_key": ("conflict", "key_exists", "this API key exists already"),
    "metric_prices_unit_price_positive": (
        "invalid",
        "invalid_amount",
        "a unit price must be positive and below 10^12 minor units",
    ),
    "outbox_consumers_name_format": (
        "invalid",
        "invalid_consumer",
        "consumer names are 1-63 characters of a-z, 0-9 and _ . - starting with a letter",
    ),
    "reconciliation_batches_source_format": (
        "invalid",
        "invalid_source",
        "a source is 1-63 characters of a-z, 0-9 and _ . - starting with a letter or digit",
    ),
    "reconciliation_lines_reference_length": (
        "invalid",
        "invalid_reference",
        "a statement line's reference is 1-200 characters",
    ),
    "risk_rules_velocity_count_positive": (
        "invalid",
        "invalid_request",
        "velocity_count must be positive",
    ),
    "risk_rules_velocity_window_positive": (
        "invalid",
        "invalid_request",
        "velocity_seconds must be positive",
    ),
    "spend_caps_soft_pct_range": ("invalid", "invalid_request", "soft_pct is 1 to 100"),
    "ledger_accounts_low_balance_non_negative": (
        "invalid",
        "invalid_amount",
        "low_balance may not be negative",
    ),
    "holds_expiry_after_creation": (
        "invalid",
        "invalid_hold_seconds",
        "a hold must last at least a second",
    ),
    "usage_events_id_format": (
        "invalid",
        "invalid_event",
        "usage event ids are 1-128 printable ASCII characters without spaces",
    ),
    "usage_events_quantity_range": (
        "invalid",
        "invalid_quantity",
        "quantity must be positive and below 10^15",
    ),
    "usage_events_cost_non_negative": ("invalid", "invalid_amount", "a cost may not be negative"),
    "payment_intents_stripe_id_format": (
        "invalid",
        "invalid_stripe_id",
        "a PaymentIntent id looks like pi_...",
    ),
    "refunds_stripe_id_key": (
        "conflict",
        "duplicate_stripe_id",
        "this refund is recorded already",
    ),
    "payment_intents_stripe_id_key": (
        "conflict",
        "duplicate_stripe_id",
        "this PaymentIntent is recorded already",
    ),
    "subscriptions_stripe_id_format": (
        "invalid",
        "invalid_event",
        "a subscription id looks like sub_...",
    ),
    "ledger_postings_idempotency_key": (
        "conflict",
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request",
    ),
    "usage_events_pkey": ("conflict", "duplicate_event", "this usage event was recorded already"),
    "outbox_consumers_pkey": ("conflict", "consumer_exists", "this consumer is registered already"),
    "page_limit": ("invalid", "invalid_request", None),
    "apply_batch_size": ("invalid", "invalid_request", "a batch applies 1 to 5000 events"),
    "page_cursor": ("invalid", "invalid_cursor", None),
}

# Named constraints no request can break through the API: invariants between Tollgate's own
# rows (each kept by the function or trigger that writes them), keys Tollgate assigns itself,
# and reference data. One reached is a defect or a direct write; it is answered 409
# `rule_violated` with a message that names no table.
INVARIANTS: frozenset[str] = frozenset(
    {
        # primary keys Tollgate assigns, and reference data
        *(
            f"{table}_pkey"
            for table in (
                "accounts",
                "actions",
                "api_keys",
                "audit_heads",
                "audit_log",
                "audit_seals",
                "currencies",
                "hold_transitions",
                "holds",
                "idempotency_keys",
                "ledger_accounts",
                "ledger_entries",
                "ledger_postings",
                "metric_prices",
                "outbox",
                "outbox_deliveries",
                "payment_entitlements",
                "payment_events",
                "payment_intents",
                "payment_statuses",
                "payment_transitions",
                "reconciliation_batches",
                "reconciliation_lines",
                "review_transitions",
                "reviews",
                "risk_rules",
                "spend_caps",
                "spend_daily",
                "spend_notices",
                "stripe_currencies",
                "subscriptions",
                "transaction_transitions",
                "transactions",
                "usage_carry",
            )
        ),
        # every row's account, and references between Tollgate's own rows
        *(
            f"{table}_account_uuid_fkey"
            for table in (
                "api_keys",
                "audit_heads",
                "audit_log",
                "holds",
                "idempotency_keys",
                "ledger_accounts",
                "ledger_entries",
                "ledger_postings",
                "outbox",
                "outbox_deliveries",
                "payment_entitlements",
                "payment_events",
                "payment_intents",
                "reconciliation_lines",
                "reviews",
                "risk_rules",
                "spend_caps",
                "spend_daily",
                "spend_notices",
                "subscriptions",
                "transactions",
                "usage_carry",
                "usage_events",
            )
        ),
        "holds_ledger_account_fkey",
        "holds_posting_id_fkey",
        "ledger_entries_ledger_account_fkey",
        "ledger_entries_posting_id_fkey",
        "ledger_postings_reverses_fkey",
        "outbox_deliveries_consumer_fkey",
        "outbox_deliveries_outbox_id_fkey",
        "payment_entitlements_payment_intent_id_fkey",
        "payment_events_payment_intent_id_fkey",
        "payment_events_subscription_id_fkey",
        "payment_intents_idempotency_key_fkey",
        "reconciliation_lines_batch_id_fkey",
        "reconciliation_lines_transaction_id_fkey",
        "reviews_payment_intent_id_fkey",
        "reviews_transaction_id_fkey",
        "spend_notices_cap_id_fkey",
        "stripe_currencies_code_fkey",
        "transactions_payment_intent_id_fkey",
        "transactions_reversal_posting_id_fkey",
        "transactions_settlement_posting_id_fkey",
        "usage_events_posting_id_fkey",
        # retention's archives (db/sql/89-retention.sql): only retention.archive_batch writes
        # them, moving rows that kept these keys while live
        *(
            f"{table}_archive_{suffix}"
            for table, suffix in (
                ("audit_log", "account_uuid_fkey"),
                ("audit_log", "pkey"),
                ("audit_seals", "audit_id_key"),
                ("audit_seals", "pkey"),
                ("outbox", "account_uuid_fkey"),
                ("outbox", "event_id_key"),
                ("outbox", "pkey"),
                ("payment_events", "account_uuid_fkey"),
                ("payment_events", "pkey"),
                ("usage_events", "account_uuid_fkey"),
                ("usage_events", "pkey"),
            )
        ),
        # retention's arguments (`tollgate archive` checks them first)
        "retention_batch",
        "retention_horizon",
        "retention_kind",
        # uniqueness Tollgate's functions keep (they insert ON CONFLICT or look first)
        "accounts_external_id_key",
        "audit_seals_audit_id_key",
        "idempotency_keys_payment_id_key",
        "ledger_accounts_account_name_currency_key",
        "ledger_accounts_id_currency_key",
        "ledger_entries_version_key",
        "outbox_event_id_key",
        "reconciliation_lines_batch_line_key",
        "reviews_payment_intent_id_key",
        "reviews_transaction_id_key",
        "risk_rules_scope_key",
        "spend_caps_scope_key",
        "subscriptions_stripe_id_key",
        # row invariants kept by the functions and triggers that write the rows
        "api_keys_key_hash_length",
        "api_keys_key_prefix_length",
        "api_keys_revoked_after_created",
        "audit_heads_rows_non_negative",
        "audit_log_90_seal",
        "audit_seals_seq_positive",
        "currencies_code_format",
        "currencies_exponent_range",
        "hold_transitions_terminal_is_final",
        "holds_captured_amount_non_negative",
        "holds_captured_has_amount",
        "x402_settlements_account_uuid_fkey",
        "x402_settlements_claimed",
        "x402_settlements_hold_id_fkey",
        "x402_settlements_immutable",
        "x402_settlements_one_per_hold",
        "x402_settlements_own_hold",
        "x402_settlements_payload_sha256_length",
        "x402_settlements_pkey",
        "x402_settlements_same_payload",
        "x402_settlements_same_request",
        "x402_settlements_settled_has_response",
        "x402_settlements_used",
        "holds_posting_when_spent",
        "idempotency_keys_completed_has_response",
        "ledger_accounts_name_format",
        "ledger_accounts_version_non_negative",
        "ledger_entries_account_version_positive",
        "ledger_entries_amount_non_zero",
        "ledger_entries_balance_arithmetic",
        "ledger_postings_balanced",
        "ledger_postings_key_has_hash",
        "ledger_postings_reversal_names_original",
        "outbox_deliveries_attempts_non_negative",
        "outbox_deliveries_delivered_when",
        "outbox_payload_size",
        "outbox_topic_format",
        "payment_entitlements_uses_left_range",
        "payment_events_matched_has_account",
        "payment_events_one_subject",
        "payment_events_processed_when_final",
        "payment_transitions_not_to_self",
        "payment_transitions_terminal_is_final",
        "review_transitions_terminal_is_final",
        "reviews_decided_when",
        "reviews_one_subject",
        "reviews_rules_not_empty",
        "spend_daily_spent_non_negative",
        "stripe_currencies_exponent_range",
        "stripe_currencies_min_positive",
        "stripe_currencies_step_values",
        "transaction_transitions_not_to_self",
        "transaction_transitions_terminal_is_final",
        "transactions_reversed_has_posting",
        "transactions_settled_has_posting",
        "usage_carry_fraction_range",
        "usage_events_cost_has_currency",
        # refunds, disputes and what they took back: written by their functions and events
        "disputes_account_uuid_fkey",
        "disputes_currency_fkey",
        "disputes_frozen_non_negative",
        "disputes_payment_intent_id_fkey",
        "disputes_pkey",
        "disputes_stripe_id_format",
        "disputes_stripe_id_key",
        "payment_takebacks_account_uuid_fkey",
        "payment_takebacks_currency_fkey",
        "payment_takebacks_parts_non_negative",
        "payment_takebacks_parts_sum",
        "payment_takebacks_payment_intent_id_fkey",
        "payment_takebacks_pkey",
        "payment_takebacks_posting_id_fkey",
        "payment_takebacks_posting_id_key",
        "payment_takebacks_reason_values",
        "refunds_account_uuid_fkey",
        "refunds_account_idempotency_key",
        "refunds_completed_has_response",
        "refunds_completed_has_stripe_id",
        "refunds_currency_fkey",
        "refunds_payment_intent_id_fkey",
        "refunds_pkey",
        "refunds_requested_by_fkey",
        # webhook secrets: written only by the owner's functions (tollgate webhook-secret)
        "stripe_webhook_secrets_pkey",
        "stripe_webhook_secrets_prefix_length",
        "stripe_webhook_secrets_inner_key_length",
        "stripe_webhook_secrets_outer_key_length",
        "stripe_webhook_secrets_inner_key_key",
    }
)

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
    # The server cannot take writes now: a session or server read-only (a standby, a primary
    # being demoted, default_transaction_read_only), or out of disk or memory.
    pgerr.ReadOnlySqlTransaction,
    pgerr.DiskFull,
    pgerr.OutOfMemory,
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
        if friendly and (at := BATCH_POSITION.match(message)):  # which transfer of a batch
            friendly = at.group(0) + friendly
        return DomainError(kind, code, friendly or message)
    if constraint in INVARIANTS:
        return DomainError("conflict", "rule_violated", "the request breaks a rule of the ledger")
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
    if sqlstate.startswith("23"):  # no named constraint (NOT NULL): the database's words name
        # its tables, so they are not passed on.
        return DomainError("invalid", "rejected_by_rule", "a required value is missing")
    return None


def translate(exc: psycopg.Error) -> Exception:
    """What to raise instead of ``exc``: a DomainError, or ``exc`` itself for a defect."""
    return from_psycopg(exc) or exc
