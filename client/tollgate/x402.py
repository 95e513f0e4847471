"""x402 scheme clients for Tollgate's ways to pay (``pip install 'tollgate-client[x402]'``).

Register them with the x402 SDK's own client and use its HTTP flow; nothing else of Tollgate
is needed (docs/X402.md names the schemes and their payloads):

    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from tollgate.x402 import CardScheme, CreditsScheme

    payer = x402Client()
    payer.register("card:*", CardScheme(payment_method="pm_..."))      # a card through Stripe
    payer.register("tollgate:*", CreditsScheme(api_key="tg_..."))      # or prepaid credits
    async with x402HttpxClient(payer) as http:
        answer = await http.post("https://seller.example/report")     # 402 -> pay -> 200

Each payload carries a payment identifier (x402's ``payment-identifier`` extension, and the card
draft's ``paymentId``): resending the same ``PAYMENT-SIGNATURE`` replays the first settlement
and charges nothing more. The x402 SDK's spend controls apply: USD is a default asset (cents,
capped at the SDK's default of $1 a payment unless told otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER, generate_payment_id
from x402.schemas import PaymentRequirements

CARD_SCHEME = "auth-capture"
CREDITS_SCHEME = "tollgate-credits"
# Currencies the x402 SDK's spend controls may treat as default assets: code -> decimals.
DEFAULT_ASSETS = {"USD": 2}


def _identified(payload: dict[str, Any], payment_id: str) -> dict[str, Any]:
    """The payload with its identifier, also as the payment-identifier extension's id (the x402
    client merges ``__extensions`` onto the extensions the server declared)."""
    payload["paymentId"] = payment_id
    payload["__extensions"] = {PAYMENT_IDENTIFIER: {"info": {"required": False, "id": payment_id}}}
    return payload


class _Scheme:
    scheme: str

    def __init__(self, payment_id: Callable[[], str] | None) -> None:
        self._payment_id = payment_id or generate_payment_id

    def find_default_asset(self, asset: str, network: str) -> dict[str, Any] | None:
        """Lets the x402 client's spend controls price a Tollgate requirement (USD cents)."""
        decimals = DEFAULT_ASSETS.get(asset.upper())
        if decimals is None:
            return None
        return {"symbol": asset.upper(), "decimals": decimals, "address": asset.upper()}


class CardScheme(_Scheme):
    """Pays with a card through Stripe (scheme ``auth-capture``, networks ``card:*``): the
    payload is a Stripe PaymentMethod id, never card data. ``payment_method`` is that id, or a
    callable making one per payment (e.g. with Stripe.js's or an SDK's PaymentMethod create)."""

    scheme = CARD_SCHEME

    def __init__(
        self,
        payment_method: str | Callable[[], str],
        *,
        payment_id: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(payment_id)
        self._payment_method = payment_method

    def create_payment_payload(self, requirements: PaymentRequirements) -> dict[str, Any]:
        psp = (requirements.extra or {}).get("psp")
        if psp not in (None, "stripe"):
            raise ValueError(f"a Stripe PaymentMethod cannot pay through {psp}")
        method = self._payment_method
        token = method() if callable(method) else method
        return _identified({"token": token}, self._payment_id())


class CreditsScheme(_Scheme):
    """Pays from the prepaid credits of the Tollgate account ``api_key`` belongs to (scheme
    ``tollgate-credits``, network ``tollgate:credits``): Tollgate holds the route's price and
    the seller captures it when the call succeeds."""

    scheme = CREDITS_SCHEME

    def __init__(self, api_key: str, *, payment_id: Callable[[], str] | None = None) -> None:
        super().__init__(payment_id)
        self._api_key = api_key

    def create_payment_payload(self, requirements: PaymentRequirements) -> dict[str, Any]:
        return _identified({"apiKey": self._api_key}, self._payment_id())
