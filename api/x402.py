"""x402 v2 on Tollgate's 402s: the ``PAYMENT-REQUIRED`` header, built with the x402 SDK's types.

Every 402 keeps Tollgate's JSON body; this module adds the same refusal in x402's form. Each
way to pay is one ``accepts`` entry (docs/X402.md): a card through Stripe (scheme
``auth-capture``, network ``card:any``, after the card binding draft) and prepaid credits
(Tollgate's own ``tollgate-credits`` scheme). Nothing here decides anything: the amounts and
the reason come from the database's answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import time
from typing import Any

from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from pydantic import ValidationError
from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    declare_payment_identifier_extension,
    is_valid_payment_id,
)
from x402.http.constants import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER
from x402.http.utils import (
    encode_payment_required_header,
    encode_payment_response_header,
)
from x402.schemas import PaymentPayload, PaymentRequirements, ResourceInfo, SettleResponse
from x402.schemas import PaymentRequired as X402PaymentRequired

from api import operations
from api.models import (
    ApiError,
    Authorization,
    AuthorizeRequest,
    Continuation,
    PaymentCreate,
    PaymentRequired,
)
from api.stripe_gateway import StripeGateway
from db import queries
from db.errors import DomainError

CARD_SCHEME = "auth-capture"
CARD_NETWORK = "card:any"
CREDITS_SCHEME = "tollgate-credits"
CREDITS_NETWORK = "tollgate:credits"
PAY_TO = "tollgate"
# How long a paid card retry waits for Stripe's signed webhook to settle the payment.
CARD_TIMEOUT_SECONDS = 30
CREDITS_TIMEOUT_SECONDS = 30
# The MCP transport: the authorize tool as an x402 resource, and where a refusal's
# PaymentRequired goes in the result's _meta (next to the spec's x402/payment-response).
MCP_AUTHORIZE_URL = "mcp://tool/authorize"
MCP_REQUIRED_META = "x402/payment-required"


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


def for_refusal(code: str, message: str, url: str) -> X402PaymentRequired:
    """The x402 form of any other 402 (a declined card, a spend cap on a capture or a
    transfer): the reason, and no way to pay that would change it."""
    return X402PaymentRequired(
        error=f"{code}: {message}",
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


# ---------------------------------------------------------------------------------------------
# The paid retry: PAYMENT-SIGNATURE on POST /v1/authorize
# ---------------------------------------------------------------------------------------------

# Payment statuses after which waiting for Stripe's webhook is pointless.
FAILED = {"requires_payment_method", "canceled"}


# The largest PAYMENT-SIGNATURE read: a payload is a few hundred bytes.
MAX_SIGNATURE_BYTES = 8192


def _invalid_signature(why: str) -> DomainError:
    return DomainError(
        "invalid",
        "invalid_payment_signature",
        f"PAYMENT-SIGNATURE must be base64 of an x402 v2 PaymentPayload (JSON object): {why}",
    )


def decode_signature(value: str) -> PaymentPayload:
    """The PAYMENT-SIGNATURE header as an x402 v2 PaymentPayload, or a 400: every malformed
    header is ``invalid_payment_signature`` (too long, not base64, not a JSON object, not a
    PaymentPayload), a version other than the integer 2 ``unsupported_x402_version``."""
    if len(value) > MAX_SIGNATURE_BYTES:
        raise _invalid_signature(f"at most {MAX_SIGNATURE_BYTES} bytes")
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error, RecursionError) as exc:
        raise _invalid_signature("not base64 of JSON") from exc
    if not isinstance(data, dict):
        raise _invalid_signature("not a JSON object")
    version = data.get("x402Version")
    if type(version) is not int or version != 2:
        raise DomainError(
            "invalid",
            "unsupported_x402_version",
            "only x402 version 2 payloads are accepted (x402Version: 2)",
        )
    try:
        return PaymentPayload.model_validate(data)
    except (ValidationError, ValueError, TypeError, RecursionError) as exc:
        raise _invalid_signature("not a PaymentPayload") from exc


def _bad_identifier(message: str) -> DomainError:
    return DomainError("invalid", "invalid_payment_identifier", message)


def identifier(payload: PaymentPayload) -> str | None:
    """The payment-identifier extension's id, else the card payload's paymentId; checked. A
    present but malformed extension is refused, never ignored."""
    found: object = None
    extensions = payload.extensions or {}
    if PAYMENT_IDENTIFIER in extensions:
        extension = extensions[PAYMENT_IDENTIFIER]
        if not isinstance(extension, dict):
            raise _bad_identifier(f"extensions[{PAYMENT_IDENTIFIER!r}] must be an object")
        info = extension.get("info")
        if not isinstance(info, dict):
            raise _bad_identifier(f"extensions[{PAYMENT_IDENTIFIER!r}].info must be an object")
        if "id" in info:
            found = info["id"]
            if not isinstance(found, str):
                raise _bad_identifier(
                    f"extensions[{PAYMENT_IDENTIFIER!r}].info.id must be a string"
                )
    inner = payload.payload.get("paymentId")
    if found is not None and inner is not None and found != inner:
        raise _bad_identifier("the payment-identifier extension's id and payload.paymentId differ")
    found = found if found is not None else inner
    if found is None:
        return None
    if not isinstance(found, str) or not is_valid_payment_id(found):
        raise _bad_identifier("a payment identifier is 16-128 letters, digits, _ and -")
    return found


def fingerprint(payload: PaymentPayload) -> bytes:
    """SHA-256 of the payload's canonical JSON: what an identifier is bound to."""
    data = payload.model_dump(mode="json", by_alias=True, exclude_none=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).digest()


def _text(payload: PaymentPayload, name: str, pattern: str) -> str:
    value = payload.payload.get(name)
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise DomainError(
            "invalid", "invalid_payment_payload", f"payload.{name} is missing or malformed"
        )
    return value


def _settled(answer: Authorization, settle: SettleResponse) -> dict[str, Any]:
    """What is stored for a settled identifier, and sent: the body and PAYMENT-RESPONSE."""
    return {
        "body": answer.model_dump(mode="json"),
        "payment_response": encode_payment_response_header(settle),
    }


def _answer(stored: dict[str, Any]) -> JSONResponse:
    return JSONResponse(
        stored["body"],
        status_code=200,
        headers={PAYMENT_RESPONSE_HEADER: stored["payment_response"]},
    )


def _refusal(answer: PaymentRequired, url: str) -> JSONResponse:
    return JSONResponse(
        answer.model_dump(mode="json"),
        status_code=402,
        headers=required_header(for_authorization(answer, url)),
    )


async def pay(
    pool: Any,
    stripe: StripeGateway,
    *,
    api_key: str,
    ask: AuthorizeRequest,
    signature: str,
    url: str,
) -> JSONResponse:
    """Authorize ``ask`` with the payment PAYMENT-SIGNATURE carries: a card (bought credits,
    then a hold) or credits (a hold). 200 with PAYMENT-RESPONSE, or 402 with PAYMENT-REQUIRED."""
    payload = decode_signature(signature)
    paid_id = identifier(payload)
    scheme, network = payload.accepted.scheme, payload.accepted.network
    if (scheme, network) == (CREDITS_SCHEME, CREDITS_NETWORK):
        key = _text(payload, "apiKey", r"[\x21-\x7e]{1,255}")
        return await _credits(pool, key, ask, payload, paid_id, url)
    if (scheme, network) == (CARD_SCHEME, CARD_NETWORK):
        token = _text(payload, "token", r"pm_[A-Za-z0-9_]{1,200}")
        if paid_id is None:
            raise DomainError(
                "invalid", "invalid_payment_payload", "a card payment needs payload.paymentId"
            )
        return await _card(pool, stripe, api_key, ask, payload, token, paid_id, url)
    raise DomainError(
        "invalid",
        "unsupported_payment_scheme",
        f"{scheme} on {network} is not offered: {CARD_SCHEME} on {CARD_NETWORK}, "
        f"or {CREDITS_SCHEME} on {CREDITS_NETWORK}",
    )


async def _claim(
    conn: Any, key: str, ask: AuthorizeRequest, payload: PaymentPayload, paid_id: str
) -> dict[str, Any] | None:
    """Claim ``paid_id`` for this payload and this request: the stored answer of a replay
    whose hold is still active, or None when it is the caller's to settle (409 when the
    identifier was used for another payload or request, or its hold was already used)."""
    claim = await queries.x402_claim(
        conn,
        api_key=key,
        account=ask.account_id,
        identifier=paid_id,
        payload_sha256=fingerprint(payload),
        action=ask.action,
        cost=ask.cost,
        cost_minor=ask.cost_minor,
        currency=ask.currency,
    )
    return claim.response


class _Refused(Exception):
    """A refusal that undoes the transaction it is raised in (nothing claimed, nothing held)."""

    def __init__(self, answer: PaymentRequired) -> None:
        super().__init__(answer.error.code)
        self.answer = answer


def _check_amount(payload: PaymentPayload, quote: PaymentRequired, amount_minor: int) -> None:
    """The payload must pay what PAYMENT-REQUIRED asks (amount in minor units, currency)."""
    if (payload.accepted.amount, payload.accepted.asset) != (str(amount_minor), quote.currency):
        quote.error = ApiError(
            code="payment_required",
            message=f"pay {amount_minor} minor units of {quote.currency}, as PAYMENT-REQUIRED says",
        )
        raise _Refused(quote)


async def _hold(
    pool: Any,
    key: str,
    ask: AuthorizeRequest,
    payload: PaymentPayload,
    paid_id: str | None,
    transaction: str | None,
    amount: str | None,
    *,
    check_price: bool = False,
) -> JSONResponse | PaymentRequired:
    """Claim the identifier, authorize (a hold on the credits) and store the answer, in one
    transaction: the 200 to send, or the refusal. ``transaction`` names the payment (a card's
    PaymentIntent); without one, the hold. With ``check_price`` (credits) the payload's amount
    and asset must be the run's price first. Only an answer with a hold is stored: one that
    placed none (a subscription, a paid run) charged nothing, and its retry authorizes anew."""
    try:
        async with pool.connection() as conn, conn.transaction():
            if check_price:
                quote = await operations.quote_on(conn, api_key=key, ask=ask)
                if quote.price_minor is not None:
                    _check_amount(payload, quote, quote.price_minor)
            if paid_id is not None:
                replay = await _claim(conn, key, ask, payload, paid_id)
                if replay is not None:
                    return _answer(replay)
            answer = await operations.authorize_on(conn, api_key=key, ask=ask)
            if isinstance(answer, PaymentRequired):
                raise _Refused(answer)
            settle = SettleResponse(
                success=True,
                transaction=transaction or str(answer.hold_id or answer.via),
                network=payload.accepted.network,
                amount=amount,
                payer=answer.account_id,
            )
            stored = _settled(answer, settle)
            if paid_id is not None and answer.hold_id is not None:
                await queries.x402_settle(
                    conn,
                    api_key=key,
                    account=ask.account_id,
                    identifier=paid_id,
                    hold_id=answer.hold_id,
                    response=Jsonb(stored),
                )
    except _Refused as refused:
        return refused.answer
    return _answer(stored)


async def _credits(
    pool: Any,
    key: str,
    ask: AuthorizeRequest,
    payload: PaymentPayload,
    paid_id: str | None,
    url: str,
) -> JSONResponse:
    """The payload's key pays: a hold on its own account's credits at the action's price."""
    own = ask.model_copy(update={"account_id": None})
    held = await _hold(
        pool, key, own, payload, paid_id, None, payload.accepted.amount, check_price=True
    )
    return held if isinstance(held, JSONResponse) else _refusal(held, url)


async def _card(
    pool: Any,
    stripe: StripeGateway,
    api_key: str,
    ask: AuthorizeRequest,
    payload: PaymentPayload,
    token: str,
    paid_id: str,
    url: str,
) -> JSONResponse:
    """Buy the credits the 402 asks for with the card token, wait (at most the requirement's
    maxTimeoutSeconds) for Stripe's signed webhook to settle them, then hold them at the
    action's price. Before the payment, only this identifier's stored settlement is answered:
    nothing is authorized from what the account holds already (credits another payer's card
    bought, an entitlement), so a card payload is never served unless its own payment
    succeeded. The amount is checked before anything else: a payload that does not pay what
    PAYMENT-REQUIRED asks is a 402 that claims and holds nothing."""
    try:
        async with pool.connection() as conn, conn.transaction():
            held = await operations.quote_on(conn, api_key=api_key, ask=ask)
            offer = next((o for o in held.accepts if o.scheme == "stripe.payment"), None)
            if offer is not None:
                _check_amount(payload, held, offer.amount_minor)
            replay = await _claim(conn, api_key, ask, payload, paid_id)
            if replay is not None:
                return _answer(replay)
    except _Refused as refused:
        return _refusal(refused.answer, url)
    if offer is None:  # a spend cap: paying would not help
        return _refusal(held, url)
    try:
        paid = await operations.create_payment(
            pool,
            stripe,
            api_key=api_key,
            ask=PaymentCreate(
                amount_minor=offer.amount_minor,
                currency=offer.currency,
                purpose="credits",
                payment_method=token,
                account_id=ask.account_id,
            ),
            idempotency_key=f"x402:{paid_id}",
            wait=5.0,
        )
        status = paid.payment.status
        if paid.replayed:  # a resent payment, or its twin: where is it now?
            async with pool.connection() as conn:
                now = await queries.get_payment(conn, api_key=api_key, ref=str(paid.payment.id))
            status = now.status
        if status == "requires_confirmation":
            try:
                status = await stripe.confirm_payment_intent(paid.payment.stripe_id)
            except DomainError as exc:
                # A twin confirmed it a moment ago: Stripe refuses a second confirmation.
                if not (paid.replayed and exc.code == "stripe_rejected"):
                    raise
    except DomainError as exc:
        if exc.kind != "payment_required":
            raise
        held.error = ApiError(code=exc.code, message=exc.message)
        return _refusal(held, url)
    bound = min(payload.accepted.max_timeout_seconds, CARD_TIMEOUT_SECONDS)
    deadline = time.monotonic() + bound
    while True:
        async with pool.connection() as conn:
            status = (
                await queries.get_payment(conn, api_key=api_key, ref=str(paid.payment.id))
            ).status
        if status == "succeeded":
            break
        if status in FAILED or time.monotonic() > deadline:
            held.error = ApiError(
                code="payment_required" if status in FAILED else "payment_pending",
                message=f"the card payment {paid.payment.stripe_id} is {status}"
                + (
                    ""
                    if status in FAILED
                    else f" after {bound} s: retry with the same payment identifier"
                ),
            )
            return _refusal(held, url)
        await asyncio.sleep(0.1)
    again = await _hold(
        pool, api_key, ask, payload, paid_id, paid.payment.stripe_id, str(offer.amount_minor)
    )
    return again if isinstance(again, JSONResponse) else _refusal(again, url)
