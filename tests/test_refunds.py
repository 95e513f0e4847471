"""POST /v1/payments/{id}/refunds over HTTP against the Stripe emulator: admin keys only, the
refund asked of Stripe in its units, once per Idempotency-Key, never more than is left; the
charge.refunded webhook then takes the credits back."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from tests.conftest import Api, Emulator
from tests.helpers import row_counts, sign, stripe_client, wait_applied

CARD = {
    "type": "card",
    "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
}


def _credits_paid(
    api: Api, emulator: Emulator, key: str, account: str, amount: int
) -> dict[str, Any]:
    """Buy ``amount`` ISK of credits with a test card; return the payment once the webhook
    credited the account."""
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(CARD)  # type: ignore[arg-type]
    with api.client(key) as http:
        made = http.post(
            "/v1/payments",
            json={
                "amount": amount,
                "currency": "isk",
                "purpose": "credits",
                "payment_method": card.id,
            },
            headers={"Idempotency-Key": f"buy-{account}"},
        )
        assert made.status_code == 201, made.text
        assert stripe.v1.payment_intents.confirm(made.json()["stripe_id"]).status == "succeeded"
        assert _balance_becomes(http, account, amount), "the payment's webhook never arrived"
    payment: dict[str, Any] = made.json()
    return payment


def _balance_becomes(http: Any, account: str, minor: int) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        balances = http.get(f"/v1/accounts/{account}/balances").json()["balances"]
        if [b["balance_minor"] for b in balances if b["name"] == "main"] == [minor]:
            return True
        time.sleep(0.1)
    return False


def _refunds_at_stripe(emulator: Emulator, payment_intent: str) -> list[Any]:
    return list(
        stripe_client(emulator.base)
        .v1.refunds.list({"payment_intent": payment_intent, "limit": 100})
        .auto_paging_iter()
    )


def test_agent_keys_cannot_refund(
    api: Api, new_key: Any, emulator: Emulator, db: psycopg.Connection[Any]
) -> None:
    agent = new_key("buyer")
    paid = _credits_paid(api, emulator, agent, "buyer", 1000)
    with api.client(agent) as http:
        r = http.post(
            f"/v1/payments/{paid['id']}/refunds", json={}, headers={"Idempotency-Key": "mine"}
        )
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "admin_key_required"
    assert row_counts(db)["refunds"] == 0
    assert _refunds_at_stripe(emulator, paid["stripe_id"]) == []


def test_a_partial_refund_is_asked_once_in_stripe_units_and_its_webhook_takes_credits_back(
    api: Api, new_key: Any, emulator: Emulator, db: psycopg.Connection[Any]
) -> None:
    agent = new_key("iceland")
    paid = _credits_paid(api, emulator, agent, "iceland", 1000)  # 1000 kronur
    url = f"/v1/payments/{paid['id']}/refunds"
    with api.client(new_key("ops", admin=True)) as admin:
        first = admin.post(url, json={"amount": "400"}, headers={"Idempotency-Key": "refund-1"})
        assert first.status_code == 201, first.text
        refund = first.json()
        assert (refund["amount"], refund["amount_minor"], refund["currency"]) == ("400", 400, "ISK")
        assert refund["payment_stripe_id"] == paid["stripe_id"]
        assert refund["stripe_id"].startswith("re_")

        # At Stripe: 400 kronur is 40000 in its units (ISK is written with two decimals there).
        [at_stripe] = _refunds_at_stripe(emulator, paid["stripe_id"])
        assert (at_stripe.id, at_stripe.amount, at_stripe.currency) == (
            refund["stripe_id"],
            40000,
            "isk",
        )

        again = admin.post(url, json={"amount_minor": 400}, headers={"Idempotency-Key": "refund-1"})
        assert again.status_code == 201, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json() == refund
        other = admin.post(url, json={"amount": 500}, headers={"Idempotency-Key": "refund-1"})
        assert other.status_code == 409, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"

        too_much = admin.post(url, json={"amount_minor": 601}, headers={"Idempotency-Key": "r-2"})
        assert too_much.status_code == 422, too_much.text
        assert too_much.json()["error"]["code"] == "refund_exceeds_payment"
        both = admin.post(
            url, json={"amount": "1", "amount_minor": 1}, headers={"Idempotency-Key": "r-3"}
        )
        assert both.status_code == 422, both.text
        no_key = admin.post(url, json={})
        assert (
            no_key.status_code == 400
            and no_key.json()["error"]["code"] == "idempotency_key_required"
        )
        assert len(_refunds_at_stripe(emulator, paid["stripe_id"])) == 1, "one refund at Stripe"
        assert row_counts(db)["refunds"] == 1

    with api.client(agent) as http:
        # Stripe answered that the refund succeeded: the credits it paid for are taken back
        # at once, not left spendable until (or unless) its event arrives.
        assert refund["status"] == "succeeded"
        assert _balance_becomes(http, "iceland", 600), "the 400 kronur of credits are taken back"

        # Stripe's charge.refunded (the emulator sends no refund webhooks: the event is built
        # from its charge, as Stripe would send it, and signed with the endpoint's secret).
        charges = stripe_client(emulator.base).v1.charges.list({"limit": 100}).auto_paging_iter()
        charge = next(c for c in charges if c.payment_intent == paid["stripe_id"]).to_dict()
        assert (charge["amount_refunded"], charge["refunded"]) == (40000, False)
        payload = json.dumps(
            {
                "id": f"evt_refund_{refund['stripe_id']}",
                "object": "event",
                "type": "charge.refunded",
                "created": int(time.time()),
                "data": {"object": charge},
            }
        ).encode()
        delivered = http.post(
            "/v1/webhooks/stripe",
            content=payload,
            headers={
                "Stripe-Signature": sign(payload, api.webhook_secret),
                "Content-Type": "application/json",
            },
        )
        assert delivered.status_code == 200, delivered.text
        assert delivered.json()["outcome"] == "received"
        stored = json.loads(payload)["id"]
        assert wait_applied(api.dsn, stored) == {stored: "stale"}, (
            "the event finds the refund counted"
        )
        assert _balance_becomes(http, "iceland", 600), "and takes nothing more"
        assert http.get(f"/v1/payments/{paid['id']}").json()["status"] == "succeeded"

    with api.client(new_key("ops2", admin=True)) as admin:
        rest = admin.post(url, headers={"Idempotency-Key": "refund-rest"})
        assert rest.status_code == 201, rest.text
        assert (rest.json()["amount"], rest.json()["amount_minor"]) == ("600", 600)
        done = admin.post(url, headers={"Idempotency-Key": "refund-more"})
        assert done.status_code == 409, done.text
        assert done.json()["error"]["code"] == "payment_not_refundable"
    assert sorted(r.amount for r in _refunds_at_stripe(emulator, paid["stripe_id"])) == [
        40000,
        60000,
    ]
