"""One unit for money, everywhere: in a request `amount` is a decimal in the currency's units
(a JSON string or number, read exactly) and `amount_minor` an integer of minor units, one of the
two; every response gives both, and they agree. Over HTTP, MCP and the Python client."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import psycopg
import pytest
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import Api, Emulator
from tests.helpers import ledger_problems, row_counts, stripe_client, stripe_intents_with
from tests.test_gating import ACTION
from tollgate import Client

# Money fields of responses; each must come with its `_minor` twin. (A metric's unit_price and
# a usage cost may be fractions of a minor unit: they are given as exact decimals only.)
MONEY = {
    "amount",
    "balance",
    "captured_amount",
    "first_amount_max",
    "hard_limit",
    "low_balance",
    "max_amount",
    "price",
    "remaining",
}


def exponents(db: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(db.execute("SELECT code, exponent::int FROM tollgate.currencies").fetchall())


def check_money(body: Any, exps: dict[str, int], path: str = "") -> int:
    """Every `x_minor` has its decimal twin `x` and they agree (written with the currency's
    decimals); every money field has its `_minor`. Returns the number of pairs seen."""
    seen = 0
    if isinstance(body, list):
        return sum(check_money(item, exps, f"{path}[{n}]") for n, item in enumerate(body))
    if not isinstance(body, dict):
        return 0
    for key, value in body.items():
        if key == "request":  # a 402's payment option: the request to send, not an answer
            continue
        if key.endswith("_minor"):
            twin = key.removesuffix("_minor")
            assert twin in body, f"{path}.{key} has no decimal twin {twin}"
            if value is None:
                assert body[twin] is None, f"{path}.{twin} without {key}"
                continue
            assert isinstance(value, int) and not isinstance(value, bool), f"{path}.{key}"
            exp = exps[body["currency"]]
            text = body[twin]
            assert isinstance(text, str), f"{path}.{twin} is not a decimal string"
            assert Decimal(text) == Decimal(value).scaleb(-exp), f"{path}: {text} != {value}"
            assert text == format(Decimal(value).scaleb(-exp), "f"), f"{path}.{twin}: {text}"
            seen += 1
        elif key in MONEY and value is not None:
            assert f"{key}_minor" in body, f"{path}.{key} has no {key}_minor"
        seen += check_money(value, exps, f"{path}.{key}")
    return seen


@pytest.fixture
def funded(api: Api, new_key: Any) -> dict[str, httpx.Client]:
    """The action priced at 0.50 USD, and an agent holding 2.00 USD of credits."""
    admin = api.client(new_key("ops", admin=True))
    agent = api.client(new_key("agent_user"))
    assert admin.put(f"/v1/actions/{ACTION}", json={"price": "0.50", "currency": "USD"}).is_success
    funds = {"reference": "funds", "amount": "2.00", "currency": "USD", "account_id": "agent_user"}
    assert admin.post("/v1/transactions", json=funds).status_code == 201
    assert admin.post("/v1/transactions/funds/settle?account_id=agent_user").status_code == 200
    return {"admin": admin, "agent": agent}


def hold(agent: httpx.Client) -> str:
    held = agent.post("/v1/authorize", json={"action": ACTION})
    assert held.status_code == 200 and held.json()["via"] == "credits", held.text
    return str(held.json()["hold_id"])


@pytest.mark.parametrize(
    "sent",
    [
        b'{"amount": "0.30"}',
        b'{"amount": 0.30}',
        b'{"amount": 3e-1}',
        b'{"amount_minor": 30}',
    ],
)
def test_a_capture_of_030_captures_030_however_it_is_written(
    funded: dict[str, httpx.Client], db: psycopg.Connection[Any], sent: bytes
) -> None:
    agent = funded["agent"]
    captured = agent.post(
        f"/v1/holds/{hold(agent)}/capture",
        content=sent,
        headers={"Content-Type": "application/json"},
    )
    assert captured.status_code == 200, captured.text
    body = captured.json()
    assert (body["captured_amount"], body["captured_amount_minor"]) == ("0.30", 30)
    assert (body["amount"], body["amount_minor"]) == ("0.50", 50)
    balance = agent.get("/v1/accounts/agent_user/balances").json()["balances"][0]
    assert (balance["balance"], balance["balance_minor"]) == ("1.70", 170)
    assert ledger_problems(db) == []


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ({"amount": "0.30", "amount_minor": 30}, "amount_conflict"),
        ({"amount": "0.30", "amount_minor": 3000}, "amount_conflict"),
        ({"amount": "0.305"}, "invalid_amount"),
        ({"amount_minor": 30.5}, "invalid_request"),
        ({"amount_minor": "30"}, "invalid_request"),
    ],
)
def test_a_capture_given_both_forms_or_a_bad_one_is_refused_and_changes_nothing(
    funded: dict[str, httpx.Client], db: psycopg.Connection[Any], sent: Any, code: str
) -> None:
    agent = funded["agent"]
    held = hold(agent)
    before = row_counts(db)
    refused = agent.post(f"/v1/holds/{held}/capture", json=sent)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == code
    assert row_counts(db) == before
    assert agent.get(f"/v1/holds/{held}").json()["status"] == "active"


def test_both_forms_or_neither_are_refused_on_every_route_that_takes_money(
    funded: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    admin, agent = funded["admin"], funded["agent"]
    before = row_counts(db)
    both = [
        (agent, "POST", "/v1/payments", {"amount": "1", "amount_minor": 100, "currency": "usd"}),
        (
            agent,
            "POST",
            "/v1/transactions",
            {"reference": "r", "amount": "1", "amount_minor": 100, "currency": "USD"},
        ),
        (
            agent,
            "POST",
            "/v1/transfers",
            {"to_account_id": "ops", "amount": 1, "amount_minor": 100, "currency": "USD"},
        ),
        (
            agent,
            "POST",
            "/v1/authorize",
            {"action": ACTION, "cost": 1, "cost_minor": 100, "currency": "USD"},
        ),
        (
            admin,
            "PUT",
            f"/v1/actions/{ACTION}",
            {"price": "1", "price_minor": 100, "currency": "USD"},
        ),
        (
            admin,
            "PUT",
            "/v1/accounts/agent_user/spend-caps",
            {"period": "day", "currency": "USD", "hard_limit": "1", "hard_limit_minor": 100},
        ),
        (
            admin,
            "PUT",
            "/v1/accounts/agent_user/wallets/USD",
            {"low_balance": None, "low_balance_minor": 100},
        ),
        (admin, "PUT", "/v1/risk-rules/USD", {"max_amount": "1", "max_amount_minor": 100}),
        (
            admin,
            "POST",
            "/v1/reconciliation/lines",
            {
                "source": "bank",
                "lines": [
                    {
                        "reference": "r",
                        "amount": "1",
                        "amount_minor": 100,
                        "currency": "USD",
                        "date": "2026-11-20",
                    }
                ],
            },
        ),
    ]
    for client, method, url, body in both:
        r = client.request(method, url, json=body, headers={"Idempotency-Key": "both"})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["code"] == "amount_conflict", (url, r.text)
        assert "_minor" in r.json()["error"]["message"], url
    neither = [
        (agent, "POST", "/v1/payments", {"currency": "usd"}),
        (agent, "POST", "/v1/transactions", {"reference": "r", "currency": "USD"}),
        (agent, "POST", "/v1/transfers", {"to_account_id": "ops", "currency": "USD"}),
        (admin, "PUT", f"/v1/actions/{ACTION}", {"currency": "USD"}),
    ]
    for client, method, url, body in neither:
        r = client.request(method, url, json=body, headers={"Idempotency-Key": "neither"})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["error"]["code"] == "amount_required", (url, r.text)
    assert row_counts(db) == before


@pytest.mark.parametrize(
    ("sent", "minor"),
    [
        (b'"0.50"', 50),
        (b"0.50", 50),
        (b"0.7", 70),  # read exactly: 0.7 is no float-exact number
        (b"1e2", 10000),
        (b'"1250.5"', 125050),
    ],
)
def test_a_payment_amount_is_a_decimal_in_major_units(
    api: Api,
    new_key: Any,
    db: psycopg.Connection[Any],
    emulator: Emulator,
    sent: bytes,
    minor: int,
) -> None:
    with api.client(new_key("payer")) as http:
        r = http.post(
            "/v1/payments",
            content=b'{"amount": ' + sent + b', "currency": "usd", "purpose": "credits"}',
            headers={"Idempotency-Key": "p1", "Content-Type": "application/json"},
        )
        assert r.status_code == 201, r.text
        read = http.get(f"/v1/payments/{r.json()['id']}").json()
    assert r.json()["amount_minor"] == read["amount_minor"] == minor
    assert r.json()["amount"] == read["amount"] == format(Decimal(minor).scaleb(-2), "f")
    stored = db.execute(
        "SELECT amount FROM tollgate.payment_intents WHERE id = %s", (r.json()["id"],)
    ).fetchone()
    assert stored == (minor,)
    at_stripe = stripe_intents_with(stripe_client(emulator.base), r.json()["id"])
    assert [pi.amount for pi in at_stripe] == [minor]


def test_a_payment_in_minor_units_and_the_same_in_decimal_are_the_same_request(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    with api.client(new_key("payer")) as http:
        first = http.post(
            "/v1/payments",
            json={"amount_minor": 50, "currency": "usd"},
            headers={"Idempotency-Key": "same"},
        )
        again = http.post(
            "/v1/payments",
            json={"amount": "0.50", "currency": "usd"},
            headers={"Idempotency-Key": "same"},
        )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert (first.json()["amount"], first.json()["amount_minor"]) == ("0.50", 50)
    assert row_counts(db)["payment_intents"] == 1


@pytest.mark.parametrize(
    ("currency", "sent", "shown", "minor"),
    [
        ("USD", {"amount": 0.1}, "0.10", 10),
        ("USD", {"amount": 1e2}, "100.00", 10000),
        ("USD", {"amount_minor": 30}, "0.30", 30),
        ("JPY", {"amount_minor": 1250}, "1250", 1250),
        ("JPY", {"amount": "1250"}, "1250", 1250),
        ("KWD", {"amount_minor": 1250}, "1.250", 1250),
        ("KWD", {"amount": 1.25}, "1.250", 1250),
    ],
)
def test_amounts_in_each_currency_exponent(
    api: Api, new_key: Any, currency: str, sent: dict[str, Any], shown: str, minor: int
) -> None:
    with api.client(new_key("shop")) as http:
        r = http.post("/v1/transactions", json={"reference": "t", "currency": currency, **sent})
    assert r.status_code == 201, r.text
    assert (r.json()["amount"], r.json()["amount_minor"]) == (shown, minor)


def test_a_decimal_with_more_decimals_than_the_currency_is_refused_in_each_form(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("shop")
    before = row_counts(db)
    with api.client(key) as http:
        for url, body in [
            ("/v1/payments", {"amount": "1.5", "currency": "jpy"}),
            ("/v1/payments", {"amount": 0.001, "currency": "usd"}),
            ("/v1/transactions", {"reference": "t", "amount": "1.5", "currency": "JPY"}),
        ]:
            r = http.post(url, json=body, headers={"Idempotency-Key": "x"})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_amount", r.text
    after = row_counts(db)
    assert after == before, {t: (before[t], after[t]) for t in after if after[t] != before[t]}


def test_every_money_response_gives_both_forms_and_they_agree(
    api: Api, funded: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    admin, agent = funded["admin"], funded["agent"]
    exps = exponents(db)
    bodies: dict[str, Any] = {}

    def take(name: str, r: httpx.Response, status: int = 200) -> Any:
        assert r.status_code == status, (name, r.text)
        bodies[name] = r.json()
        return r.json()

    take("price", admin.put(f"/v1/actions/{ACTION}", json={"price_minor": 50, "currency": "USD"}))
    take("other price", admin.put("/v1/actions/other.run", json={"price": 7, "currency": "KWD"}))
    take("refused (402)", agent.post("/v1/authorize", json={"action": "other.run"}), 402)
    allowed = take("authorize", agent.post("/v1/authorize", json={"action": ACTION}))
    take("hold", agent.get(f"/v1/holds/{allowed['hold_id']}"))
    take("capture", agent.post(f"/v1/holds/{allowed['hold_id']}/capture", json={"amount": "0.2"}))
    second = take(
        "authorize cost",
        agent.post("/v1/authorize", json={"action": ACTION, "cost_minor": 60, "currency": "USD"}),
    )
    take("release", agent.post(f"/v1/holds/{second['hold_id']}/release"))
    paid = take(
        "payment",
        agent.post(
            "/v1/payments",
            json={"amount": "3.00", "currency": "eur"},
            headers={"Idempotency-Key": "eur"},
        ),
        201,
    )
    take("payment read", agent.get(f"/v1/payments/{paid['id']}"))
    take(
        "transaction",
        admin.post(
            "/v1/transactions",
            json={"reference": "o-1", "amount_minor": 1999, "currency": "USD", "account_id": "ops"},
        ),
        201,
    )
    take("settled", admin.post("/v1/transactions/o-1/settle?account_id=ops"))
    take("transactions", admin.get("/v1/transactions?account_id=ops"))
    take(
        "transfer",
        agent.post(
            "/v1/transfers",
            json={"to_account_id": "ops", "amount_minor": 5, "currency": "USD"},
            headers={"Idempotency-Key": "t"},
        ),
        201,
    )
    take("balances", agent.get("/v1/accounts/agent_user/balances"))
    take(
        "spend cap",
        admin.put(
            "/v1/accounts/agent_user/spend-caps",
            json={"period": "day", "currency": "USD", "hard_limit_minor": 1000},
        ),
    )
    take(
        "wallet",
        admin.put("/v1/accounts/agent_user/wallets/USD", json={"low_balance": "0.25"}),
    )
    take(
        "risk rule",
        admin.put("/v1/risk-rules/USD", json={"max_amount_minor": 50000, "first_amount_max": 50}),
    )

    pairs = {name: check_money(body, exps, name) for name, body in bodies.items()}
    assert all(pairs.values()), f"responses without money: {pairs}"
    assert bodies["price"]["price"] == "0.50"
    assert bodies["other price"] == bodies["other price"] | {"price": "7.000", "price_minor": 7000}
    assert {o["amount_minor"] for o in bodies["refused (402)"]["accepts"]} == {7000}
    assert {o["request"]["body"]["amount"] for o in bodies["refused (402)"]["accepts"]} == {"7.000"}
    assert (bodies["capture"]["captured_amount"], bodies["capture"]["captured_amount_minor"]) == (
        "0.20",
        20,
    )
    assert (bodies["authorize cost"]["remaining"], bodies["release"]["amount_minor"]) == (
        "1.20",
        60,
    )
    assert bodies["payment"]["amount_minor"] == 300
    assert (bodies["transfer"]["amount"], bodies["transfer"]["amount_minor"]) == ("0.05", 5)
    assert bodies["spend cap"]["hard_limit"] == "10.00"
    assert bodies["wallet"]["low_balance_minor"] == 25
    assert (bodies["risk rule"]["max_amount"], bodies["risk rule"]["first_amount_max_minor"]) == (
        "500.00",
        5000,
    )


def test_cost_minor_needs_its_currency(funded: dict[str, httpx.Client]) -> None:
    r = funded["agent"].post("/v1/authorize", json={"action": ACTION, "cost_minor": 60})
    assert r.status_code == 422 and r.json()["error"]["code"] == "currency_required"


# ---------------------------------------------------------------------------------------------
# MCP and the Python client follow the same rule
# ---------------------------------------------------------------------------------------------


def call_tools(api: Api, key: str, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    async def run() -> list[Any]:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
            McpClient(streamable_http_client(f"{api.url}/mcp", http_client=http)) as client,
        ):
            return [await client.call_tool(name, args) for name, args in calls]

    return asyncio.run(run())


def test_mcp_takes_and_gives_both_forms(
    api: Api, new_key: Any, funded: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    exps = exponents(db)
    key = new_key("mcp_agent")
    with api.client(new_key("ops2", admin=True)) as admin:
        funds = admin.post(
            "/v1/transactions",
            json={"reference": "f", "amount": "5", "currency": "USD", "account_id": "mcp_agent"},
        )
        assert funds.status_code == 201
        assert admin.post("/v1/transactions/f/settle?account_id=mcp_agent").status_code == 200
    held = call_tools(api, key, [("authorize", {"action": ACTION}) for _ in range(4)])
    holds = [h.structured_content["hold_id"] for h in held]
    before = row_counts(db)
    refused = call_tools(
        api,
        key,
        [
            ("capture_hold", {"hold_id": holds[0], "amount": "0.30", "amount_minor": 30}),
            ("create_payment", {"currency": "usd", "idempotency_key": "none"}),
            (
                "create_payment",
                {"amount": 0.12345678901234567, "currency": "usd", "idempotency_key": "f"},
            ),
        ],
    )
    assert [r.structured_content["error"]["code"] for r in refused] == [
        "amount_conflict",
        "amount_required",
        "invalid_request",
    ]
    assert row_counts(db) == before
    results = call_tools(
        api,
        key,
        [
            ("capture_hold", {"hold_id": holds[0], "amount": "0.30"}),
            ("capture_hold", {"hold_id": holds[1], "amount": 0.3}),
            ("capture_hold", {"hold_id": holds[2], "amount_minor": 30}),
            ("release_hold", {"hold_id": holds[3]}),
            ("create_payment", {"amount": "0.50", "currency": "usd", "idempotency_key": "m1"}),
            ("create_payment", {"amount": 0.6, "currency": "usd", "idempotency_key": "m2"}),
            ("create_payment", {"amount_minor": 70, "currency": "usd", "idempotency_key": "m3"}),
            ("get_balance", {}),
        ],
    )
    for result in results:
        assert not result.is_error, result.content
        assert check_money(result.structured_content, exps, "mcp")
    out = [r.structured_content for r in results]
    assert [(c["captured_amount"], c["captured_amount_minor"]) for c in out[:3]] == [
        ("0.30", 30)
    ] * 3
    assert [(p["amount"], p["amount_minor"]) for p in out[4:7]] == [
        ("0.50", 50),
        ("0.60", 60),
        ("0.70", 70),
    ]
    status = call_tools(api, key, [("payment_status", {"payment_id": out[4]["id"]})])[0]
    assert (status.structured_content["amount"], status.structured_content["amount_minor"]) == (
        "0.50",
        50,
    )


def test_the_client_takes_and_gives_both_forms(
    api: Api, new_key: Any, funded: dict[str, httpx.Client]
) -> None:
    with Client(api.url, new_key("client_agent")) as agent:
        paid = agent.create_payment("0.50", "usd", purpose="credits")
        assert (paid.amount, paid.amount_minor) == ("0.50", 50)
        by_minor = agent.create_payment(None, "usd", amount_minor=50)
        assert (by_minor.amount, by_minor.amount_minor) == ("0.50", 50)
        assert agent.get_payment(paid.id).amount_minor == 50
    with Client(api.url, new_key("agent_user")) as funded_agent:
        held = funded_agent.authorize(ACTION)
        assert (held.remaining, held.remaining_minor) == ("1.50", 150)
        assert held.hold_id is not None
        captured = funded_agent.capture_hold(held.hold_id, amount_minor=30)
        assert (captured.captured_amount, captured.captured_amount_minor) == ("0.30", 30)
