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

from api import pages
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


def example(*values: dict[str, Any]) -> dict[str, Any]:
    """A model's examples (its JSON schema's ``examples``): /docs shows the first."""
    return {"examples": list(values)}


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
    model_config = ConfigDict(
        json_schema_extra=example({"code": "invalid_amount", "message": "amount must be above 0"})
    )

    code: str = Field(examples=["invalid_amount"])
    message: str
    request_id: str | None = Field(
        default_factory=current_request_id,
        description="the request's X-Request-Id: quote it when asking about this answer",
        examples=["4f1c2b9e0d8a4e6fb2a7c3d5e9f01234"],
    )


class FieldProblem(BaseModel):
    field: str = Field(examples=["currency"])
    problem: str


class Refusal(ApiError):
    details: list[FieldProblem] | None = Field(
        default=None, description="with 422 invalid_request: the problem of every field"
    )


class ErrorBody(BaseModel):
    """Every error: a stable code, a message for people, and for a 422 every field's problem."""

    model_config = ConfigDict(
        json_schema_extra=example(
            {"error": {"code": "not_found", "message": "no such payment for this key"}}
        )
    )

    error: Refusal


class PaymentCreate(BaseModel):
    """POST /v1/payments: ``amount`` (a decimal, "12.50") or ``amount_minor`` (1250)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {
                "amount": "12.50",
                "currency": "usd",
                "purpose": "report.generate",
                "description": "one quarterly report",
            }
        ),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f",
                "stripe_id": "pi_3QxYz2AbCdEf",
                "account_id": "dev_account",
                "amount": "12.50",
                "amount_minor": 1250,
                "currency": "USD",
                "status": "succeeded",
                "purpose": "report.generate",
                "description": "one quarterly report",
                "created_at": "2026-01-15T10:30:00Z",
                "updated_at": "2026-01-15T10:30:02Z",
            }
        )
    )

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


class PaymentRead(Payment):
    """GET /v1/payments/{ref}."""

    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f",
                "stripe_id": "pi_3QxYz2AbCdEf",
                "account_id": "dev_account",
                "amount": "12.50",
                "amount_minor": 1250,
                "currency": "USD",
                "status": "processing",
                "purpose": "report.generate",
                "description": "one quarterly report",
                "created_at": "2026-01-15T10:30:00Z",
                "updated_at": "2026-01-15T10:30:02Z",
                "events_received": 1,
            }
        )
    )

    events_received: int = Field(
        description="Stripe events about this payment that its webhook stored and that are "
        "not applied yet: status does not reflect them until they are (normally within a "
        "fraction of a second). 0 when status is up to date with every event received.",
        examples=[0],
    )


class PaymentCreated(Payment):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f",
                "stripe_id": "pi_3QxYz2AbCdEf",
                "account_id": "dev_account",
                "amount": "12.50",
                "amount_minor": 1250,
                "currency": "USD",
                "status": "requires_payment_method",
                "purpose": "report.generate",
                "description": "one quarterly report",
                "created_at": "2026-01-15T10:30:00Z",
                "updated_at": "2026-01-15T10:30:00Z",
                "client_secret": "pi_3QxYz2AbCdEf_secret_Lm3n",
            }
        )
    )

    # For confirming the payment client-side with Stripe.js or the SDK.
    client_secret: str | None


class Continuation(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "allowed": True,
                "status": "succeeded",
                "payment_id": "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f",
                "account_id": "dev_account",
                "purpose": "report.generate",
                "error": None,
            }
        )
    )

    allowed: bool
    status: str | None = Field(description="status of the newest payment, null if none")
    payment_id: UUID | None
    account_id: str
    purpose: str | None
    error: ApiError | None = None


class WebhookReceipt(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "outcome": "received",
                "event_id": "evt_1QxYz2AbCdEf",
                "payment_id": None,
                "payment_status": None,
            }
        )
    )

    outcome: str = Field(
        description="received (stored; applied within moments), duplicate (stored before; "
        "nothing written) or ignored (a type Tollgate does not act on)",
        examples=["received"],
    )
    event_id: str
    payment_id: UUID | None = Field(
        description="the payment the event was applied to: null until it is applied "
        "(set on a duplicate of an applied event)"
    )
    payment_status: str | None = Field(
        description="that payment's status now; null until the event is applied"
    )


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra=example({"status": "ok"}))

    status: str


class TransactionCreate(BaseModel):
    """POST /v1/transactions."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {"reference": "order-1042", "amount": "1250.50", "currency": "USD"}
        ),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "0b9e8d7c-6a5b-4c3d-2e1f-0a9b8c7d6e5f",
                "account_id": "dev_account",
                "reference": "order-1042",
                "amount": "1250.50",
                "amount_minor": 125050,
                "currency": "USD",
                "status": "pending",
                "payment_id": None,
                "created_at": "2026-01-15T10:30:00Z",
                "updated_at": "2026-01-15T10:30:00Z",
            }
        )
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "account_id": "dev_account",
                "is_admin": False,
                "key_id": "3c2b1a09-8f7e-4d6c-5b4a-392817161514",
            }
        )
    )

    account_id: str
    is_admin: bool
    key_id: UUID


class TransactionPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "transactions": [
                    {
                        "id": "0b9e8d7c-6a5b-4c3d-2e1f-0a9b8c7d6e5f",
                        "account_id": "dev_account",
                        "reference": "order-1042",
                        "amount": "1250.50",
                        "amount_minor": 125050,
                        "currency": "USD",
                        "status": "settled",
                        "payment_id": None,
                        "created_at": "2026-01-15T10:30:00Z",
                        "updated_at": "2026-01-15T10:30:02Z",
                    }
                ],
                "next_before": None,
            }
        )
    )

    transactions: list[Transaction] = Field(description="newest first")
    next_cursor: str | None = Field(
        default=None,
        description="pass as `cursor` for the next page; null once a page is not full",
    )
    next_before: UUID | None = Field(
        description="the same place as next_cursor, as the id of the page's last transaction: "
        "pass as `before` (the parameter before cursors, kept working)"
    )

    @model_validator(mode="after")
    def _cursor(self) -> TransactionPage:
        # Wherever a page is built (the route, the MCP tool), its cursor is next_before's.
        if self.next_cursor is None and self.next_before is not None:
            self.next_cursor = pages.encode("transactions", self.next_before)
        return self


TransactionStatus = Literal["pending", "settled", "failed", "reversed"]


class TransferCreate(BaseModel):
    """POST /v1/transfers: from one account's balance to another's."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {"to_account_id": "user_123", "amount": "5.00", "currency": "USD"}
        ),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "posting_id": "5d4c3b2a-1908-4f7e-6d5c-4b3a29181716",
                "from_account_id": "dev_account",
                "to_account_id": "user_123",
                "amount": "5.00",
                "amount_minor": 500,
                "currency": "USD",
                "created_at": "2026-01-15T10:30:00Z",
            }
        )
    )

    posting_id: UUID
    from_account_id: str
    to_account_id: str
    amount: str
    amount_minor: int
    currency: str
    created_at: dt.datetime


class TransferBatchCreate(BaseModel):
    """POST /v1/transfers/batch: up to 1000 transfers, all or none."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {
                "transfers": [
                    {"to_account_id": "user_123", "amount": "5.00", "currency": "USD"},
                    {"to_account_id": "user_456", "amount_minor": 250, "currency": "USD"},
                ]
            }
        ),
    )

    transfers: list[TransferCreate] = Field(min_length=1, max_length=1000)


class TransferBatch(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "transfers": [
                    {
                        "posting_id": "5d4c3b2a-1908-4f7e-6d5c-4b3a29181716",
                        "from_account_id": "dev_account",
                        "to_account_id": "user_123",
                        "amount": "5.00",
                        "amount_minor": 500,
                        "currency": "USD",
                        "created_at": "2026-01-15T10:30:00Z",
                    }
                ]
            }
        )
    )

    transfers: list[Transfer] = Field(description="one per transfer, in the order sent")


class Balance(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "name": "main",
                "currency": "USD",
                "balance": "4.70",
                "balance_minor": 470,
                "version": 3,
                "allow_negative": False,
            }
        )
    )

    name: str = Field(description="main: the account's own balance")
    currency: str
    balance: str = Field(examples=["1250.50"])
    balance_minor: int
    version: int = Field(description="number of ledger entries posted to this balance")
    allow_negative: bool


class Balances(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "account_id": "dev_account",
                "balances": [
                    {
                        "name": "main",
                        "currency": "USD",
                        "balance": "4.70",
                        "balance_minor": 470,
                        "version": 3,
                        "allow_negative": False,
                    }
                ],
            }
        )
    )

    account_id: str
    balances: list[Balance]


# ---------------------------------------------------------------------------------------------
# Gating
# ---------------------------------------------------------------------------------------------

AgentId = Annotated[Text, Field(max_length=128, examples=["agent-7"])]
ActionName = Annotated[Text, Field(max_length=100, examples=["report.generate"])]


class AuthorizeRequest(BaseModel):
    """POST /v1/authorize: may this account run this action now?"""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example({"action": "report.generate", "agent_id": "agent-7"}),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "allowed": True,
                "via": "credits",
                "account_id": "dev_account",
                "action": "report.generate",
                "hold_id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
                "expires_at": "2026-01-15T10:45:00Z",
                "uses_left": None,
                "remaining": "4.50",
                "remaining_minor": 450,
                "currency": "USD",
            }
        )
    )

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

    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "allowed": False,
                "error": {
                    "code": "payment_required",
                    "message": "pay for this run, or buy credits",
                },
                "account_id": "dev_account",
                "action": "report.generate",
                "price": "0.50",
                "price_minor": 50,
                "currency": "USD",
                "remaining": "0.00",
                "remaining_minor": 0,
                "accepts": [
                    {
                        "scheme": "stripe.payment",
                        "description": "one run of report.generate",
                        "amount": "0.50",
                        "amount_minor": 50,
                        "currency": "USD",
                        "request": {
                            "method": "POST",
                            "url": "/v1/payments",
                            "headers": {
                                "Idempotency-Key": "report.generate-1f0e2d3c",
                                "Content-Type": "application/json",
                            },
                            "body": {
                                "amount": "0.50",
                                "currency": "USD",
                                "purpose": "report.generate",
                            },
                        },
                    }
                ],
            }
        )
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
                "account_id": "dev_account",
                "agent_id": "agent-7",
                "action": "report.generate",
                "amount": "0.50",
                "amount_minor": 50,
                "captured_amount": "0.30",
                "captured_amount_minor": 30,
                "currency": "USD",
                "status": "captured",
                "expires_at": "2026-01-15T10:45:00Z",
                "created_at": "2026-01-15T10:30:00Z",
                "updated_at": "2026-01-15T10:30:02Z",
            }
        )
    )

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
    model_config = ConfigDict(extra="forbid", json_schema_extra=example({"amount": "0.30"}))

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
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {
                "events": [
                    {
                        "id": "run-881-tokens",
                        "agent_id": "agent-7",
                        "metric": "tokens",
                        "quantity": "1200",
                        "occurred_at": "2026-01-15T10:30:00Z",
                    }
                ]
            }
        ),
    )

    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class UsageResult(BaseModel):
    index: int = Field(description="position of the event in the batch, from 0")
    id: str | None
    outcome: str = Field(description="accepted, duplicate or rejected")
    reason: str | None = None
    cost: str | None = None
    currency: str | None = None


class UsageReceipt(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "accepted": 1,
                "duplicates": 0,
                "rejected": 0,
                "results": [
                    {
                        "index": 0,
                        "id": "run-881-tokens",
                        "outcome": "accepted",
                        "reason": None,
                        "cost": "0.024",
                        "currency": "USD",
                    }
                ],
            }
        )
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "account_id": "dev_account",
                "period": "day",
                "rows": [
                    {
                        "period_start": "2026-01-15T00:00:00Z",
                        "metric": "tokens",
                        "events": 12,
                        "quantity_sum": "14400",
                        "quantity_max": "2000",
                        "cost": "0.29",
                        "currency": "USD",
                    }
                ],
            }
        )
    )

    account_id: str
    period: str
    rows: list[UsageRow]


class ActionPriceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {"price": "0.50", "currency": "USD", "description": "one report"}
        ),
    )

    price: DecimalAmount | None = None
    price_minor: MinorAmount | None = None
    currency: Currency
    description: Annotated[Text, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> ActionPriceIn:
        one_amount(self, "price", required=True)
        return self


class ActionPriceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "action": "report.generate",
                "price": "0.50",
                "price_minor": 50,
                "currency": "USD",
                "description": "one report",
            }
        )
    )

    action: str
    price: str
    price_minor: int
    currency: str
    description: str | None


class MetricPriceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra=example({"unit_price": "0.00002", "currency": "USD"})
    )

    # Per unit, in the currency's units; may be a fraction of a minor unit ("0.00002").
    unit_price: Annotated[Decimal, BeforeValidator(_decimal_amount)]
    currency: Currency


class MetricPriceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example({"metric": "tokens", "unit_price": "0.00002", "currency": "USD"})
    )

    metric: str
    unit_price: Decimal
    currency: str


class WalletIn(BaseModel):
    """PUT /v1/accounts/{id}/wallets/{currency}: fields left out are not changed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example({"overdraft_limit": "20.00", "low_balance": "1.00"}),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "account_id": "dev_account",
                "currency": "USD",
                "allow_negative": True,
                "low_balance": "1.00",
                "low_balance_minor": 100,
                "overdraft_limit": "20.00",
                "overdraft_limit_minor": 2000,
            }
        )
    )

    account_id: str
    currency: str
    allow_negative: bool | None
    low_balance: str | None
    low_balance_minor: int | None
    overdraft_limit: str | None = None
    overdraft_limit_minor: int | None = None


class SpendCapIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {"agent_id": "agent-7", "period": "day", "currency": "USD", "hard_limit": "10.00"}
        ),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "account_id": "dev_account",
                "agent_id": "agent-7",
                "period": "day",
                "currency": "USD",
                "hard_limit": "10.00",
                "hard_limit_minor": 1000,
                "soft_pct": 80,
            }
        )
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "7e6d5c4b-3a29-4817-9615-141312111009",
                "account_id": "dev_account",
                "subject": "payment",
                "subject_ref": "pi_3QxYz2AbCdEf",
                "rules": ["max_amount"],
                "detail": "600.00 USD is above max_amount 500.00",
                "status": "open",
                "decided_by": None,
                "note": None,
                "created_at": "2026-01-15T10:30:00Z",
                "decided_at": None,
            }
        )
    )

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
    model_config = ConfigDict(
        extra="forbid", json_schema_extra=example({"note": "customer verified by phone"})
    )

    note: Annotated[Text, Field(max_length=2000)] | None = None


class RiskRuleIn(BaseModel):
    """Review thresholds in a currency; fields left out are not checked."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {
                "max_amount": "500.00",
                "velocity_count": 20,
                "velocity_seconds": 3600,
                "first_amount_max": "50.00",
            }
        ),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "account_id": None,
                "currency": "USD",
                "max_amount": "500.00",
                "max_amount_minor": 50000,
                "velocity_count": 20,
                "velocity_seconds": 3600,
                "first_amount_max": "50.00",
                "first_amount_max_minor": 5000,
            }
        )
    )

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
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=example(
            {
                "source": "bank",
                "lines": [
                    {
                        "reference": "order-1042",
                        "amount": "1250.50",
                        "currency": "USD",
                        "date": "2026-01-15",
                        "account_id": "dev_account",
                    }
                ],
            }
        ),
    )

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
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "batch_id": "2a1b0c9d-8e7f-4a6b-5c4d-3e2f1a0b9c8d",
                "matched": 1,
                "mismatched": 0,
                "duplicates": 0,
                "lines": [
                    {
                        "line_no": 1,
                        "reference": "order-1042",
                        "status": "matched",
                        "transaction_id": "0b9e8d7c-6a5b-4c3d-2e1f-0a9b8c7d6e5f",
                        "note": None,
                    }
                ],
            }
        )
    )

    batch_id: UUID
    matched: int
    mismatched: int
    duplicates: int
    lines: list[ReconciliationLineOut]


class RefundCreate(BaseModel):
    """POST /v1/payments/{id}/refunds (admin keys). ``amount`` is a decimal in major units
    ("2.50" or 2.50), ``amount_minor`` whole minor units (250): one of them, or neither for all
    that is not refunded yet."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=example({"amount": "2.50"}))

    amount: DecimalAmount | None = None
    amount_minor: StrictInt | None = Field(default=None, ge=-BIGINT_MAX, le=BIGINT_MAX)

    @model_validator(mode="after")
    def _one_form(self) -> RefundCreate:
        if self.amount is not None and self.amount_minor is not None:
            raise ValueError("give amount (a decimal) or amount_minor (minor units), not both")
        return self


class Refund(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "1d2c3b4a-5968-4776-8594-a3b2c1d0e9f8",
                "payment_id": "6f1c2a9e-3b7d-4c1a-9e2f-0a1b2c3d4e5f",
                "payment_stripe_id": "pi_3QxYz2AbCdEf",
                "account_id": "dev_account",
                "stripe_id": "re_3QxYz2AbCdEf",
                "amount": "2.50",
                "amount_minor": 250,
                "currency": "USD",
                "status": "succeeded",
                "created_at": "2026-01-15T10:30:00Z",
                "updated_at": "2026-01-15T10:30:00Z",
            }
        )
    )

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


# ---------------------------------------------------------------------------------------------
# Reading back what was set: every list is a page (api/pages.py) of at most `limit` rows, with
# `next_cursor` to pass as `cursor` for the next page (null once a page is not full)
# ---------------------------------------------------------------------------------------------

NEXT_CURSOR = "pass as `cursor` for the next page; null once a page is not full"


def page_example(field: str, item: type[BaseModel]) -> ConfigDict:
    """A page's example: one row, the item model's own example, and a cursor."""
    extra = item.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    row = examples[0] if isinstance(examples, list) and examples else {}
    return ConfigDict(
        json_schema_extra=example({field: [row], "next_cursor": "cGFnZTowMTkzYjJjNA"})
    )


class ActionPage(BaseModel):
    model_config = page_example("actions", ActionPriceOut)

    actions: list[ActionPriceOut] = Field(description="by name")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class MetricPricePage(BaseModel):
    model_config = page_example("metrics", MetricPriceOut)

    metrics: list[MetricPriceOut] = Field(description="by name")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class SpendCapPage(BaseModel):
    model_config = page_example("spend_caps", SpendCapOut)

    spend_caps: list[SpendCapOut] = Field(
        description="the account's own caps (agent_id null) first, then each agent's"
    )
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class Wallet(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "account_id": "dev_account",
                "currency": "USD",
                "balance": "12.50",
                "balance_minor": 1250,
                "held": "0.50",
                "held_minor": 50,
                "available": "12.00",
                "available_minor": 1200,
                "overdraft_limit": "0.00",
                "overdraft_limit_minor": 0,
                "allow_negative": False,
                "low_balance": "2.00",
                "low_balance_minor": 200,
                "version": 3,
            }
        )
    )

    account_id: str
    currency: str
    balance: str = Field(examples=["12.50"])
    balance_minor: int
    held: str = Field(description="reserved by active holds", examples=["0.50"])
    held_minor: int
    available: str | None = Field(
        description="what can still be held or spent: balance + overdraft_limit - held",
        examples=["12.00"],
    )
    available_minor: int | None
    overdraft_limit: str | None = Field(description="how far below zero the balance may go")
    overdraft_limit_minor: int | None
    allow_negative: bool
    low_balance: str | None = Field(description="below this, credits.low is announced")
    low_balance_minor: int | None
    version: int = Field(description="number of ledger entries posted to this balance")


class WalletPage(BaseModel):
    model_config = page_example("wallets", Wallet)

    wallets: list[Wallet] = Field(description="one per currency, by currency")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


HoldStatus = Literal["active", "captured", "released", "expired"]


class HoldPage(BaseModel):
    model_config = page_example("holds", HoldOut)

    holds: list[HoldOut] = Field(description="newest first")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class RiskRulePage(BaseModel):
    model_config = page_example("risk_rules", RiskRuleOut)

    risk_rules: list[RiskRuleOut] = Field(
        description="the defaults (account_id null) first, then by account and currency"
    )
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class ApiKeyOut(BaseModel):
    """An API key as it can be read back: never the key itself, nor its hash."""

    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "key_id": "0193b2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
                "account_id": "dev_account",
                "key_prefix": "tg_3kQ9xZ2b",
                "is_admin": False,
                "label": "agent on laptop",
                "created_at": "2026-11-29T10:00:00Z",
                "revoked_at": None,
            }
        )
    )

    key_id: UUID
    account_id: str
    key_prefix: str = Field(description="the key's first characters", examples=["tg_3kQ9xZ2b"])
    is_admin: bool
    label: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class ApiKeyPage(BaseModel):
    model_config = page_example("keys", ApiKeyOut)

    keys: list[ApiKeyOut] = Field(description="oldest first, revoked ones too")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


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


class PaymentPage(BaseModel):
    model_config = page_example("payments", Payment)

    payments: list[Payment] = Field(description="newest first")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class Event(BaseModel):
    """An outbox event of the account, as `tollgate listen` delivers it (without `attempt`)."""

    model_config = ConfigDict(
        json_schema_extra=example(
            {
                "id": "0193b2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
                "type": "payment.settled",
                "created": "2026-11-29T10:00:00Z",
                "account_id": "dev_account",
                "data": {"payment_id": "0193b2c4-0000-7000-8000-000000000001"},
            }
        )
    )

    id: UUID = Field(description="stable: a redelivery has the same id")
    type: str = Field(examples=["payment.settled"])
    created: dt.datetime
    account_id: str
    data: dict[str, Any]


class EventPage(BaseModel):
    model_config = page_example("events", Event)

    events: list[Event] = Field(description="newest first")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
