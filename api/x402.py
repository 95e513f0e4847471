"""x402 v2 on Tollgate's 402s: the ``PAYMENT-REQUIRED`` header, built with the x402 SDK's types.

Every 402 keeps Tollgate's JSON body; this module adds the same refusal in x402's form. Each
way to pay is one ``accepts`` entry (docs/X402.md): a card through Stripe (scheme
``auth-capture``, network ``card:any``, after the card binding draft) and prepaid credits
(Tollgate's own ``tollgate-credits`` scheme). Nothing here decides anything: the amounts and
the reason come from the database's answer.
"""

from __future__ import annotations

from typing import Any

from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    declare_payment_identifier_extension,
)
from x402.http.constants import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER
from x402.http.utils import encode_payment_required_header, encode_payment_response_header
from x402.schemas import PaymentRequired as X402PaymentRequired
from x402.schemas import PaymentRequirements, ResourceInfo, SettleResponse

from api.models import Continuation, PaymentRequired

CARD_SCHEME = "auth-capture"
CARD_NETWORK = "card:any"
CREDITS_SCHEME = "tollgate-credits"
CREDITS_NETWORK = "tollgate:credits"
PAY_TO = "tollgate"
# How long a paid card retry waits for Stripe's signed webhook to settle the payment.
CARD_TIMEOUT_SECONDS = 30
CREDITS_TIMEOUT_SECONDS = 30


def requirements(answer: PaymentRequired) -> list[PaymentRequirements]:
    """The ``accepts`` of a refused authorization: one entry per way to pay, none when paying
    would not help (a spend cap)."""
    card = next((o for o in answer.accepts if o.scheme == "stripe.payment"), None)
    if card is None or answer.price_minor is None or answer.currency is None:
        return []
    about = {
        "action": answer.action,
        "price": answer.price,
        "price_minor": answer.price_minor,
        "currency": answer.currency,
    }
    return [
        PaymentRequirements(
            scheme=CARD_SCHEME,
            network=CARD_NETWORK,
            asset=answer.currency,
            amount=str(card.amount_minor),
            pay_to=PAY_TO,
            max_timeout_seconds=CARD_TIMEOUT_SECONDS,
            extra={"psp": "stripe", "paymentFlow": "upfront", **about},
        ),
        PaymentRequirements(
            scheme=CREDITS_SCHEME,
            network=CREDITS_NETWORK,
            asset=answer.currency,
            amount=str(answer.price_minor),
            pay_to=PAY_TO,
            max_timeout_seconds=CREDITS_TIMEOUT_SECONDS,
            extra={"paymentFlow": "authorization", **about},
        ),
    ]


def for_authorization(answer: PaymentRequired, url: str) -> X402PaymentRequired:
    """The x402 form of a refused ``POST /v1/authorize`` for the resource at ``url``."""
    accepts = requirements(answer)
    return X402PaymentRequired(
        error=f"{answer.error.code}: {answer.error.message}",
        resource=ResourceInfo(
            url=url, description=f"one run of {answer.action}", mime_type="application/json"
        ),
        accepts=accepts,
        extensions={PAYMENT_IDENTIFIER: declare_payment_identifier_extension()}
        if accepts
        else None,
    )


def for_continuation(answer: Continuation, url: str) -> X402PaymentRequired:
    """The x402 form of a refused can-continue: no price is known there, so no ``accepts``
    (``POST /v1/authorize`` for the action names them)."""
    error = answer.error
    return X402PaymentRequired(
        error=f"{error.code}: {error.message}" if error else "payment_required",
        resource=ResourceInfo(url=url, mime_type="application/json"),
        accepts=[],
    )


def required_header(required: X402PaymentRequired) -> dict[str, str]:
    return {PAYMENT_REQUIRED_HEADER: encode_payment_required_header(required)}


def response_header(settled: SettleResponse) -> dict[str, str]:
    return {PAYMENT_RESPONSE_HEADER: encode_payment_response_header(settled)}


def wire(required: X402PaymentRequired) -> dict[str, Any]:
    """The PaymentRequired object as x402 puts it on the wire (camelCase, no nulls)."""
    return required.model_dump(mode="json", by_alias=True, exclude_none=True)
