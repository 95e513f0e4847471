"""What the client sends and what Tollgate answers, as the client sees it.

The client's own copy of the wire format, so that it installs without the server (httpx and
pydantic only). Shapes only: the server decides what is allowed (amount rules, lengths,
patterns) and answers a refusal as an error (``BadRequest`` with the reason's code). Answers may
carry fields this version does not know; they are ignored. ``tests/test_client_alone.py``
checks that every model here has the same fields as the server's model of the same name.

Amounts are exact: a request's decimal amount is a ``Decimal`` (or an ``int``, or a string
like "12.50"; never a float) and travels as a string; each has an ``*_minor`` twin, an integer
of minor units. Answers carry both forms, the decimal as a string with the currency's
decimals.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict


def _exact(value: Any) -> Any:
    # A float has already lost the amount's exact value (0.1 is not 1/10): refuse it here
    # rather than send an amount nobody wrote.
    if isinstance(value, bool | float):
        raise ValueError("give an amount as a Decimal, an int or a string such as '12.50'")
    return value


DecimalAmount = Annotated[Decimal, BeforeValidator(_exact)]

TransactionStatus = Literal["pending", "settled", "failed", "reversed"]
HoldStatus = Literal["active", "captured", "released", "expired"]
PaymentStatus = Literal[
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "processing",
    "requires_capture",
    "succeeded",
    "canceled",
    "refunded",
]


class Request(BaseModel):
    """A request body: no field the server would not know."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


class AuthorizeRequest(Request):
    account_id: str | None = None
    action: str
    cost: DecimalAmount | None = None
    cost_minor: int | None = None
    currency: str | None = None
    agent_id: str | None = None
    hold_seconds: int | None = None


class CaptureRequest(Request):
    amount: DecimalAmount | None = None
    amount_minor: int | None = None


class UsageEvent(Request):
    """One usage event; its ``id`` makes sending it again harmless."""

    id: str
    account_id: str | None = None
    agent_id: str | None = None
    metric: str
    quantity: DecimalAmount
    occurred_at: AwareDatetime


class PaymentCreate(Request):
    amount: DecimalAmount | None = None
    amount_minor: int | None = None
    currency: str
    purpose: str | None = None
    description: str | None = None
    payment_method: str | None = None
    account_id: str | None = None


class TransferCreate(Request):
    from_account_id: str | None = None
    to_account_id: str
    amount: DecimalAmount | None = None
    amount_minor: int | None = None
    currency: str


class TransferBatchCreate(Request):
    transfers: list[TransferCreate]


class TransactionCreate(Request):
    account_id: str | None = None
    reference: str
    amount: DecimalAmount | None = None
    amount_minor: int | None = None
    currency: str
    payment_id: str | None = None


class ActionPriceIn(Request):
    price: DecimalAmount | None = None
    price_minor: int | None = None
    currency: str
    description: str | None = None


class MetricPriceIn(Request):
    unit_price: DecimalAmount
    currency: str


class SpendCapIn(Request):
    agent_id: str | None = None
    period: Literal["day", "month"]
    currency: str
    hard_limit: DecimalAmount | None = None
    hard_limit_minor: int | None = None
    soft_pct: int = 80


class WalletIn(Request):
    """Fields left out are not changed (so they are not sent: ``exclude_none``)."""

    allow_negative: bool | None = None
    overdraft_limit: DecimalAmount | None = None
    overdraft_limit_minor: int | None = None
    low_balance: DecimalAmount | None = None
    low_balance_minor: int | None = None


class DecisionIn(Request):
    note: str | None = None


class RiskRuleIn(Request):
    max_amount: DecimalAmount | None = None
    max_amount_minor: int | None = None
    velocity_count: int | None = None
    velocity_seconds: int | None = None
    first_amount_max: DecimalAmount | None = None
    first_amount_max_minor: int | None = None


class ReconciliationLineIn(Request):
    reference: str
    amount: DecimalAmount | None = None
    amount_minor: int | None = None
    currency: str
    date: dt.date
    account_id: str | None = None


class ReconciliationIn(Request):
    source: str
    lines: list[ReconciliationLineIn]


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------


class ApiError(BaseModel):
    code: str
    message: str
    request_id: str | None = None  # the request's X-Request-Id: quote it when asking about it


class Health(BaseModel):
    status: str


class Identity(BaseModel):
    account_id: str
    is_admin: bool
    key_id: UUID


class Authorization(BaseModel):
    allowed: bool
    via: str  # subscription, payment or credits
    account_id: str
    action: str
    hold_id: UUID | None  # with credits: capture or release it when done
    expires_at: dt.datetime | None  # when the hold lapses
    uses_left: int | None  # with a payment: further paid runs of this action
    remaining: str | None  # credits still available after this authorization
    remaining_minor: int | None
    currency: str | None


class PaymentRequest(BaseModel):
    """An HTTP request to send as it is (``Idempotency-Key`` included)."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


class PaymentOption(BaseModel):
    scheme: str  # stripe.payment: pay for this run; credits: top up, then retry
    description: str
    amount: str
    amount_minor: int
    currency: str
    request: PaymentRequest


class PaymentRequired(BaseModel):
    """authorize's 402: why not, and exactly how to pay."""

    allowed: bool = False
    error: ApiError
    account_id: str
    action: str
    price: str | None
    price_minor: int | None
    currency: str | None
    remaining: str | None
    remaining_minor: int | None
    accepts: list[PaymentOption]


class Continuation(BaseModel):
    allowed: bool
    status: str | None  # of the newest payment; None if none
    payment_id: UUID | None
    account_id: str
    purpose: str | None
    error: ApiError | None = None


class HoldOut(BaseModel):
    id: UUID
    account_id: str
    agent_id: str | None
    action: str
    amount: str
    amount_minor: int
    captured_amount: str | None
    captured_amount_minor: int | None
    currency: str
    status: str  # active, captured, released or expired
    expires_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime


class UsageResult(BaseModel):
    index: int  # position of the event in the batch, from 0
    id: str | None
    outcome: str  # accepted, duplicate or rejected
    reason: str | None = None
    cost: str | None = None
    currency: str | None = None


class UsageReceipt(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[UsageResult]


class Payment(BaseModel):
    id: UUID
    stripe_id: str
    account_id: str
    amount: str
    amount_minor: int
    currency: str
    status: str
    purpose: str | None
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class PaymentCreated(Payment):
    client_secret: str | None  # for confirming the payment with Stripe.js or Stripe's SDK


class Balance(BaseModel):
    name: str  # main: the account's own balance
    currency: str
    balance: str
    balance_minor: int
    version: int  # number of ledger entries posted to this balance
    allow_negative: bool


class Balances(BaseModel):
    account_id: str
    balances: list[Balance]


class Transfer(BaseModel):
    posting_id: UUID
    from_account_id: str
    to_account_id: str
    amount: str
    amount_minor: int
    currency: str
    created_at: dt.datetime


class TransferBatch(BaseModel):
    transfers: list[Transfer]


class Transaction(BaseModel):
    id: UUID
    account_id: str
    reference: str
    amount: str
    amount_minor: int
    currency: str
    status: str  # pending, settled, failed or reversed
    payment_id: UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class TransactionPage(BaseModel):
    transactions: list[Transaction]  # newest first
    next_cursor: str | None = None  # pass as ``cursor`` for the next page; None once not full
    next_before: UUID | None  # the same place, as the last id: pass as ``before``


class UsageRow(BaseModel):
    period_start: dt.datetime
    metric: str
    events: int
    quantity_sum: Decimal
    quantity_max: Decimal
    cost: str | None
    currency: str | None


class UsageReport(BaseModel):
    account_id: str
    period: str
    rows: list[UsageRow]


class ActionPriceOut(BaseModel):
    action: str
    price: str
    price_minor: int
    currency: str
    description: str | None


class MetricPriceOut(BaseModel):
    metric: str
    unit_price: Decimal
    currency: str


class SpendCapOut(BaseModel):
    account_id: str
    agent_id: str | None
    period: str
    currency: str
    hard_limit: str
    hard_limit_minor: int
    soft_pct: int


class WalletOut(BaseModel):
    account_id: str
    currency: str
    allow_negative: bool | None
    low_balance: str | None
    low_balance_minor: int | None
    overdraft_limit: str | None = None
    overdraft_limit_minor: int | None = None


class ReviewOut(BaseModel):
    id: UUID
    account_id: str
    subject: str  # transaction or payment
    subject_ref: str  # the transaction's reference, or the payment's pi_ id
    rules: list[str]
    detail: str
    status: str  # open, approved or rejected
    decided_by: str | None
    note: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None


class RiskRuleOut(BaseModel):
    account_id: str | None
    currency: str
    max_amount: str | None
    max_amount_minor: int | None
    velocity_count: int | None
    velocity_seconds: int | None
    first_amount_max: str | None
    first_amount_max_minor: int | None


class ReconciliationLineOut(BaseModel):
    line_no: int
    reference: str
    status: str  # matched, missing_ours, amount_mismatch, status_mismatch or duplicate
    transaction_id: UUID | None
    note: str | None


class ReconciliationOut(BaseModel):
    batch_id: UUID
    matched: int
    mismatched: int
    duplicates: int
    lines: list[ReconciliationLineOut]


# ---------------------------------------------------------------------------------------------
# Lists: a page of at most ``limit`` rows; pass ``next_cursor`` as ``cursor`` for the next one
# (None once a page is not full)
# ---------------------------------------------------------------------------------------------


class ActionPage(BaseModel):
    actions: list[ActionPriceOut]  # by name
    next_cursor: str | None


class MetricPricePage(BaseModel):
    metrics: list[MetricPriceOut]  # by name
    next_cursor: str | None


class SpendCapPage(BaseModel):
    spend_caps: list[SpendCapOut]  # the account's own (agent_id None) first, then each agent's
    next_cursor: str | None


class Wallet(BaseModel):
    account_id: str
    currency: str
    balance: str
    balance_minor: int
    held: str  # reserved by active holds
    held_minor: int
    available: str | None  # what can still be held or spent: balance + overdraft_limit - held
    available_minor: int | None
    overdraft_limit: str | None
    overdraft_limit_minor: int | None
    allow_negative: bool
    low_balance: str | None
    low_balance_minor: int | None
    version: int  # number of ledger entries posted to this balance


class WalletPage(BaseModel):
    wallets: list[Wallet]  # one per currency, by currency
    next_cursor: str | None


class HoldPage(BaseModel):
    holds: list[HoldOut]  # newest first
    next_cursor: str | None


class RiskRulePage(BaseModel):
    risk_rules: list[RiskRuleOut]  # the defaults (account_id None) first
    next_cursor: str | None


class ApiKeyOut(BaseModel):
    """An API key as it can be read back: never the key itself, nor its hash."""

    key_id: UUID
    account_id: str
    key_prefix: str  # the key's first characters
    is_admin: bool
    label: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class ApiKeyPage(BaseModel):
    keys: list[ApiKeyOut]  # oldest first, revoked ones too
    next_cursor: str | None


class PaymentPage(BaseModel):
    payments: list[Payment]  # newest first
    next_cursor: str | None


class Event(BaseModel):
    """An outbox event of the account, as ``tollgate listen`` delivers it (without attempt)."""

    id: UUID  # stable: a redelivery has the same id
    type: str
    created: dt.datetime
    account_id: str
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[Event]  # newest first
    next_cursor: str | None
