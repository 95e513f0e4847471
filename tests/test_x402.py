"""x402 v2 on Tollgate: every 402 carries PAYMENT-REQUIRED next to its JSON body, decoded here
with the x402 SDK's own helper and checked against what the JSON body says (docs/X402.md)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER, is_payment_identifier_extension
from x402.http.constants import PAYMENT_REQUIRED_HEADER
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequired

from tests.conftest import Api

ACTION = "report.generate"


@pytest.fixture
def shop(api: Api, new_key: Any) -> dict[str, Any]:
    """An admin that priced the action, and an agent's account key."""
    admin = api.client(new_key("ops", admin=True))
    key = new_key("agent_user")
    priced = admin.put(f"/v1/actions/{ACTION}", json={"price": "0.50", "currency": "USD"})
    assert priced.status_code == 200, priced.text
    return {"admin": admin, "agent": api.client(key), "key": key}


def decoded(response: httpx.Response) -> PaymentRequired:
    """The PAYMENT-REQUIRED header, decoded and validated by the SDK as a v2 PaymentRequired."""
    assert response.status_code == 402, response.text
    header = response.headers.get(PAYMENT_REQUIRED_HEADER)
    assert header, f"no {PAYMENT_REQUIRED_HEADER} header: {dict(response.headers)}"
    required = decode_payment_required_header(header)
    assert isinstance(required, PaymentRequired)
    # Round trip: what the SDK parsed is exactly what was sent (no field lost or invented).
    again = PaymentRequired.model_validate(required.model_dump(by_alias=True))
    assert again == required and required.x402_version == 2
    return required


def test_authorize_402_carries_x402_payment_required(shop: dict[str, Any]) -> None:
    refused = shop["agent"].post("/v1/authorize", json={"action": ACTION})
    body = refused.json()
    required = decoded(refused)

    assert required.resource is not None
    assert required.resource.url.endswith("/v1/authorize")
    assert required.error is not None and required.error.startswith("payment_required")
    by_scheme = {r.scheme: r for r in required.accepts}
    assert set(by_scheme) == {"auth-capture", "tollgate-credits"}
    card, credits = by_scheme["auth-capture"], by_scheme["tollgate-credits"]
    json_card = next(o for o in body["accepts"] if o["scheme"] == "stripe.payment")
    assert (card.network, card.asset, card.amount) == (
        "card:any",
        "USD",
        str(json_card["amount_minor"]),
    )
    assert card.extra["psp"] == "stripe" and card.extra["action"] == ACTION
    assert (credits.network, credits.asset, credits.amount) == (
        "tollgate:credits",
        "USD",
        str(body["price_minor"]),
    )
    for entry in required.accepts:
        assert entry.pay_to == "tollgate" and entry.max_timeout_seconds > 0
        assert entry.extra["price"] == body["price"] == "0.50"
    assert required.extensions is not None
    assert is_payment_identifier_extension(required.extensions[PAYMENT_IDENTIFIER])
    assert required.extensions[PAYMENT_IDENTIFIER]["info"] == {"required": False}


def fund(admin: httpx.Client, amount: str, reference: str = "fund") -> None:
    """Credits for agent_user, as an admin's settled transaction."""
    funded = admin.post(
        "/v1/transactions",
        json={
            "account_id": "agent_user",
            "reference": reference,
            "amount": amount,
            "currency": "USD",
        },
    )
    assert funded.status_code == 201, funded.text
    settled = admin.post(
        f"/v1/transactions/{reference}/settle", params={"account_id": "agent_user"}
    )
    assert settled.status_code == 200, settled.text


def test_a_spend_cap_402_offers_no_way_to_pay_and_a_200_no_header(shop: dict[str, Any]) -> None:
    fund(shop["admin"], "5.00")
    allowed = shop["agent"].post("/v1/authorize", json={"action": ACTION})
    assert allowed.status_code == 200 and PAYMENT_REQUIRED_HEADER not in allowed.headers
    capped = shop["admin"].put(
        "/v1/accounts/agent_user/spend-caps",
        json={"period": "day", "currency": "USD", "hard_limit": "0.60"},
    )
    assert capped.status_code == 200, capped.text
    refused = shop["agent"].post("/v1/authorize", json={"action": ACTION})
    assert refused.json()["error"]["code"] == "spend_cap_exceeded"
    required = decoded(refused)
    assert required.error is not None and required.error.startswith("spend_cap_exceeded")
    assert required.accepts == [] and required.extensions is None


def test_can_continue_402_carries_x402_payment_required(shop: dict[str, Any]) -> None:
    refused = shop["agent"].get("/v1/accounts/agent_user/can-continue")
    required = decoded(refused)
    assert required.accepts == []
    assert required.error == "payment_required: no succeeded payment"
    assert required.resource is not None and "/can-continue" in required.resource.url
