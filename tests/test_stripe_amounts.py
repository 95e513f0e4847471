"""Stripe's units are not ISO 4217's: what Tollgate sends Stripe and reads back, over HTTP,
against the Stripe emulator (which records what it was asked for)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from tests.conftest import Api, Emulator
from tests.helpers import row_counts, stripe_client, stripe_intents_with

CARD = {
    "type": "card",
    "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
}


@pytest.mark.parametrize(
    ("currency", "minor", "at_stripe"),
    [
        ("ISK", 1000, 100000),  # ISO: 0 decimals; Stripe: two, whole kronur
        ("MGA", 150000, 1500),  # ISO: 2 decimals; Stripe: zero-decimal
        ("KWD", 5120, 5120),  # three decimals, ending in 0
        ("USD", 1250, 1250),
    ],
)
def test_payments_ask_stripe_for_the_same_money_in_its_units(
    api: Api,
    new_key: Any,
    emulator: Emulator,
    db: psycopg.Connection[Any],
    currency: str,
    minor: int,
    at_stripe: int,
) -> None:
    with api.client(new_key("units")) as http:
        r = http.post(
            "/v1/payments",
            json={"amount_minor": minor, "currency": currency, "purpose": "credits"},
            headers={"Idempotency-Key": f"pay-{currency}"},
        )
    assert r.status_code == 201, r.text
    stored = db.execute(
        "SELECT amount, currency FROM tollgate.payment_intents WHERE id = %s", (r.json()["id"],)
    ).fetchone()
    assert stored == (minor, currency)
    [intent] = stripe_intents_with(stripe_client(emulator.base), r.json()["id"])
    assert (intent.amount, intent.currency) == (at_stripe, currency.lower())


@pytest.mark.parametrize(
    ("currency", "minor", "code"),
    [
        ("USD", 20, "amount_below_minimum"),  # Stripe charges at least 0.50 USD
        ("MGA", 150050, "invalid_amount"),  # 1500.50 ariary: Stripe takes whole ariary
        ("KWD", 5124, "invalid_amount"),  # three decimals must end in 0
        ("CLF", 10000, "unsupported_currency"),  # not a Stripe currency
    ],
)
def test_amounts_stripe_cannot_take_are_refused_before_calling_it(
    api: Api,
    new_key: Any,
    emulator: Emulator,
    db: psycopg.Connection[Any],
    currency: str,
    minor: int,
    code: str,
) -> None:
    before = len(list(stripe_client(emulator.base).v1.payment_intents.list().auto_paging_iter()))
    with api.client(new_key("units")) as http:
        r = http.post(
            "/v1/payments",
            json={"amount_minor": minor, "currency": currency, "purpose": "credits"},
            headers={"Idempotency-Key": f"bad-{currency}"},
        )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert row_counts(db)["payment_intents"] == row_counts(db)["idempotency_keys"] == 0
    after = len(list(stripe_client(emulator.base).v1.payment_intents.list().auto_paging_iter()))
    assert after == before


def test_a_402_never_asks_for_less_than_stripe_charges(api: Api, new_key: Any) -> None:
    with api.client(new_key("ops", admin=True)) as admin:
        r = admin.put("/v1/actions/ping.cheap", json={"price": "0.10", "currency": "USD"})
        assert r.status_code == 200, r.text
    with api.client(new_key("agent")) as agent:
        refused = agent.post("/v1/authorize", json={"action": "ping.cheap"})
        assert refused.status_code == 402
        body = refused.json()
        assert body["price"] == "0.10"
        for option in body["accepts"]:
            assert (option["amount"], option["amount_minor"]) == ("0.50", 50)
            assert option["request"]["body"]["amount"] == "0.50"
            # What the option asks for is a payment Tollgate accepts.
            paid = agent.post(
                option["request"]["url"],
                json=option["request"]["body"],
                headers=option["request"]["headers"],
            )
            assert paid.status_code == 201, paid.text


def test_an_isk_top_up_settles_the_kronur_paid(api: Api, new_key: Any, emulator: Emulator) -> None:
    """The emulator's webhook says 100000 (Stripe's units): 1000 kronur of credits."""
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(CARD)  # type: ignore[arg-type]
    with api.client(new_key("iceland")) as http:
        r = http.post(
            "/v1/payments",
            json={
                "amount_minor": 1000,
                "currency": "isk",
                "purpose": "credits",
                "payment_method": card.id,
            },
            headers={"Idempotency-Key": "isk-top-up"},
        )
        assert r.status_code == 201, r.text
        assert stripe.v1.payment_intents.confirm(r.json()["stripe_id"]).status == "succeeded"
        deadline = time.monotonic() + 20
        balance: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            balance = http.get("/v1/accounts/iceland/balances").json()["balances"]
            if balance:
                break
            time.sleep(0.1)
        assert [(b["currency"], b["balance_minor"]) for b in balance] == [("ISK", 1000)]
