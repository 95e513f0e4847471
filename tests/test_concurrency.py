"""Identical requests fired truly in parallel: one payment here, one intent at Stripe."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.conftest import Api, Emulator
from tests.helpers import in_parallel, row_counts, stripe_client, stripe_intents_with

BODY = {"amount_minor": 990, "currency": "gbp", "purpose": "agent.run"}


def test_twenty_identical_creates_make_one_payment(
    api: Api, new_key: Any, db: psycopg.Connection[Any], emulator: Emulator
) -> None:
    key = new_key("user_1")

    def create(_: int) -> httpx.Response:
        with api.client(key) as http:
            return http.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "same-order"})

    responses = in_parallel(20, create)
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies), "every caller gets the first response"
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19

    assert row_counts(db)["payment_intents"] == 1
    at_stripe = stripe_intents_with(stripe_client(emulator.base), bodies[0]["id"])
    assert [pi.id for pi in at_stripe] == [bodies[0]["stripe_id"]], "exactly one Stripe intent"


def test_parallel_creates_with_distinct_keys_all_succeed(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("user_1")

    def create(i: int) -> httpx.Response:
        with api.client(key) as http:
            return http.post("/v1/payments", json=BODY, headers={"Idempotency-Key": f"order-{i}"})

    responses = in_parallel(20, create)
    assert [r.status_code for r in responses] == [201] * 20
    assert len({r.json()["stripe_id"] for r in responses}) == 20
    assert row_counts(db)["payment_intents"] == 20
