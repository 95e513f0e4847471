"""x402 v2 on Tollgate: every 402 carries PAYMENT-REQUIRED next to its JSON body, decoded here
with the x402 SDK's own helper and checked against what the JSON body says (docs/X402.md)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import psycopg
import pytest
from x402.extensions.payment_identifier import PAYMENT_IDENTIFIER, is_payment_identifier_extension
from x402.http.constants import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
)
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentPayload, PaymentRequired

from tests.conftest import Api, Emulator
from tests.helpers import in_parallel, stripe_client
from tests.test_mcp import with_mcp

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


def signed(payload: dict[str, Any]) -> dict[str, str]:
    return {PAYMENT_SIGNATURE_HEADER: encode_payment_signature_header(PaymentPayload(**payload))}


def credits_payload(required: PaymentRequired, key: str, paid_id: str) -> dict[str, Any]:
    accepted = next(r for r in required.accepts if r.scheme == "tollgate-credits")
    return {
        "payload": {"apiKey": key, "paymentId": paid_id},
        "accepted": accepted,
        "resource": required.resource,
    }


def test_a_paid_retry_with_credits_replays_and_binds_its_identifier(
    shop: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    agent = shop["agent"]
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    fund(shop["admin"], "1.00")
    payload = credits_payload(required, shop["key"], "pay_credits_identifier_1")

    paid = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(payload))
    assert paid.status_code == 200, paid.text
    settled = decode_payment_response_header(paid.headers[PAYMENT_RESPONSE_HEADER])
    assert settled.success and settled.network == "tollgate:credits"
    assert settled.transaction == paid.json()["hold_id"] and settled.payer == "agent_user"

    again = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(payload))
    assert again.status_code == 200 and again.json() == paid.json()
    assert again.headers[PAYMENT_RESPONSE_HEADER] == paid.headers[PAYMENT_RESPONSE_HEADER]
    assert db.execute("SELECT count(*) FROM tollgate.holds").fetchone() == (1,)

    other = payload | {
        "payload": {"apiKey": shop["key"], "paymentId": "pay_credits_identifier_1", "x": 1}
    }
    conflict = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(other))
    assert (
        conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"
    )
    assert db.execute("SELECT count(*) FROM tollgate.holds").fetchone() == (1,)


def written(db: psycopg.Connection[Any]) -> tuple[int, int]:
    """How many holds and x402 settlements there are."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM tollgate.holds),"
        " (SELECT count(*) FROM tollgate.x402_settlements)"
    ).fetchone()
    assert row is not None
    return (row[0], row[1])


@pytest.mark.parametrize("finish", ["capture", "release"])
def test_one_x402_payment_buys_one_run_and_only_the_run_it_paid_for(
    shop: dict[str, Any], db: psycopg.Connection[Any], finish: str
) -> None:
    agent, admin = shop["agent"], shop["admin"]
    for action, price in (("report.premium", "1.00"), ("report.other", "0.50")):
        priced = admin.put(f"/v1/actions/{action}", json={"price": price, "currency": "USD"})
        assert priced.status_code == 200, priced.text
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    fund(admin, "5.00")
    sent = signed(credits_payload(required, shop["key"], "pay_one_run_only_0001"))

    paid = agent.post("/v1/authorize", json={"action": ACTION}, headers=sent)
    assert paid.status_code == 200, paid.text
    hold = paid.json()["hold_id"]
    # The answer was lost: resent before the seller finished, it is the same run, same hold.
    lost = agent.post("/v1/authorize", json={"action": ACTION}, headers=sent)
    assert lost.status_code == 200 and lost.json() == paid.json()
    # The same payment for a dearer action does not pay its price: 402, nothing held.
    dearer = agent.post("/v1/authorize", json={"action": "report.premium"}, headers=sent)
    assert dearer.json()["error"]["code"] == "payment_required"
    assert decoded(dearer).accepts
    # For another request at the same price it is bound to its first request: 409.
    for other in ({"action": "report.other"}, {"action": ACTION, "cost": "0.50"}):
        refused = agent.post("/v1/authorize", json=other, headers=sent)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "idempotency_key_reused"
    assert written(db) == (1, 1)

    done = agent.post(f"/v1/holds/{hold}/{finish}")
    assert done.status_code == 200, done.text
    for _ in range(3):
        used = agent.post("/v1/authorize", json={"action": ACTION}, headers=sent)
        assert used.status_code == 409, used.text
        assert used.json()["error"]["code"] == "payment_already_used"
        assert PAYMENT_RESPONSE_HEADER not in used.headers
    assert written(db) == (1, 1)
    balance = agent.get("/v1/accounts/agent_user/wallets").json()["wallets"][0]
    assert balance["balance"] == ("4.50" if finish == "capture" else "5.00")


def test_a_credits_payload_must_pay_what_payment_required_asks(
    shop: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    agent = shop["agent"]
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    fund(shop["admin"], "5.00")
    good = credits_payload(required, shop["key"], "pay_wrong_amount_0001")
    for change in ({"amount": "1"}, {"asset": "EUR"}):
        cheap = good | {"accepted": good["accepted"].model_copy(update=change)}
        refused = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(cheap))
        assert refused.json()["error"]["code"] == "payment_required"
        again = decoded(refused)
        assert {r.amount for r in again.accepts if r.scheme == "tollgate-credits"} == {"50"}
        assert written(db) == (0, 0)
    # Nothing was bound: the identifier still pays with the right amount.
    paid = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(good))
    assert paid.status_code == 200, paid.text


def encoded(value: bytes) -> str:
    return base64.b64encode(value).decode()


def raw_payload(required: PaymentRequired, key: str, **changes: Any) -> dict[str, Any]:
    """A credits payload as the JSON on the wire, with ``changes`` made to its top level."""
    accepted = next(r for r in required.accepts if r.scheme == "tollgate-credits")
    wire = {
        "x402Version": 2,
        "accepted": accepted.model_dump(mode="json", by_alias=True, exclude_none=True),
        "payload": {"apiKey": key},
    }
    return wire | changes


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("list", "invalid_payment_signature"),
        ("string", "invalid_payment_signature"),
        ("null", "invalid_payment_signature"),
        ("deep", "invalid_payment_signature"),
        ("huge", "invalid_payment_signature"),
        ("not_utf8", "invalid_payment_signature"),
        ("version_1", "unsupported_x402_version"),
        ("version_text", "unsupported_x402_version"),
        ("version_float", "unsupported_x402_version"),
        ("version_true", "unsupported_x402_version"),
        ("no_version", "unsupported_x402_version"),
        ("extension_list", "invalid_payment_identifier"),
        ("info_text", "invalid_payment_identifier"),
        ("id_number", "invalid_payment_identifier"),
        ("payment_id_number", "invalid_payment_identifier"),
    ],
)
def test_a_malformed_payment_signature_is_a_400_that_writes_nothing(
    shop: dict[str, Any], db: psycopg.Connection[Any], case: str, code: str
) -> None:
    agent = shop["agent"]
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    fund(shop["admin"], "5.00")
    key = shop["key"]
    ident = PAYMENT_IDENTIFIER
    documents: dict[str, Any] = {
        "list": [1, 2],
        "string": "x",
        "null": None,
        "version_1": raw_payload(required, key, x402Version=1),
        "version_text": raw_payload(required, key, x402Version="2"),
        "version_float": raw_payload(required, key, x402Version=2.0),
        "version_true": raw_payload(required, key, x402Version=True),
        "no_version": {k: v for k, v in raw_payload(required, key).items() if k != "x402Version"},
        "extension_list": raw_payload(required, key, extensions={ident: ["pay_malformed_000001"]}),
        "info_text": raw_payload(required, key, extensions={ident: {"info": "pay_malformed_01"}}),
        "id_number": raw_payload(required, key, extensions={ident: {"info": {"id": 12345}}}),
        "payment_id_number": raw_payload(required, key)
        | {"payload": {"apiKey": key, "paymentId": 1234567890123456789}},
    }
    if case == "deep":
        header = encoded(b"[" * 100000)[:8000]
    elif case == "huge":
        big = raw_payload(required, key)
        big["payload"]["padding"] = "x" * 9000
        header = encoded(json.dumps(big).encode())
    elif case == "not_utf8":
        header = encoded(b'{"x402Version": 2, "a": "' + bytes([0xFF, 0xFE]) + b'"}')
    else:
        header = encoded(json.dumps(documents[case]).encode())
    refused = agent.post(
        "/v1/authorize", json={"action": ACTION}, headers={PAYMENT_SIGNATURE_HEADER: header}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == code
    assert written(db) == (0, 0)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("not base64!", "invalid_payment_signature"),
        (base64.b64encode(b'{"x402Version": 2}').decode(), "invalid_payment_signature"),
        ("scheme", "unsupported_payment_scheme"),
        ("identifier", "invalid_payment_identifier"),
        ("key", "invalid_payment_payload"),
        ("card", "invalid_payment_payload"),
    ],
)
def test_a_bad_payment_signature_is_a_400_that_writes_nothing(
    shop: dict[str, Any], db: psycopg.Connection[Any], header: str, code: str
) -> None:
    agent = shop["agent"]
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    good = credits_payload(required, shop["key"], "pay_credits_identifier_2")
    card = next(r for r in required.accepts if r.scheme == "auth-capture")
    variants = {
        "scheme": good | {"accepted": good["accepted"].model_copy(update={"scheme": "exact"})},
        "identifier": good | {"payload": {"apiKey": shop["key"], "paymentId": "short"}},
        "key": good | {"payload": {"paymentId": "pay_credits_identifier_2"}},
        "card": good | {"accepted": card, "payload": {"token": "4242424242424242"}},
    }
    sent = signed(variants[header]) if header in variants else {PAYMENT_SIGNATURE_HEADER: header}
    refused = agent.post("/v1/authorize", json={"action": ACTION}, headers=sent)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == code
    assert db.execute(
        "SELECT (SELECT count(*) FROM tollgate.holds),"
        " (SELECT count(*) FROM tollgate.x402_settlements)"
    ).fetchone() == (0, 0)


def test_a_refused_mcp_authorize_carries_x402_payment_required(
    shop: dict[str, Any], api: Api
) -> None:
    async def work(client: Any) -> Any:
        return await client.call_tool("authorize", {"action": ACTION})

    result = with_mcp(api, shop["key"], work)
    assert result.is_error
    body = result.structured_content
    assert body["status"] == 402 and body["error"]["code"] == "payment_required"
    assert {o["scheme"] for o in body["accepts"]} == {"stripe.payment", "credits"}, "as before"
    wrapper = body["x402/error"]
    assert wrapper["code"] == 402
    required = PaymentRequired.model_validate(wrapper["data"])
    assert required.resource is not None and required.resource.url == "mcp://tool/authorize"
    assert {r.scheme for r in required.accepts} == {"auth-capture", "tollgate-credits"}
    assert result.meta["x402/payment-required"] == wrapper["data"]
    assert json.loads(result.content[0].text)["x402/error"] == wrapper


def card_payload(required: PaymentRequired, token: str, paid_id: str) -> dict[str, Any]:
    accepted = next(r for r in required.accepts if r.scheme == "auth-capture")
    return {
        "payload": {"token": token, "paymentId": paid_id},
        "accepted": accepted,
        "resource": required.resource,
    }


@pytest.mark.parametrize("change", [{"amount": "1"}, {"asset": "EUR"}])
def test_a_card_payload_for_another_amount_is_a_402_before_anything_else(
    shop: dict[str, Any], db: psycopg.Connection[Any], change: dict[str, str]
) -> None:
    agent = shop["agent"]
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    good = card_payload(required, "pm_card_visa", "pay_card_wrong_amount_1")
    cheap = good | {"accepted": good["accepted"].model_copy(update=change)}
    refused = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(cheap))
    assert refused.json()["error"]["code"] == "payment_required"
    assert decoded(refused).accepts
    assert written(db) == (0, 0)
    assert db.execute("SELECT count(*) FROM tollgate.payment_intents").fetchone() == (0,)


def test_a_paid_retry_by_card_settles_once_and_a_declined_card_is_a_402(
    shop: dict[str, Any], emulator: Emulator, db: psycopg.Connection[Any]
) -> None:
    agent = shop["agent"]
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    stripe = stripe_client(emulator.base)

    def card(number: str) -> str:
        method = stripe.v1.payment_methods.create(
            {
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        )
        return str(method.id)

    declined = card_payload(required, card("4000000000000341"), "pay_card_identifier_01")
    refused = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(declined))
    assert refused.json()["error"]["code"] == "card_declined"
    assert decoded(refused).accepts, "a 402 saying how to pay, in both formats"

    good = card_payload(required, card("4242424242424242"), "pay_card_identifier_02")
    answers = [
        agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(good)) for _ in range(2)
    ]
    for paid in answers:
        assert paid.status_code == 200, paid.text
        assert paid.json()["via"] == "credits" and paid.json()["hold_id"]
    first, again = (
        decode_payment_response_header(a.headers[PAYMENT_RESPONSE_HEADER]) for a in answers
    )
    assert first == again and first.transaction.startswith("pi_") and first.amount == "50"
    assert answers[0].json() == answers[1].json()
    rows = db.execute(
        "SELECT status::text, count(*)::int FROM tollgate.payment_intents GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert ("succeeded", 1) in rows, rows
    assert db.execute("SELECT count(*) FROM tollgate.holds").fetchone() == (1,)

    # The same identifier with another card: refused before anything is charged.
    other = card_payload(required, card("4242424242424242"), "pay_card_identifier_02")
    conflict = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(other))
    assert conflict.status_code == 409, conflict.text
    assert db.execute("SELECT count(*) FROM tollgate.holds").fetchone() == (1,)


def test_twin_card_retries_charge_once(
    shop: dict[str, Any], api: Api, emulator: Emulator, db: psycopg.Connection[Any]
) -> None:
    """The same paid retry sent four times at once (an agent retrying on a timeout): one
    PaymentIntent, one hold, four identical answers."""
    required = decoded(shop["agent"].post("/v1/authorize", json={"action": ACTION}))
    method = stripe_client(emulator.base).v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    headers = signed(card_payload(required, str(method.id), "pay_card_identifier_03"))

    def send(_: int) -> httpx.Response:
        with api.client(shop["key"]) as http:
            return http.post("/v1/authorize", json={"action": ACTION}, headers=headers)

    answers = in_parallel(4, send)
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.headers[PAYMENT_RESPONSE_HEADER] for a in answers}) == 1
    assert len({a.json()["hold_id"] for a in answers}) == 1
    assert db.execute("SELECT count(*) FROM tollgate.payment_intents").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM tollgate.holds").fetchone() == (1,)


def test_a_card_retry_is_never_served_from_credits_it_did_not_buy(
    shop: dict[str, Any], emulator: Emulator, db: psycopg.Connection[Any]
) -> None:
    """Credits already on the account (as another payer's card payment leaves them once its
    webhook is applied, before that payer's hold) serve no card payload whose own payment did
    not succeed: a declined card and a token Stripe does not know both get a 4xx, no hold and
    no settlement; the credits are all still there."""
    agent = shop["agent"]
    required = decoded(agent.post("/v1/authorize", json={"action": ACTION}))
    fund(shop["admin"], "1.00")
    method = stripe_client(emulator.base).v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4000000000000341", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    declined = card_payload(required, str(method.id), "pay_card_identifier_04")
    refused = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(declined))
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["code"] == "card_declined"
    assert refused.json()["remaining"] is None, "the account's credits are not the payer's"
    assert decoded(refused).accepts, "a 402 saying how to pay, in both formats"

    bogus = card_payload(required, "pm_no_such_card_at_all", "pay_card_identifier_05")
    refused = agent.post("/v1/authorize", json={"action": ACTION}, headers=signed(bogus))
    assert 400 <= refused.status_code < 500, refused.text

    assert db.execute(
        "SELECT (SELECT count(*) FROM tollgate.holds),"
        " (SELECT count(*) FROM tollgate.x402_settlements WHERE response IS NOT NULL)"
    ).fetchone() == (0, 0)
    # The credits are untouched: the account's own key still holds them.
    assert agent.post("/v1/authorize", json={"action": ACTION}).status_code == 200


def test_every_other_402_carries_x402_payment_required(shop: dict[str, Any]) -> None:
    """A transfer past a spend cap is a 402 from the error handler: the header is there too."""
    fund(shop["admin"], "5.00")
    capped = shop["admin"].put(
        "/v1/accounts/agent_user/spend-caps",
        json={"period": "day", "currency": "USD", "hard_limit": "0.60"},
    )
    assert capped.status_code == 200, capped.text
    refused = shop["agent"].post(
        "/v1/transfers",
        json={"to_account_id": "ops", "amount": "1.00", "currency": "USD"},
        headers={"Idempotency-Key": "transfer-over-cap"},
    )
    assert refused.json()["error"]["code"] == "spend_cap_exceeded"
    required = decoded(refused)
    assert required.accepts == [] and required.error is not None
    assert required.error.startswith("spend_cap_exceeded: ")
    assert required.resource is not None and required.resource.url.endswith("/v1/transfers")
