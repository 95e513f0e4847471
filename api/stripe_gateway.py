"""Stripe, through the official SDK. The only module that talks to Stripe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import stripe

from db.errors import DomainError


@dataclass(frozen=True, slots=True)
class CreatedIntent:
    id: str
    status: str
    client_secret: str | None


@dataclass(frozen=True, slots=True)
class CreatedRefund:
    id: str
    status: str


@contextmanager
def _stripe_errors() -> Iterator[None]:
    """Stripe failures as DomainErrors the API can answer with."""
    try:
        yield
    except stripe.IdempotencyError as exc:
        raise DomainError(
            "conflict",
            "idempotency_key_reused",
            "this Idempotency-Key was already sent to Stripe with a different request",
        ) from exc
    except stripe.InvalidRequestError as exc:
        raise DomainError("invalid", "stripe_rejected", exc.user_message or str(exc)) from exc
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise DomainError(
            "unavailable", "stripe_unavailable", "Stripe could not be reached; retry later"
        ) from exc
    except stripe.StripeError as exc:
        raise DomainError(
            "bad_gateway", "stripe_error", f"Stripe answered with an error: {exc}"
        ) from exc


class StripeGateway:
    def __init__(self, api_key: str, *, api_base: str | None, timeout: float) -> None:
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http,
            max_network_retries=0,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> CreatedIntent:
        """Create a PaymentIntent; Stripe failures become DomainErrors the API can answer with."""
        params: dict[str, object] = {
            "amount": amount,
            "currency": currency.lower(),
            "metadata": metadata,
        }
        if payment_method:
            params["payment_method"] = payment_method
        # An IdempotencyError: an earlier attempt with this key, rolled back here, reached
        # Stripe with other data (_stripe_errors answers idempotency_key_reused).
        with _stripe_errors():
            try:
                intent = await self._client.v1.payment_intents.create_async(
                    params,  # type: ignore[arg-type]
                    options={"idempotency_key": idempotency_key},
                )
            except stripe.CardError as exc:
                raise DomainError(
                    "payment_required", "card_declined", exc.user_message or str(exc)
                ) from exc
        return CreatedIntent(id=intent.id, status=intent.status, client_secret=intent.client_secret)

    async def confirm_payment_intent(self, stripe_id: str) -> str:
        """Confirm a PaymentIntent created with its payment method (x402's card retry: the
        payer's token is the whole authorization); its new status. A declined card is a
        payment_required DomainError."""
        with _stripe_errors():
            try:
                intent = await self._client.v1.payment_intents.confirm_async(stripe_id)
            except stripe.CardError as exc:
                raise DomainError(
                    "payment_required", "card_declined", exc.user_message or str(exc)
                ) from exc
        return str(intent.status)

    async def create_refund(
        self,
        *,
        payment_intent: str,
        amount: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> CreatedRefund:
        """Refund ``amount`` (in Stripe's units for the currency) of a PaymentIntent."""
        params: dict[str, object] = {
            "payment_intent": payment_intent,
            "amount": amount,
            "metadata": metadata,
        }
        with _stripe_errors():
            refund = await self._client.v1.refunds.create_async(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        return CreatedRefund(id=refund.id, status=refund.status or "pending")


def objects_created_since(
    api_key: str, *, api_base: str | None, since: int, timeout: float = 30.0
) -> Iterator[dict[str, Any]]:
    """Every PaymentIntent, then every Charge with something refunded, then every Subscription
    (whatever its status), created at or after ``since`` (Unix seconds), as plain dicts,
    following Stripe's pagination.

    Stripe filters by ``created[gt]``; an API that refuses the filter (the local emulator, for
    PaymentIntents and Subscriptions) is listed whole and filtered here.
    """
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        http_client=stripe.RequestsClient(timeout=timeout),
        max_network_retries=2,
    )
    listings: list[tuple[Any, dict[str, Any]]] = [
        (client.v1.payment_intents, {}),
        (client.v1.charges, {}),
        (client.v1.subscriptions, {"status": "all"}),
    ]
    for service, extra in listings:
        try:
            page = service.list({"limit": 100, "created": {"gt": since - 1}, **extra})
        except (stripe.InvalidRequestError, stripe.APIError):
            # The emulator refuses the filter (400), or fails on it (500 for subscriptions).
            page = service.list({"limit": 100, **extra})
        for item in page.auto_paging_iter():
            obj = item.to_dict()
            if obj.get("created", 0) < since:
                continue
            if obj.get("object") == "charge" and not obj.get("amount_refunded"):
                continue
            yield obj
