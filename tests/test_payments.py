"""POST /v1/payments and GET /v1/payments/{ref} over real HTTP, against the Stripe emulator."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import Api, Emulator
from tests.helpers import row_counts, stripe_client, stripe_intents_with

BODY = {
    "amount": "12.50",
    "currency": "usd",
    "purpose": "report.generate",
    "description": "Q3 report",
}


def test_create_records_the_intent_here_and_at_stripe(
    api: Api, new_key: Any, db: psycopg.Connection[Any], emulator: Emulator
) -> None:
    key = new_key("user_123")
    with api.client(key) as http:
        r = http.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "order-1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["account_id"] == "user_123"
    assert (body["amount"], body["amount_minor"], body["currency"]) == ("12.50", 1250, "USD")
    assert body["status"] == "requires_payment_method"
    assert body["stripe_id"].startswith("pi_") and body["client_secret"]

    stored = db.execute(
        "SELECT stripe_id, amount, currency, status::text, purpose"
        " FROM tollgate.payment_intents WHERE id = %s",
        (body["id"],),
    ).fetchone()
    assert stored == (body["stripe_id"], 1250, "USD", "requires_payment_method", "report.generate")

    at_stripe = stripe_intents_with(stripe_client(emulator.base), body["id"])
    assert [(pi.id, pi.amount, pi.currency) for pi in at_stripe] == [
        (body["stripe_id"], 1250, "usd")
    ]


def test_same_key_same_body_replays_the_first_response(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("user_123")
    with api.client(key) as http:
        first = http.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "order-2"})
        again = http.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "order-2"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert row_counts(db)["payment_intents"] == 1


def test_same_key_other_body_is_refused(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("user_123")
    with api.client(key) as http:
        assert (
            http.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "k"}).status_code
            == 201
        )
        r = http.post(
            "/v1/payments", json=BODY | {"amount": "13.00"}, headers={"Idempotency-Key": "k"}
        )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    assert row_counts(db)["payment_intents"] == 1


def test_idempotency_keys_belong_to_one_account(api: Api, new_key: Any) -> None:
    with api.client(new_key("alice")) as alice, api.client(new_key("bob")) as bob:
        a = alice.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "shared"})
        b = bob.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "shared"})
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_get_by_tollgate_id_or_stripe_id(api: Api, new_key: Any) -> None:
    with api.client(new_key("user_123")) as http:
        created = http.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "g"}).json()
        by_id = http.get(f"/v1/payments/{created['id']}")
        by_stripe_id = http.get(f"/v1/payments/{created['stripe_id']}")
    assert by_id.status_code == by_stripe_id.status_code == 200
    assert by_id.json() == by_stripe_id.json()
    assert by_id.json()["id"] == created["id"]
    assert "client_secret" not in by_id.json()


def test_a_key_sees_only_its_own_account(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    with api.client(new_key("alice")) as alice, api.client(new_key("bob")) as bob:
        mine = alice.post("/v1/payments", json=BODY, headers={"Idempotency-Key": "a"}).json()
        assert bob.get(f"/v1/payments/{mine['id']}").status_code == 404
        assert bob.get(f"/v1/payments/{mine['stripe_id']}").status_code == 404
        assert bob.get("/v1/accounts/alice/can-continue").status_code == 404
        before = row_counts(db)
        r = bob.post(
            "/v1/payments", json=BODY | {"account_id": "alice"}, headers={"Idempotency-Key": "x"}
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert row_counts(db) == before


def test_admin_keys_act_for_any_account(api: Api, new_key: Any) -> None:
    new_key("alice")
    with api.client(new_key("operator", admin=True)) as admin:
        r = admin.post(
            "/v1/payments", json=BODY | {"account_id": "alice"}, headers={"Idempotency-Key": "adm"}
        )
        assert r.status_code == 201 and r.json()["account_id"] == "alice"
        assert admin.get(f"/v1/payments/{r.json()['id']}").status_code == 200
        assert admin.get("/v1/accounts/alice/can-continue").status_code == 402


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed_authorization"),
        ({"Authorization": "Bearer tg_not_a_real_key"}, "invalid_api_key"),
    ],
)
def test_requests_without_a_valid_key_get_401(api: Api, headers: dict[str, str], code: str) -> None:
    with api.client() as http:
        r = http.get("/v1/accounts/alice/can-continue", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code


def test_revoked_keys_stop_working(api: Api, db: psycopg.Connection[Any]) -> None:
    from db import keys, queries

    new = keys.create(db, account="user_123")
    with api.client(new.key) as http:
        assert http.get("/v1/accounts/user_123/can-continue").status_code == 402
        assert queries.revoke_api_key(db, key_id=new.key_id)
        r = http.get("/v1/accounts/user_123/can-continue")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


LONG = "x" * 1001


def _minor(value: Any) -> dict[str, Any]:
    return {k: v for k, v in BODY.items() if k != "amount"} | {"amount_minor": value}


BAD_INPUT = [
    # (case, body or raw text, idempotency key, status, code)
    ("negative amount", BODY | {"amount": "-1.00"}, "b1", 422, "invalid_amount"),
    ("zero amount", BODY | {"amount": 0}, "b2", 422, "invalid_amount"),
    ("more decimals than USD has", BODY | {"amount": "12.505"}, "b3", 422, "invalid_amount"),
    ("fractional amount_minor", _minor(12.5), "b3m", 422, "invalid_request"),
    ("amount_minor as a string", _minor("1250"), "b4", 422, "invalid_request"),
    ("amount as a boolean", BODY | {"amount": True}, "b5", 422, "invalid_request"),
    ("amount above Stripe's maximum", _minor(100_000_000), "b6", 422, "invalid_amount"),
    ("amount above any maximum", BODY | {"amount": "100000000000.00"}, "b7", 422, "invalid_amount"),
    ("amount_minor beyond 64 bits", _minor(10**30), "b8", 422, "invalid_request"),
    ("amount beyond 64 bits", BODY | {"amount": "1" + "0" * 25}, "b8d", 422, "invalid_amount"),
    ("amount and amount_minor", BODY | {"amount_minor": 1250}, "b8b", 422, "amount_conflict"),
    ("unknown currency", BODY | {"currency": "XYZ"}, "b9", 422, "unknown_currency"),
    ("currency not three letters", BODY | {"currency": "US"}, "b10", 422, "invalid_request"),
    ("missing amount", {"currency": "usd"}, "b11", 422, "amount_required"),
    ("missing currency", {"amount": 100}, "b12", 422, "invalid_request"),
    ("unexpected field", BODY | {"capture": "later"}, "b13", 422, "invalid_request"),
    ("purpose with spaces", BODY | {"purpose": "Generate Report"}, "b14", 422, "invalid_purpose"),
    ("NUL in a text field", BODY | {"description": "a\x00b"}, "b15", 422, "invalid_request"),
    ("description too long", BODY | {"description": LONG}, "b16", 422, "invalid_description"),
    (
        "not a payment method id",
        BODY | {"payment_method": "card_123"},
        "b17",
        422,
        "invalid_request",
    ),
    (
        "unknown payment method",
        BODY | {"payment_method": "pm_doesnotexist"},
        "b18",
        422,
        "stripe_rejected",
    ),
    ("malformed JSON", '{"amount": 1250, "currency": ', "b19", 400, "malformed_json"),
    ("a JSON array", '[1250, "usd"]', "b20", 422, "invalid_request"),
    ("idempotency key with a space", BODY, "has space", 422, "invalid_idempotency_key"),
    ("idempotency key too long", BODY, "k" * 256, 422, "invalid_idempotency_key"),
    ("no idempotency key", BODY, None, 400, "idempotency_key_required"),
]


@pytest.mark.parametrize(
    ("case", "body", "idem", "status", "code"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_gets_a_clear_4xx_and_writes_nothing(
    api: Api,
    new_key: Any,
    db: psycopg.Connection[Any],
    emulator: Emulator,
    case: str,
    body: Any,
    idem: str | None,
    status: int,
    code: str,
) -> None:
    key = new_key("user_123")
    before = row_counts(db)
    stripe = stripe_client(emulator.base)
    intents_before = len(list(stripe.v1.payment_intents.list({"limit": 100}).auto_paging_iter()))
    headers = {"Idempotency-Key": idem} if idem is not None else {}
    with api.client(key) as http:
        if isinstance(body, str):
            r = http.post(
                "/v1/payments", content=body, headers=headers | {"Content-Type": "application/json"}
            )
        else:
            r = http.post("/v1/payments", json=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert row_counts(db) == before
    intents_after = len(list(stripe.v1.payment_intents.list({"limit": 100}).auto_paging_iter()))
    assert intents_after == intents_before, "a refused request must not create a Stripe intent"
