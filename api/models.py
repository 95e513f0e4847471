"""Request and response shapes. Shapes only: whether a value is allowed is the database's call."""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Text PostgreSQL can store; the length caps only bound the request size.
Text = Annotated[str, AfterValidator(_no_nul)]
BIGINT_MAX = 2**63 - 1


class ApiError(BaseModel):
    code: str = Field(examples=["invalid_amount"])
    message: str


class ErrorBody(BaseModel):
    error: ApiError


class PaymentCreate(BaseModel):
    """POST /v1/payments. Amounts are whole minor units (1250 = 12.50 USD)."""

    model_config = ConfigDict(extra="forbid")

    amount: StrictInt = Field(ge=-BIGINT_MAX, le=BIGINT_MAX, examples=[1250])
    currency: Annotated[Text, Field(pattern=r"^[A-Za-z]{3}$", examples=["usd"])]
    purpose: Annotated[Text, Field(max_length=200, examples=["report.generate"])] | None = None
    description: Annotated[Text, Field(max_length=2000)] | None = None
    # A Stripe PaymentMethod to attach, so the payment can be confirmed without another call.
    payment_method: Annotated[Text, Field(pattern=r"^pm_[A-Za-z0-9_]{1,200}$")] | None = None
    # Only admin keys may name an account; other keys always pay for their own.
    account_id: Annotated[Text, Field(max_length=200, examples=["user_123"])] | None = None


class Payment(BaseModel):
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
