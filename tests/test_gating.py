"""Agent gating over HTTP: 402 with how to pay, entitlements, credits and holds, spend caps,
usage metering. The rules are the database's; these tests watch them from the agent's side."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from db import errors
from tests.conftest import Api
from tests.helpers import in_parallel, ledger_problems, row_counts, sign, wait_applied

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
    assert r.status_code == 200 and r.json()["outcome"] == "received", r.text
    assert wait_applied(api.dsn, event_id) == {event_id: "applied"}


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
        "overdraft_limit": None,
        "overdraft_limit_minor": None,
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


def fund(admin: httpx.Client, amount: str, reference: str = "fund") -> None:
    created = admin.post(
        "/v1/transactions",
        json={
            "account_id": "agent_user",
            "reference": reference,
            "amount": amount,
            "currency": "USD",
        },
    )
    assert created.status_code == 201, created.text
    settled = admin.post(
        f"/v1/transactions/{reference}/settle", params={"account_id": "agent_user"}
    )
    assert settled.status_code == 200, settled.text


def test_usage_counts_toward_caps_exactly(
    api: Api, shop: dict[str, httpx.Client], db: psycopg.Connection[Any]
) -> None:
    admin, agent = shop["admin"], shop["agent"]
    priced = admin.put("/v1/metrics/calls", json={"unit_price": "0.004", "currency": "USD"})
    assert priced.status_code == 200, priced.text
    fund(admin, "1.00")
    cap = admin.put(
        "/v1/accounts/agent_user/spend-caps",
        json={"period": "day", "currency": "USD", "hard_limit": "0.10"},
    )
    assert cap.status_code == 200, cap.text
    now = dt.datetime.now(dt.UTC).isoformat()
    answers = []
    for n in range(50):
        event = {"id": f"call-{n}", "metric": "calls", "quantity": 1, "occurred_at": now}
        r = agent.post("/v1/usage", json={"events": [event]})
        assert r.status_code == 200, r.text
        answers.append((r.json()["results"][0]["outcome"], r.json()["results"][0]["reason"]))
    assert answers == [("accepted", None)] * 25 + [("rejected", "spend_cap_exceeded")] * 25, (
        "0.004 x 25 = 0.10: the cap counts fractions of a cent as they are charged"
    )
    assert agent.get("/v1/accounts/agent_user/balances").json()["balances"][0]["balance"] == "0.90"
    notices = db.execute(
        "SELECT count(*) FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'"
    ).fetchone()
    assert notices == (1,), "crossing 80% with usage was announced once"


def test_usage_cannot_overflow_the_shared_revenue_account(
    api: Api, shop: dict[str, httpx.Client], new_key: Any, db: psycopg.Connection[Any]
) -> None:
    admin, agent = shop["admin"], shop["agent"]
    big = api.client(new_key("big_spender"))
    overdraft = admin.put("/v1/accounts/big_spender/wallets/USD", json={"allow_negative": True})
    assert overdraft.status_code == 200, overdraft.text
    priced = admin.put("/v1/metrics/gpu.year", json={"unit_price": "9999999999", "currency": "USD"})
    assert priced.status_code == 200, priced.text
    now = dt.datetime.now(dt.UTC).isoformat()
    before = row_counts(db)
    for n in range(3):
        event = {"id": f"g{n}", "metric": "gpu.year", "quantity": 3070000, "occurred_at": now}
        r = big.post("/v1/usage", json={"events": [event]})
        assert r.status_code == 200, r.text
        answer = r.json()["results"][0]
        assert (answer["outcome"], answer["reason"]) == ("rejected", "cost_out_of_range")
    assert row_counts(db) == before, "a cost past the largest amount changes nothing"

    # Everyone else's money keeps moving through the same revenue account.
    fund(admin, "1.00")
    held = authorize(agent)
    assert held.status_code == 200, held.text
    captured = agent.post(f"/v1/holds/{held.json()['hold_id']}/capture")
    assert captured.status_code == 200, captured.text
    admin.put("/v1/metrics/calls", json={"unit_price": "0.01", "currency": "USD"})
    used = agent.post(
        "/v1/usage",
        json={"events": [{"id": "c1", "metric": "calls", "quantity": 2, "occurred_at": now}]},
    )
    assert used.json()["results"][0]["outcome"] == "accepted", used.text
    revenue = db.execute(
        "SELECT la.balance FROM tollgate.ledger_accounts la"
        " WHERE la.account_uuid = '00000000-0000-0000-0000-000000000000'"
        " AND la.name = 'revenue' AND la.currency = 'USD'"
    ).fetchone()
    assert revenue == (52,), "0.50 captured and 0.02 of usage, nothing else"
    assert ledger_problems(db) == []


def test_an_overdraft_has_a_limit(api: Api, shop: dict[str, httpx.Client]) -> None:
    admin, agent = shop["admin"], shop["agent"]
    wallet = "/v1/accounts/agent_user/wallets/USD"
    assert agent.put(wallet, json={"overdraft_limit": "2.00"}).status_code == 403
    r = admin.put(wallet, json={"overdraft_limit": "2.00"})
    assert r.status_code == 200, r.text
    assert {
        k: r.json()[k] for k in ("allow_negative", "overdraft_limit", "overdraft_limit_minor")
    } == {
        "allow_negative": True,
        "overdraft_limit": "2.00",
        "overdraft_limit_minor": 200,
    }
    fund(admin, "0.50")
    held = authorize(agent, cost="2.50")
    assert held.status_code == 200 and held.json()["via"] == "credits", held.text
    refused = authorize(agent, cost="0.50")
    assert refused.status_code == 402, "0.50 of credits and 2.00 of overdraft are all held"
    assert agent.post(f"/v1/holds/{held.json()['hold_id']}/capture").status_code == 200
    assert agent.get("/v1/accounts/agent_user/balances").json()["balances"][0]["balance"] == "-2.00"
    lower = admin.put(wallet, json={"overdraft_limit": "1.00"})
    assert lower.status_code == 409 and lower.json()["error"]["code"] == "overdraft_in_use"
    huge = admin.put(wallet, json={"overdraft_limit": "10000000000"})
    assert huge.status_code == 422 and huge.json()["error"]["code"] == "invalid_overdraft_limit"
    both = admin.put(wallet, json={"allow_negative": True, "overdraft_limit": "1.00"})
    assert both.status_code == 422, both.text


@pytest.mark.parametrize("seconds", [0, 86401, 2**31 - 1])
def test_the_database_bounds_a_hold_to_a_day(
    db: psycopg.Connection[Any], new_key: Any, seconds: int
) -> None:
    """The API's models refuse such a hold_seconds first; any other caller meets the same rule
    in PostgreSQL, answered 422."""
    key = new_key("long_holder")
    before = row_counts(db)
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        db.execute(
            "SELECT * FROM api.authorize_v1(%s, NULL, 'work.any', 0.01, 'USD', NULL, %s)",
            (key, seconds),
        )
    found = errors.translate(refused.value)
    assert isinstance(found, errors.DomainError)
    assert (found.kind, found.code) == ("invalid", "invalid_hold_seconds")
    assert row_counts(db) == before


RACE_KEY = "tg_gating_race_key_for_tests_0123"
RACE_SECRET = "whsec_gating_race_secret_0123456789"


def _paid_run(db: psycopg.Connection[Any], stripe_id: str) -> None:
    """A succeeded payment for one run of ACTION, delivered as Stripe's webhook would be."""
    claim = db.execute(
        "SELECT payment_id FROM api.begin_payment_v1(%s, %s, NULL, 50, 'USD', %s, NULL, NULL)",
        (RACE_KEY, stripe_id, ACTION),
    ).fetchone()
    assert claim is not None
    db.execute(
        "SELECT api.finish_payment_v1(%s, %s, %s, 'requires_payment_method', NULL)",
        (RACE_KEY, claim[0], stripe_id),
    )
    event = json.dumps(
        {
            "id": f"evt_{stripe_id}",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {"object": "payment_intent", "id": stripe_id, "status": "succeeded"}
            },
        }
    )
    found = db.execute(
        "SELECT outcome FROM api.ingest_stripe_webhook_v1(%s, %s)",
        (event, sign(event.encode(), RACE_SECRET)),
    ).fetchone()
    assert found is not None and found[0] == "received"
    db.execute("SELECT api.apply_stripe_events_v1(10, false)")  # as the applier does
    state = db.execute(
        "SELECT state FROM tollgate.payment_events WHERE id = %s", (f"evt_{stripe_id}",)
    )
    assert state.fetchone() == ("applied",)


def _authorize_sql(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    found = conn.execute(
        "SELECT allowed, via, code FROM api.authorize_v1(%s, NULL, %s, NULL, NULL, NULL, NULL)",
        (RACE_KEY, ACTION),
    ).fetchone()
    assert found is not None
    return tuple(found)


def test_a_paid_run_held_by_another_caller_is_waited_for_not_refused(
    db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """While another transaction is using the account's only paid run, a second caller waits:
    if the first rolls back, the run is the second's; if it commits, the second is refused.
    Never the same run twice, and no refusal while a run is left."""
    db.execute("SELECT api.create_api_key_v1('gating_race', %s, true, NULL)", (RACE_KEY,))
    db.execute("SELECT tollgate.add_stripe_webhook_secret(%s, NULL)", (RACE_SECRET,))
    db.execute(
        "SELECT * FROM api.set_action_price_v1(%s, %s, 0.50, 'USD', NULL)", (RACE_KEY, ACTION)
    )

    def waiting_caller(first: str) -> tuple[Any, ...]:
        with psycopg.connect(db_dsn) as a, psycopg.connect(db_dsn) as b:
            a.execute("SET ROLE tollgate_app")
            b.execute("SET ROLE tollgate_app")
            a.commit()
            b.commit()
            assert _authorize_sql(a) == (True, "payment", None)  # not committed yet
            result: list[tuple[Any, ...]] = []
            waiter = threading.Thread(target=lambda: result.append(_authorize_sql(b)))
            waiter.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = db.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                    (b.info.backend_pid,),
                ).fetchone()
                if row and row[0] == "Lock":
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the second caller did not wait for the first")
            if first == "rollback":
                a.rollback()
            else:
                a.commit()
            waiter.join(timeout=10)
            b.commit()
        assert result, "the second caller got an answer"
        return result[0]

    _paid_run(db, "pi_gating_race_1")
    assert waiting_caller("rollback") == (True, "payment", None), "the run was still left"
    _paid_run(db, "pi_gating_race_2")
    assert waiting_caller("commit") == (False, None, "payment_required"), "used once only"
    used = db.execute(
        "SELECT count(*) FROM tollgate.payment_entitlements WHERE uses_left = 0"
    ).fetchone()
    assert used == (2,)
