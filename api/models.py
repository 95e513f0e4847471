"""Request and response shapes. Shapes only: whether a value is allowed is the database's call."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    model_validator,
)
from pydantic_core import PydanticCustomError

from api.observability import current_request_id


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from "\ud800" in JSON
        raise ValueError("must be valid Unicode text") from None
    return value


# Text PostgreSQL can store; the length caps only bound the request size.
Text = Annotated[str, AfterValidator(_no_nul)]
BIGINT_MAX = 2**63 - 1

_DECIMAL_TEXT = re.compile(r"^-?[0-9]{1,30}(\.[0-9]{1,30})?$")


def _decimal_amount(value: Any) -> Decimal:
    """A decimal amount from a JSON number (parsed exactly) or a string like "1250.50".

    Only the form is checked here; the database decides whether the amount is allowed for the
    currency (decimals, sign, maximum).
    """
    if isinstance(value, bool):
        raise ValueError("amount must be a number or a decimal string")
    if isinstance(value, int):
        value = Decimal(value)
    elif isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise ValueError('amount must be a decimal string such as "1250.50"')
        value = Decimal(value)
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError("amount must be a number or a decimal string")
    if abs(value.adjusted()) > 30 or -value.as_tuple().exponent > 30:  # type: ignore[operator]
        raise ValueError("amount has too many digits")
    return value


# Exact decimal amounts: "1250.50" or 1250.50 (the body parser keeps numbers exact).
DecimalAmount = Annotated[
    Decimal,
    BeforeValidator(_decimal_amount),
    Field(
        json_schema_extra={"anyOf": [{"type": "string"}, {"type": "number"}]}, examples=["1250.50"]
    ),
]
# The same amount as an integer of minor units: 1250 is 12.50 USD, 1250 JPY, 1.250 KWD.
MinorAmount = Annotated[StrictInt, Field(ge=-BIGINT_MAX, le=BIGINT_MAX, examples=[1250])]

# Codes of the 422 a request gets for giving both forms of an amount, or neither.
AMOUNT_CODES = frozenset({"amount_conflict", "amount_required"})


def one_amount(model: BaseModel, name: str, *, required: bool, null_counts: bool = False) -> None:
    """A request gives ``name`` (a decimal in major units) or ``name_minor`` (an integer of
    minor units), never both; and one of them when ``required``."""
    names = (name, f"{name}_minor")
    if all(getattr(model, n) is not None for n in names) or (
        # where a null means something (a cleared setting), naming both is ambiguous too
        null_counts and model.model_fields_set >= set(names)
    ):
        raise PydanticCustomError(
            "amount_conflict",
            "give {name} (a decimal) or {name}_minor (minor units), not both",
            {"name": name},
        )
    if required and getattr(model, name) is None and getattr(model, f"{name}_minor") is None:
        raise PydanticCustomError(
            "amount_required",
            'give {name} (a decimal, e.g. "12.50") or {name}_minor (an integer of minor units)',
            {"name": name},
        )


Currency = Annotated[Text, Field(pattern=r"^[A-Za-z]{3}$", examples=["USD"])]
AccountRef = Annotated[Text, Field(max_length=200, examples=["user_123"])]


class ApiError(BaseModel):
    code: str = Field(examples=["invalid_amount"])
    message: str
    request_id: str | None = Field(
        default_factory=current_request_id,
        description="the request's X-Request-Id: quote it when asking about this answer",
        examples=["4f1c2b9e0d8a4e6fb2a7c3d5e9f01234"],
    )


class ErrorBody(BaseModel):
    error: ApiError


class PaymentCreate(BaseModel):
    """POST /v1/payments: ``amount`` (a decimal, "12.50") or ``amount_minor`` (1250)."""

    model_config = ConfigDict(extra="forbid")

    amount: DecimalAmount | None = None
    amount_minor: MinorAmount | None = None
    currency: Annotated[Text, Field(pattern=r"^[A-Za-z]{3}$", examples=["usd"])]
    purpose: Annotated[Text, Field(max_length=200, examples=["report.generate"])] | None = None
    description: Annotated[Text, Field(max_length=2000)] | None = None
    # A Stripe PaymentMethod to attach, so the payment can be confirmed without another call.
    payment_method: Annotated[Text, Field(pattern=r"^pm_[A-Za-z0-9_]{1,200}$")] | None = None
    # Only admin keys may name an account; other keys always pay for their own.
    account_id: Annotated[Text, Field(max_length=200, examples=["user_123"])] | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> PaymentCreate:
        one_amount(self, "amount", required=True)
        return self


class Payment(BaseModel):
    id: UUID
    stripe_id: str
    account_id: str
    amount: str = Field(
        description="decimal string with the currency's decimals", examples=["12.50"]
    )
    amount_minor: int = Field(examples=[1250])
    currency: str
    status: str
    purpose: str | None
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class PaymentCreated(Payment):
    # For confirming the payment client-side with Stripe.js or the SDK.
    client_secret: str | None


class Continuation(BaseModel):
    allowed: bool
    status: str | None = Field(description="status of the newest payment, null if none")
    payment_id: UUID | None
    account_id: str
    purpose: str | None
    error: ApiError | None = None


class WebhookReceipt(BaseModel):
    outcome: str = Field(
        description="applied, duplicate, pending, stale, rejected or ignored",
        examples=["applied"],
    )
    event_id: str
    payment_id: UUID | None
    payment_status: str | None


class Health(BaseModel):
    status: str


class TransactionCreate(BaseModel):
    """POST /v1/transactions."""

    model_config = ConfigDict(extra="forbid")

    # The key's own account if omitted; another account needs an admin key.
    account_id: AccountRef | None = None
    reference: Annotated[Text, Field(max_length=200, examples=["order-1042"])]
    amount: DecimalAmount | None = None
    amount_minor: MinorAmount | None = None
    currency: Currency
    # A Stripe payment (Tollgate id or pi_...) whose webhooks settle or fail this transaction.
    payment_id: Annotated[Text, Field(max_length=255)] | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> TransactionCreate:
        one_amount(self, "amount", required=True)
        return self


class Transaction(BaseModel):
    id: UUID
    account_id: str
    reference: str
    amount: str = Field(
        description="decimal string with the currency's decimals", examples=["1250.50"]
    )
    amount_minor: int
    currency: str
    status: str = Field(description="pending, settled, failed or reversed")
    payment_id: UUID | None
    created_at: dt.datetime
    updated_at: dt.datetime


class Identity(BaseModel):
    account_id: str
    is_admin: bool
    key_id: UUID


class TransactionPage(BaseModel):
    transactions: list[Transaction] = Field(description="newest first")
    next_before: UUID | None = Field(
        description="pass as `before` for the next page; null on the last page"
    )


TransactionStatus = Literal["pending", "settled", "failed", "reversed"]


class TransferCreate(BaseModel):
    """POST /v1/transfers: from one account's balance to another's."""

    model_config = ConfigDict(extra="forbid")

    # The key's own account if omitted; another account needs an admin key.
    from_account_id: AccountRef | None = None
    to_account_id: AccountRef
    amount: DecimalAmount | None = None
    amount_minor: MinorAmount | None = None
    currency: Currency

    @model_validator(mode="after")
    def _one_amount(self) -> TransferCreate:
        one_amount(self, "amount", required=True)
        return self


class Transfer(BaseModel):
    posting_id: UUID
    from_account_id: str
    to_account_id: str
    amount: str
    amount_minor: int
    currency: str
    created_at: dt.datetime


class Balance(BaseModel):
    name: str = Field(description="main: the account's own balance")
    currency: str
    balance: str = Field(examples=["1250.50"])
    balance_minor: int
    version: int = Field(description="number of ledger entries posted to this balance")
    allow_negative: bool


class Balances(BaseModel):
    account_id: str
    balances: list[Balance]


# ---------------------------------------------------------------------------------------------
# Gating
# ---------------------------------------------------------------------------------------------

AgentId = Annotated[Text, Field(max_length=128, examples=["agent-7"])]
ActionName = Annotated[Text, Field(max_length=100, examples=["report.generate"])]


class AuthorizeRequest(BaseModel):
    """POST /v1/authorize: may this account run this action now?"""

    model_config = ConfigDict(extra="forbid")

    account_id: AccountRef | None = None
    action: ActionName
    # What this run costs in credits, if not the action's price: a decimal, or minor units
    # (cost_minor needs the currency).
    cost: DecimalAmount | None = None
    cost_minor: MinorAmount | None = None
    currency: Currency | None = None
    agent_id: AgentId | None = None
    # How long a hold on credits lasts before it expires (default 900 s).
    hold_seconds: StrictInt | None = Field(default=None, ge=1, le=86400)

    @model_validator(mode="after")
    def _one_amount(self) -> AuthorizeRequest:
        one_amount(self, "cost", required=False)
        return self


class Authorization(BaseModel):
    allowed: bool
    via: str = Field(description="subscription, payment or credits")
    account_id: str
    action: str
    hold_id: UUID | None = Field(description="with credits: capture or release it when done")
    expires_at: dt.datetime | None = Field(description="when the hold lapses")
    uses_left: int | None = Field(description="with a payment: further paid runs of this action")
    remaining: str | None = Field(description="credits still available after this authorization")
    remaining_minor: int | None
    currency: str | None


class PaymentRequest(BaseModel):
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


class PaymentOption(BaseModel):
    scheme: str = Field(description="stripe.payment: pay for this run; credits: top up, then retry")
    description: str
    amount: str
    amount_minor: int
    currency: str
    request: PaymentRequest


class PaymentRequired(BaseModel):
    """The 402 answer: why not, and exactly how to pay."""

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
    status: str = Field(description="active, captured, released or expired")
    expires_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime


class CaptureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The actual cost (a decimal, or amount_minor); the whole hold if omitted; 0 captures nothing.
    amount: DecimalAmount | None = None
    amount_minor: MinorAmount | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> CaptureRequest:
        one_amount(self, "amount", required=False)
        return self


class UsageEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[Text, Field(min_length=1, max_length=128)]
    account_id: AccountRef | None = None
    agent_id: AgentId | None = None
    metric: Annotated[Text, Field(max_length=100, examples=["tokens"])]
    quantity: Annotated[Decimal, BeforeValidator(_decimal_amount)]
    occurred_at: AwareDatetime


class UsageBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class UsageResult(BaseModel):
    index: int = Field(description="position of the event in the batch, from 0")
    id: str | None
    outcome: str = Field(description="accepted, duplicate or rejected")
    reason: str | None = None
    cost: str | None = None
    currency: str | None = None


class UsageReceipt(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[UsageResult]


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


class ActionPriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price: DecimalAmount | None = None
    price_minor: MinorAmount | None = None
    currency: Currency
    description: Annotated[Text, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> ActionPriceIn:
        one_amount(self, "price", required=True)
        return self


class ActionPriceOut(BaseModel):
    action: str
    price: str
    price_minor: int
    currency: str
    description: str | None


class MetricPriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Per unit, in the currency's units; may be a fraction of a minor unit ("0.00002").
    unit_price: Annotated[Decimal, BeforeValidator(_decimal_amount)]
    currency: Currency


class MetricPriceOut(BaseModel):
    metric: str
    unit_price: Decimal
    currency: str


class WalletIn(BaseModel):
    """PUT /v1/accounts/{id}/wallets/{currency}: fields left out are not changed."""

    model_config = ConfigDict(extra="forbid")

    # May the balance go negative (an overdraft)? true: up to the largest limit (999999999999
    # minor units); false is refused while the balance (less holds) is negative.
    allow_negative: bool | None = None
    # How far below zero the balance may go, a decimal in the currency's units (0: not at all).
    overdraft_limit: DecimalAmount | None = None
    overdraft_limit_minor: MinorAmount | None = None
    # Below this balance, credits.low is announced once per crossing; null: never.
    low_balance: DecimalAmount | None = None
    low_balance_minor: MinorAmount | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> WalletIn:
        one_amount(self, "low_balance", required=False, null_counts=True)
        one_amount(self, "overdraft_limit", required=False)
        return self

    @model_validator(mode="after")
    def _one_overdraft_setting(self) -> WalletIn:
        limit = self.overdraft_limit is not None or self.overdraft_limit_minor is not None
        if self.allow_negative is not None and limit:
            raise ValueError("give allow_negative or overdraft_limit, not both")
        return self


class WalletOut(BaseModel):
    account_id: str
    currency: str
    allow_negative: bool | None
    low_balance: str | None
    low_balance_minor: int | None
    overdraft_limit: str | None = None
    overdraft_limit_minor: int | None = None


class SpendCapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: AgentId | None = None
    period: Literal["day", "month"]
    currency: Currency
    hard_limit: DecimalAmount | None = None
    hard_limit_minor: MinorAmount | None = None
    soft_pct: StrictInt = Field(default=80, ge=1, le=100)

    @model_validator(mode="after")
    def _one_amount(self) -> SpendCapIn:
        one_amount(self, "hard_limit", required=True)
        return self


class SpendCapOut(BaseModel):
    account_id: str
    agent_id: str | None
    period: str
    currency: str
    hard_limit: str
    hard_limit_minor: int
    soft_pct: int


# ---------------------------------------------------------------------------------------------
# Reviews and reconciliation
# ---------------------------------------------------------------------------------------------


class ReviewOut(BaseModel):
    id: UUID
    account_id: str
    subject: str = Field(description="transaction or payment")
    subject_ref: str = Field(description="the transaction's reference, or the payment's pi_ id")
    rules: list[str]
    detail: str
    status: str = Field(description="open, approved or rejected")
    decided_by: str | None
    note: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[Text, Field(max_length=2000)] | None = None


class RiskRuleIn(BaseModel):
    """Review thresholds in a currency; fields left out are not checked."""

    model_config = ConfigDict(extra="forbid")

    max_amount: DecimalAmount | None = None
    max_amount_minor: MinorAmount | None = None
    velocity_count: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    velocity_seconds: StrictInt | None = Field(default=None, ge=1, le=31 * 86400)
    first_amount_max: DecimalAmount | None = None
    first_amount_max_minor: MinorAmount | None = None

    @model_validator(mode="after")
    def _something_to_check(self) -> RiskRuleIn:
        one_amount(self, "max_amount", required=False)
        one_amount(self, "first_amount_max", required=False)
        if (self.velocity_count is None) != (self.velocity_seconds is None):
            raise ValueError("velocity_count and velocity_seconds go together")
        if (
            self.max_amount is None
            and self.max_amount_minor is None
            and self.velocity_count is None
            and self.first_amount_max is None
            and self.first_amount_max_minor is None
        ):
            raise ValueError(
                "name at least one threshold: max_amount, velocity_count with velocity_seconds, "
                "or first_amount_max (a PUT replaces the whole rule)"
            )
        return self


class RiskRuleOut(BaseModel):
    account_id: str | None
    currency: str
    max_amount: str | None
    max_amount_minor: int | None
    velocity_count: int | None
    velocity_seconds: int | None
    first_amount_max: str | None
    first_amount_max_minor: int | None


class ReconciliationLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: Annotated[Text, Field(min_length=1, max_length=200)]
    amount: DecimalAmount | None = None
    amount_minor: MinorAmount | None = None
    currency: Currency
    date: dt.date
    account_id: AccountRef | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> ReconciliationLineIn:
        one_amount(self, "amount", required=True)
        return self


class ReconciliationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Annotated[Text, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$", examples=["bank"])]
    lines: list[ReconciliationLineIn] = Field(min_length=1, max_length=10000)


class ReconciliationLineOut(BaseModel):
    line_no: int
    reference: str
    status: str = Field(
        description="matched, missing_ours, amount_mismatch, status_mismatch, or duplicate "
        "(the source sent this line before: not stored again)"
    )
    transaction_id: UUID | None
    note: str | None


class ReconciliationOut(BaseModel):
    batch_id: UUID
    matched: int
    mismatched: int
    duplicates: int
    lines: list[ReconciliationLineOut]


class RefundCreate(BaseModel):
    """POST /v1/payments/{id}/refunds (admin keys). ``amount`` is a decimal in major units
    ("2.50" or 2.50), ``amount_minor`` whole minor units (250): one of them, or neither for all
    that is not refunded yet."""

    model_config = ConfigDict(extra="forbid")

    amount: DecimalAmount | None = None
    amount_minor: StrictInt | None = Field(default=None, ge=-BIGINT_MAX, le=BIGINT_MAX)

    @model_validator(mode="after")
    def _one_form(self) -> RefundCreate:
        if self.amount is not None and self.amount_minor is not None:
            raise ValueError("give amount (a decimal) or amount_minor (minor units), not both")
        return self


class Refund(BaseModel):
    id: UUID
    payment_id: UUID
    payment_stripe_id: str
    account_id: str
    stripe_id: str = Field(examples=["re_3Nx..."])
    amount: str = Field(
        description="decimal string with the currency's decimals", examples=["2.50"]
    )
    amount_minor: int
    currency: str
    status: str = Field(
        description="Stripe's: pending, requires_action, succeeded, failed, canceled"
    )
    created_at: dt.datetime
    updated_at: dt.datetime
