"""Agent gating over HTTP: 402 with how to pay, entitlements, credits and holds, spend caps,
usage metering. The rules are the database's; these tests watch them from the agent's side."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Api
from tests.helpers import in_parallel, ledger_problems, row_counts, sign

ACTION = "report.generate"


@pytest.fixture
def shop(api: Api, new_key: Any) -> dict[str, httpx.Client]:
    """An admin that priced the action, and an agent's account key."""
    admin = api.client(new_key("ops", admin=True))
    agent = api.client(new_key("agent_user"))
    priced = admin.put(f"/v1/actions/{ACTION}", json={"price": "0.50", "currency": "USD"})
    assert priced.status_code == 200, priced.text
    return {"admin": admin, "agent": agent}


def succeed(api: Api, stripe_id: str, event_id: str) -> None:
    """Deliver Stripe's payment_intent.succeeded for the payment, signed."""
    payload = json.dumps(
        {
            "id": event_id,
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {"object": "payment_intent", "id": stripe_id, "status": "succeeded"}
            },
        }
    ).encode()
    r = httpx.post(
        f"{api.url}/v1/webhooks/stripe",
        content=payload,
        headers={
            "Stripe-Signature": sign(payload, api.webhook_secret),
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 200 and r.json()["outcome"] == "applied", r.text


def authorize(client: httpx.Client, **extra: Any) -> httpx.Response:
    return client.post("/v1/authorize", json={"action": ACTION, **extra})


def test_402_says_exactly_how_to_pay_and_the_payment_entitles_one_run(
    api: Api, shop: dict[str, httpx.Client]
) -> None:
    agent = shop["agent"]
    refused = authorize(agent)
    assert refused.status_code == 402
    body = refused.json()
    assert body["allowed"] is False and body["error"]["code"] == "payment_required"
    assert (body["price"], body["currency"]) == ("0.50", "USD")
    schemes = {o["scheme"]: o for o in body["accepts"]}
    assert set(schemes) == {"stripe.payment", "credits"}
    request = schemes["stripe.payment"]["request"]
    assert (request["method"], request["url"]) == ("POST", "/v1/payments")
    assert request["body"] == {"amount": "0.50", "currency": "usd", "purpose": ACTION}

    paid = agent.request(
        request["method"], request["url"], json=request["body"], headers=request["headers"]
    )
    assert paid.status_code == 201, paid.text
    still = authorize(agent)
    assert still.status_code == 402, "a payment entitles only once it succeeded"
    succeed(api, paid.json()["stripe_id"], "evt_paid_report")

    allowed = authorize(agent)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["via"] == "payment" and allowed.json()["uses_left"] == 0
    assert authorize(agent).status_code == 402, "one payment, one run"


def test_credits_hold_capture_release(
    api: Api, shop: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    agent = shop["agent"]
    bought = agent.post(
        "/v1/payments",
        json={"amount": "2.00", "currency": "usd", "purpose": "credits"},
        headers={"Idempotency-Key": "c1"},
    )
    assert bought.status_code == 201
    succeed(api, bought.json()["stripe_id"], "evt_credits")
    assert agent.get("/v1/accounts/agent_user/balances").json()["balances"][0]["balance"] == "2.00"

    first = authorize(agent, agent_id="agent-7")
    assert first.status_code == 200 and first.json()["via"] == "credits"
    assert first.json()["remaining"] == "1.50" and first.json()["hold_id"]
    hold = first.json()["hold_id"]
    captured = agent.post(f"/v1/holds/{hold}/capture", json={"amount": "0.35"})
    assert captured.status_code == 200 and captured.json()["captured_amount"] == "0.35"
    assert (
        agent.post(f"/v1/holds/{hold}/capture", json={"amount": "0.35"}).json() == captured.json()
    )
    assert agent.post(f"/v1/holds/{hold}/capture", json={"amount": "0.40"}).status_code == 409

    second = authorize(agent, cost="0.60")
    assert second.json()["remaining"] == "1.05"
    too_much = agent.post(f"/v1/holds/{second.json()['hold_id']}/capture", json={"amount": "0.61"})
    assert (
        too_much.status_code == 409 and too_much.json()["error"]["code"] == "capture_exceeds_hold"
    )
    released = agent.post(f"/v1/holds/{second.json()['hold_id']}/release")
    assert released.status_code == 200 and released.json()["status"] == "released"
    assert agent.get("/v1/accounts/agent_user/balances").json()["balances"][0]["balance"] == "1.65"
    assert ledger_problems(db) == []


def test_a_hold_expires(api: Api, shop: dict[str, httpx.Client]) -> None:
    agent = shop["agent"]
    bought = agent.post(
        "/v1/payments",
        json={"amount_minor": 50, "currency": "usd", "purpose": "credits"},
        headers={"Idempotency-Key": "c"},
    )
    succeed(api, bought.json()["stripe_id"], "evt_credits_small")
    held = authorize(agent, hold_seconds=1)
    assert held.status_code == 200
    assert authorize(agent).status_code == 402, "the only 0.50 is held"
    hold = held.json()["hold_id"]
    deadline = time.monotonic() + 10
    while agent.get(f"/v1/holds/{hold}").json()["status"] != "expired":
        assert time.monotonic() < deadline, "the hold never expired"
        time.sleep(0.1)
    assert agent.post(f"/v1/holds/{hold}/capture").status_code == 409, (
        "an expired hold cannot be captured"
    )
    assert authorize(agent).status_code == 200, "its credits are free again"


def test_fifty_concurrent_authorizations_against_a_cap_that_allows_ten(
    api: Api, shop: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    admin, agent = shop["admin"], shop["agent"]
    funded = admin.post(
        "/v1/transactions",
        json={"account_id": "agent_user", "reference": "fund", "amount": "100", "currency": "USD"},
    )
    assert funded.status_code == 201
    assert (
        admin.post("/v1/transactions/fund/settle", params={"account_id": "agent_user"}).status_code
        == 200
    )
    cap = admin.put(
        "/v1/accounts/agent_user/spend-caps",
        json={"period": "day", "currency": "USD", "hard_limit": "5.00"},
    )
    assert cap.status_code == 200, cap.text
    key = agent.headers["Authorization"]

    def ask(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, headers={"Authorization": key}, timeout=30) as http:
            return authorize(http)

    responses = in_parallel(50, ask)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [402] * 40
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 402} == {
        "spend_cap_exceeded"
    }
    notices = db.execute(
        "SELECT count(*) FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'"
    ).fetchone()
    assert notices == (1,), "the 80% threshold was announced once"


def test_concurrent_authorizations_never_spend_a_credit_twice(
    api: Api, shop: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    admin, agent = shop["admin"], shop["agent"]
    admin.post(
        "/v1/transactions",
        json={"account_id": "agent_user", "reference": "f", "amount": "1.00", "currency": "USD"},
    )
    admin.post("/v1/transactions/f/settle", params={"account_id": "agent_user"})
    key = agent.headers["Authorization"]

    def ask(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, headers={"Authorization": key}, timeout=30) as http:
            return http.post(
                "/v1/authorize", json={"action": "work.metered", "cost": "0.10", "currency": "USD"}
            )

    responses = in_parallel(30, ask)
    assert sorted(r.status_code for r in responses) == [200] * 10 + [402] * 20
    held = db.execute("SELECT sum(amount) FROM tollgate.holds WHERE status = 'active'").fetchone()
    assert held == (100,), "exactly the 1.00 of credits is held, not a cent more"


def test_admin_only_configuration(shop: dict[str, httpx.Client]) -> None:
    agent = shop["agent"]
    r = agent.put(f"/v1/actions/{ACTION}", json={"price": "0.01", "currency": "USD"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required"
    r = agent.put(
        "/v1/accounts/agent_user/spend-caps",
        json={"period": "day", "currency": "USD", "hard_limit": "999"},
    )
    assert r.status_code == 403


def test_usage_batch_answers_each_event(
    api: Api, shop: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    admin, agent = shop["admin"], shop["agent"]
    assert (
        admin.put(
            "/v1/metrics/tokens", json={"unit_price": "0.0001", "currency": "USD"}
        ).status_code
        == 200
    )
    admin.post(
        "/v1/transactions",
        json={"account_id": "agent_user", "reference": "f", "amount": "0.30", "currency": "USD"},
    )
    admin.post("/v1/transactions/f/settle", params={"account_id": "agent_user"})
    now = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    events = [
        {
            "id": "u1",
            "metric": "tokens",
            "quantity": 1000,
            "occurred_at": now,
            "agent_id": "agent-7",
        },
        {"id": "u2", "metric": "calls", "quantity": "1", "occurred_at": now},
        {"id": "u1", "metric": "tokens", "quantity": 1000, "occurred_at": now},
        {"id": "u3", "metric": "tokens", "quantity": "lots", "occurred_at": now},
        {"id": "u4", "metric": "tokens", "quantity": 5000, "occurred_at": now},
        {"id": "u5", "metric": "tokens", "quantity": 1500, "occurred_at": now[:19]},  # no zone
    ]
    r = agent.post("/v1/usage", json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    outcomes = [(x["id"], x["outcome"], (x["reason"] or "").split(":")[0]) for x in body["results"]]
    assert outcomes == [
        ("u1", "accepted", ""),
        ("u2", "accepted", ""),
        ("u1", "duplicate", ""),
        ("u3", "rejected", "invalid_event"),
        ("u4", "rejected", "insufficient_credits"),
        ("u5", "rejected", "invalid_event"),
    ]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 3)
    assert body["results"][0]["cost"] == "0.10"

    before = row_counts(db)
    again = agent.post("/v1/usage", json={"events": events[:2]})
    assert [x["outcome"] for x in again.json()["results"]] == ["duplicate", "duplicate"]
    assert row_counts(db) == before, "a retried batch records and charges nothing twice"
    report = agent.get("/v1/accounts/agent_user/usage", params={"metric": "tokens"}).json()
    assert [(r["metric"], r["events"], r["cost"]) for r in report["rows"]] == [
        ("tokens", 1, "0.10")
    ]
    assert ledger_problems(db) == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"events": []}, 422),
        ({"events": [{"id": str(i)} for i in range(1001)]}, 422),
        ({"events": "not a list"}, 422),
        ({}, 422),
    ],
)
def test_malformed_batches_get_422(
    shop: dict[str, httpx.Client], db: psycopg.Connection[Any], body: Any, status: int
) -> None:
    before = row_counts(db)
    r = shop["agent"].post("/v1/usage", json=body)
    assert r.status_code == status
    assert row_counts(db) == before


def test_wallet_settings_overdraft_and_low_balance(
    api: Api, shop: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    admin, agent = shop["admin"], shop["agent"]
    refused = agent.put("/v1/accounts/agent_user/wallets/usd", json={"allow_negative": True})
    assert refused.status_code == 403
    r = admin.put(
        "/v1/accounts/agent_user/wallets/usd", json={"allow_negative": True, "low_balance": "1.00"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "account_id": "agent_user",
        "currency": "USD",
        "allow_negative": True,
        "low_balance": "1.00",
        "low_balance_minor": 100,
    }
    admin.post(
        "/v1/transactions",
        json={"account_id": "agent_user", "reference": "f", "amount": "2", "currency": "USD"},
    )
    admin.post("/v1/transactions/f/settle", params={"account_id": "agent_user"})
    held = authorize(agent, cost="3.00")
    assert held.status_code == 200 and held.json()["via"] == "credits", (
        "an overdraft lets it run on credit"
    )
    assert agent.post(f"/v1/holds/{held.json()['hold_id']}/capture").status_code == 200
    assert agent.get("/v1/accounts/agent_user/balances").json()["balances"][0]["balance"] == "-1.00"
    low = db.execute("SELECT count(*) FROM tollgate.outbox WHERE topic = 'credits.low'").fetchone()
    assert low == (1,), "falling from 2.00 below 1.00 was announced"
    back = admin.put("/v1/accounts/agent_user/wallets/USD", json={"allow_negative": False})
    assert back.status_code == 409 and back.json()["error"]["code"] == "overdraft_in_use"
