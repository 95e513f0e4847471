"""Transactions over HTTP: exact amounts, unique references, the lifecycle, Stripe links."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Api
from tests.helpers import event, in_parallel, ledger_problems, row_counts, sign, wait_applied

ORDER = {"reference": "order-1042", "amount": "1250.50", "currency": "USD"}


def move(
    admin: httpx.Client, action: str, reference: str = "order-1042", account: str = "shop"
) -> httpx.Response:
    """Settle, fail or reverse: the job of the downstream service, with an admin key."""
    return admin.post(f"/v1/transactions/{reference}/{action}", params={"account_id": account})


def test_record_read_settle(api: Api, new_key: Any) -> None:
    with api.client(new_key("shop")) as http, api.client(new_key("ops", admin=True)) as admin:
        created = http.post("/v1/transactions", json=ORDER | {"account_id": "shop"})
        assert created.status_code == 201, created.text
        body = created.json()
        assert {
            k: body[k] for k in ("account_id", "reference", "amount", "currency", "status")
        } == {
            "account_id": "shop",
            "reference": "order-1042",
            "amount": "1250.50",
            "currency": "USD",
            "status": "pending",
        }
        assert body["amount_minor"] == 125050
        assert http.get("/v1/transactions/order-1042").json() == body

        own = http.post("/v1/transactions/order-1042/settle")
        assert own.status_code == 403 and own.json()["error"]["code"] == "admin_key_required"
        settled = move(admin, "settle")
        assert settled.status_code == 200 and settled.json()["status"] == "settled"
        balances = http.get("/v1/accounts/shop/balances").json()["balances"]
    assert [(b["currency"], b["balance"], b["version"]) for b in balances] == [
        ("USD", "1250.50", 1)
    ]


@pytest.mark.parametrize(
    ("amount", "currency", "shown", "minor"),
    [
        ("1250", "JPY", "1250", 1250),
        (1250, "JPY", "1250", 1250),
        ("1.234", "KWD", "1.234", 1234),
        (1.234, "KWD", "1.234", 1234),
        ("0.01", "USD", "0.01", 1),
        ("9999999999.99", "USD", "9999999999.99", 999999999999),
        (12.5, "eur", "12.50", 1250),
    ],
)
def test_amounts_are_exact_in_every_currency(
    api: Api, new_key: Any, amount: Any, currency: str, shown: str, minor: int
) -> None:
    with api.client(new_key("shop")) as http:
        r = http.post(
            "/v1/transactions", json={"reference": "r1", "amount": amount, "currency": currency}
        )
    assert r.status_code == 201, r.text
    assert (r.json()["amount"], r.json()["amount_minor"]) == (shown, minor)


BAD = [
    ("three decimals in USD, as a string", {"amount": "1250.505"}, 422, "invalid_amount"),
    ("three decimals in USD, as a number", {"amount": 1250.505}, 422, "invalid_amount"),
    ("decimals in JPY", {"amount": "10.5", "currency": "JPY"}, 422, "invalid_amount"),
    ("four decimals in KWD", {"amount": "1.2345", "currency": "KWD"}, 422, "invalid_amount"),
    ("zero", {"amount": "0"}, 422, "invalid_amount"),
    ("zero with decimals", {"amount": 0.0}, 422, "invalid_amount"),
    ("negative", {"amount": "-5.00"}, 422, "invalid_amount"),
    ("above the maximum", {"amount": "10000000000.00"}, 422, "invalid_amount"),
    ("unknown currency", {"currency": "XYZ"}, 422, "unknown_currency"),
    ("not a currency code", {"currency": "DOLLARS"}, 422, "invalid_request"),
    ("non-numeric", {"amount": "twelve"}, 422, "invalid_request"),
    ("exponent in a string", {"amount": "1e3"}, 422, "invalid_request"),
    ("a boolean", {"amount": True}, 422, "invalid_request"),
    ("missing amount", {"amount": None}, 422, "amount_required"),
    ("reference with a space", {"reference": "order 1"}, 422, "invalid_reference"),
    ("reference too long", {"reference": "r" * 129}, 422, "invalid_reference"),
    ("unknown field", {"memo": "x"}, 422, "invalid_request"),
    ("a trailing newline in the amount", {"amount": "12.50\n"}, 422, "invalid_request"),
    ("a payment that does not exist", {"payment_id": "pi_nothere"}, 404, "not_found"),
]


@pytest.mark.parametrize(("case", "change", "status", "code"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_422_and_writes_nothing(
    api: Api,
    new_key: Any,
    db: psycopg.Connection[Any],
    case: str,
    change: dict[str, Any],
    status: int,
    code: str,
) -> None:
    key = new_key("shop")
    before = row_counts(db)
    body = {k: v for k, v in (ORDER | change).items() if v is not None}
    with api.client(key) as http:
        r = http.post("/v1/transactions", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert row_counts(db) == before


def test_json_numbers_are_read_exactly_not_as_floats(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    # As a float this is 1250.5, a valid USD amount; as written it has 16 decimals.
    raw = b'{"reference": "exact", "amount": 1250.5000000000000001, "currency": "USD"}'
    key = new_key("shop")
    before = row_counts(db)
    with api.client(key, headers={"Content-Type": "application/json"}) as http:
        r = http.post("/v1/transactions", content=raw)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_amount"
    assert row_counts(db) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"reference": "big", "currency": "USD", "amount": ' + b"9" * 5000 + b"}",
        b'{"reference": "\\ud800", "currency": "USD", "amount": "1.00"}',
        b'{"reference": "x", "currency": "USD", "amount": "1.00", "payment_id": "\\udfff"}',
    ],
    ids=["an integer of 5000 digits", "a lone surrogate", "a lone surrogate in payment_id"],
)
def test_raw_json_edge_cases_get_422(
    api: Api, new_key: Any, db: psycopg.Connection[Any], raw: bytes
) -> None:
    key = new_key("shop")
    before = row_counts(db)
    with api.client(key, headers={"Content-Type": "application/json"}) as http:
        r = http.post("/v1/transactions", content=raw)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    assert row_counts(db) == before


def test_malformed_json_and_nan(api: Api, new_key: Any, db: psycopg.Connection[Any]) -> None:
    key = new_key("shop")
    before = row_counts(db)
    with api.client(key, headers={"Content-Type": "application/json"}) as http:
        broken = http.post("/v1/transactions", content=b'{"reference": "x", "amount": ')
        nan = http.post(
            "/v1/transactions", content=b'{"reference": "x", "amount": NaN, "currency": "USD"}'
        )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "malformed_json"
    assert nan.status_code == 400 and nan.json()["error"]["code"] == "malformed_json"
    assert row_counts(db) == before


def test_a_duplicate_reference_gets_409(api: Api, new_key: Any) -> None:
    with api.client(new_key("shop")) as http:
        assert http.post("/v1/transactions", json=ORDER).status_code == 201
        again = http.post("/v1/transactions", json=ORDER)
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_reference"


def test_twenty_concurrent_creates_of_one_reference(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("shop")

    def create(_: int) -> httpx.Response:
        with api.client(key) as http:
            return http.post("/v1/transactions", json=ORDER)

    responses = in_parallel(20, create)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, [r.text for r in responses if r.status_code >= 500]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "duplicate_reference"
    }
    assert row_counts(db)["transactions"] == 1


@pytest.mark.parametrize(
    ("moves", "refused", "final"),
    [
        (["fail"], "settle", "failed"),
        (["fail"], "reverse", "failed"),
        ([], "reverse", "pending"),
        (["settle"], "fail", "settled"),
        (["settle", "reverse"], "settle", "reversed"),
        (["settle", "reverse"], "fail", "reversed"),
    ],
)
def test_moves_outside_the_lifecycle_get_409(
    api: Api, new_key: Any, db: psycopg.Connection[Any], moves: list[str], refused: str, final: str
) -> None:
    with api.client(new_key("shop")) as http, api.client(new_key("ops", admin=True)) as admin:
        http.post("/v1/transactions", json=ORDER)
        for action in moves:
            assert move(admin, action).status_code == 200
        entries_before = row_counts(db)
        r = move(admin, refused)
        assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
        assert http.get("/v1/transactions/order-1042").json()["status"] == final
    assert row_counts(db) == entries_before


@pytest.mark.parametrize("moves", [["settle"], ["fail"], ["settle", "reverse"]])
def test_repeating_a_move_is_answered_again_and_posts_nothing(
    api: Api, new_key: Any, db: psycopg.Connection[Any], moves: list[str]
) -> None:
    with api.client(new_key("shop")) as http, api.client(new_key("ops", admin=True)) as admin:
        http.post("/v1/transactions", json=ORDER)
        for action in moves:
            first = move(admin, action)
        counts = row_counts(db)
        again = move(admin, moves[-1])
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert row_counts(db) == counts, "a retried move changes nothing"


def test_reversing_money_already_spent_gets_insufficient_funds(api: Api, new_key: Any) -> None:
    new_key("other")
    with api.client(new_key("shop")) as http, api.client(new_key("ops", admin=True)) as admin:
        http.post("/v1/transactions", json=ORDER)
        assert move(admin, "settle").status_code == 200
        spent = http.post(
            "/v1/transfers",
            json={"to_account_id": "other", "amount": "1000", "currency": "USD"},
            headers={"Idempotency-Key": "spend"},
        )
        assert spent.status_code == 201, spent.text
        r = move(admin, "reverse")
        assert r.status_code == 409 and r.json()["error"]["code"] == "insufficient_funds"
        assert http.get("/v1/transactions/order-1042").json()["status"] == "settled"


def test_other_accounts_transactions_are_not_found(api: Api, new_key: Any) -> None:
    with api.client(new_key("shop")) as shop, api.client(new_key("rival")) as rival:
        shop.post("/v1/transactions", json=ORDER)
        assert rival.get("/v1/transactions/order-1042").status_code == 404
        assert (
            rival.get("/v1/transactions/order-1042", params={"account_id": "shop"}).status_code
            == 404
        )
        assert move(rival, "settle").status_code == 403
    with api.client(new_key("ops", admin=True)) as admin:
        assert (
            admin.get("/v1/transactions/order-1042", params={"account_id": "shop"}).status_code
            == 200
        )


def test_a_linked_payment_settles_the_transaction_through_its_webhook(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    with api.client(new_key("shop")) as http:
        payment = http.post(
            "/v1/payments",
            json={"amount": "42.00", "currency": "usd"},
            headers={"Idempotency-Key": "p"},
        ).json()
        linked = http.post(
            "/v1/transactions",
            json={
                "reference": "sale-1",
                "amount": "42.00",
                "currency": "USD",
                "payment_id": payment["stripe_id"],
            },
        )
        assert linked.status_code == 201 and linked.json()["payment_id"] == payment["id"]
        payload = event("evt_sale_1", payment["stripe_id"], "succeeded")
        delivered = httpx.post(
            f"{api.url}/v1/webhooks/stripe",
            content=payload,
            headers={
                "Stripe-Signature": sign(payload, api.webhook_secret),
                "Content-Type": "application/json",
            },
        )
        assert delivered.status_code == 200 and delivered.json()["outcome"] == "received"
        assert wait_applied(api.dsn, "evt_sale_1") == {"evt_sale_1": "applied"}
        assert http.get("/v1/transactions/sale-1").json()["status"] == "settled"
        assert http.get("/v1/accounts/shop/balances").json()["balances"][0]["balance"] == "42.00"
    assert ledger_problems(db) == []
