"""Faults: events out of order, the Stripe API failing under a payment, hostile text. (The
process-level faults, PostgreSQL restarting and the API killed, are in test_fault_processes.py.)"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Api, Emulator, ServerThread, make_settings, register_webhook_secret
from tests.helpers import (
    ledger_problems,
    row_counts,
    sign,
    stripe_client,
    stripe_intents_with,
    wait_applied,
)
from tests.proxy import Script, faulty_proxy

STEPS = ("processing", "succeeded", "refunded")


def stripe_event(event_id: str, step: str, stripe_id: str, created: int) -> bytes:
    if step == "refunded":
        kind = "charge.refunded"
        obj: dict[str, Any] = {
            "object": "charge",
            "id": f"ch_{stripe_id[3:]}",
            "payment_intent": stripe_id,
            "refunded": True,
        }
    else:
        kind = f"payment_intent.{step}"
        obj = {"object": "payment_intent", "id": stripe_id, "status": step}
    payload = {"id": event_id, "type": kind, "created": created, "data": {"object": obj}}
    return json.dumps(payload).encode()


def deliver(api: Api, payload: bytes) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign(payload, api.webhook_secret),
    }
    return httpx.post(f"{api.url}/v1/webhooks/stripe", content=payload, headers=headers, timeout=30)


ORDERS = list(itertools.permutations(STEPS))


@pytest.mark.parametrize("same_second", [False, True], ids=["a second apart", "same second"])
@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_every_delivery_order_ends_refunded_with_credits_taken_back(
    api: Api, new_key: Any, db: psycopg.Connection[Any], order: tuple[str, ...], same_second: bool
) -> None:
    """Stripe created processing, then succeeded, then the refund; they arrive in any order.
    The payment ends refunded, the credits it bought were granted once and taken back once,
    each announcement was made once, and the ledger balances."""
    key = new_key("buyer")
    with api.client(key) as http:
        created = http.post(
            "/v1/payments",
            json={"amount_minor": 500, "currency": "usd", "purpose": "credits"},
            headers={"Idempotency-Key": "credits-1"},
        )
    assert created.status_code == 201, created.text
    stripe_id = created.json()["stripe_id"]
    base = int(time.time()) - 10
    when = {step: base if same_second else base + n for n, step in enumerate(STEPS)}
    for step in order:
        answer = deliver(api, stripe_event(f"evt_{step}", step, stripe_id, when[step]))
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "received", answer.text
        assert wait_applied(db, f"evt_{step}")[f"evt_{step}"] in {"applied", "stale"}

    status = db.execute(
        "SELECT status::text FROM tollgate.payment_intents WHERE stripe_id = %s", (stripe_id,)
    ).fetchone()
    assert status == ("refunded",)
    topics = db.execute(
        "SELECT topic, count(*) FROM tollgate.outbox WHERE topic LIKE 'payment.%' GROUP BY 1"
    ).fetchall()
    assert dict(topics) == {"payment.settled": 1, "payment.refunded": 1}
    transaction = db.execute(
        "SELECT t.status::text FROM tollgate.transactions t"
        " JOIN tollgate.payment_intents p ON p.id = t.payment_intent_id WHERE p.stripe_id = %s",
        (stripe_id,),
    ).fetchone()
    assert transaction == ("reversed",), "the credits were granted, then taken back"
    with api.client(key) as http:
        balances = http.get("/v1/accounts/buyer/balances").json()["balances"]
    assert [b["balance_minor"] for b in balances] == [0]
    assert ledger_problems(db) == []
    unsettled = db.execute(
        "SELECT count(*) FROM tollgate.payment_events WHERE state::text = 'pending'"
    ).fetchone()
    assert unsettled == (0,), "no event left waiting"


@pytest.fixture
def stripe_behind_proxy(db_dsn: str, emulator: Emulator) -> Any:
    """The API with its Stripe calls going through a faulty proxy to the emulator."""
    script = Script()
    with faulty_proxy(emulator.base, script) as stripe_url:
        settings = make_settings(db_dsn, stripe_url)
        secret = register_webhook_secret(db_dsn)
        with ServerThread(settings) as url:
            yield Api(url, settings, secret, db_dsn), script


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("500", 502, "stripe_error"), ("hangup", 503, "stripe_unavailable")],
    ids=["Stripe answers 500", "Stripe unreachable"],
)
def test_stripe_failing_under_a_payment_leaves_nothing_and_the_retry_creates_one_intent(
    stripe_behind_proxy: Any,
    new_key: Any,
    db: psycopg.Connection[Any],
    emulator: Emulator,
    fault: Any,
    status: int,
    code: str,
) -> None:
    api, script = stripe_behind_proxy
    key = new_key("agent_f")
    body = {"amount_minor": 1200, "currency": "usd", "purpose": "report.generate"}
    headers = {"Idempotency-Key": "pay-1"}
    before = row_counts(db)
    script.always = fault
    with api.client(key) as http:
        failed = [http.post("/v1/payments", json=body, headers=headers) for _ in range(3)]
    for answer in failed:
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
    if status == 503:
        assert failed[0].headers.get("Retry-After"), "a 503 says when to come back"
    assert row_counts(db) == before, "no payment, no idempotency claim, no audit row"

    script.always = None  # Stripe is back
    with api.client(key) as http:
        created = http.post("/v1/payments", json=body, headers=headers)
        replayed = http.post("/v1/payments", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert replayed.status_code == 201 and replayed.json()["id"] == created.json()["id"]
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    payment_id = created.json()["id"]
    assert len(stripe_intents_with(stripe_client(emulator.base), payment_id)) == 1
    sent_to_stripe = [path for method, path, _ in script.seen if method == "POST"]
    assert len(sent_to_stripe) == 4, "three refused attempts, one success, no call for the replay"


HOSTILE = [
    "'; DROP TABLE tollgate.payment_intents; --",
    '" OR 1=1 --',
    "$$; SELECT pg_sleep(10); $$",
    "%s %(x)s {0} \\x27",
    "Robert'); DELETE FROM tollgate.audit_log WHERE ('1'='1",
    "\u2019; \u02bc OR \uff07 --",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_sql_in_text_fields_is_stored_verbatim_or_refused(
    api: Api, new_key: Any, db: psycopg.Connection[Any], text: str
) -> None:
    """Free text comes back exactly as sent; constrained names are refused with 422 and write
    nothing. Either way nothing is executed: the tables are all still there and no row moved
    that should not have."""
    key, ops = new_key("agent_s"), new_key("ops", admin=True)
    now = "2026-11-20T12:00:00Z"
    with api.client(key) as http, api.client(ops) as admin:
        created = http.post(
            "/v1/payments",
            json={"amount_minor": 100, "currency": "usd", "description": text, "purpose": "x"},
            headers={"Idempotency-Key": "k-1"},
        )
        assert created.status_code == 201, created.text
        read = http.get(f"/v1/payments/{created.json()['id']}").json()
        assert read["description"] == text

        usage = http.post(
            "/v1/usage",
            json={"events": [{"id": text, "metric": "tokens", "quantity": 1, "occurred_at": now}]},
        ).json()
        stored = db.execute("SELECT id FROM tollgate.usage_events").fetchall()
        outcome = usage["results"][0]
        if outcome["outcome"] == "accepted":
            assert outcome["id"] == text and stored == [(text,)]
        else:
            assert outcome["outcome"] == "rejected" and outcome["reason"] and stored == []

        line = {"reference": text, "amount": "1.00", "currency": "USD", "date": "2026-11-20"}
        imported = admin.post("/v1/reconciliation/lines", json={"source": "bank", "lines": [line]})
        assert imported.status_code == 201, imported.text
        kept = db.execute("SELECT reference FROM tollgate.reconciliation_lines").fetchall()
        assert kept == [(text,)]

        before = row_counts(db)
        refused = [
            http.post("/v1/authorize", json={"action": text}),
            http.post("/v1/transactions", json={"reference": text, "amount": 1, "currency": "USD"}),
            http.get(f"/v1/accounts/{text}/balances"),
            admin.put(f"/v1/actions/{text}", json={"price": "1", "currency": "USD"}),
            http.post(
                "/v1/usage",
                json={"events": [{"id": "e", "metric": text, "quantity": 1, "occurred_at": now}]},
            ),
            http.post(
                "/v1/payments",
                json={"amount_minor": 100, "currency": text},
                headers={"Idempotency-Key": "other"},
            ),
        ]
        for answer in refused[:4] + refused[5:]:
            assert 400 <= answer.status_code < 500, answer.text
        counts = row_counts(db)
        # The usage batch answers 200 with the event rejected; it writes nothing either.
        assert counts == before
        assert refused[4].json()["results"][0]["outcome"] == "rejected"
    assert db.execute("SELECT count(*) FROM tollgate.payment_intents").fetchone() == (1,)


def test_a_captured_delivery_replayed_changes_nothing_more(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """The same signed bytes again: answered duplicate; the signature on other bytes, or
    the bytes with a signature past the 300 s tolerance: refused."""
    key = new_key("replayed")
    with api.client(key) as http:
        created = http.post(
            "/v1/payments",
            json={"amount": "9.00", "currency": "usd", "purpose": "credits"},
            headers={"Idempotency-Key": "r-1"},
        )
    stripe_id = created.json()["stripe_id"]
    payload = stripe_event("evt_replayed", "succeeded", stripe_id, int(time.time()))
    signature = sign(payload, api.webhook_secret)
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
    url = f"{api.url}/v1/webhooks/stripe"
    outcomes = [
        httpx.post(url, content=payload, headers=headers).json()["outcome"] for _ in range(3)
    ]
    assert outcomes == ["received", "duplicate", "duplicate"]
    assert wait_applied(db, "evt_replayed") == {"evt_replayed": "applied"}
    before = row_counts(db)
    other = stripe_event("evt_forged", "refunded", stripe_id, int(time.time()))
    forged = httpx.post(url, content=other, headers=headers)
    old = sign(payload, api.webhook_secret, int(time.time()) - 301)
    late = httpx.post(url, content=payload, headers=headers | {"Stripe-Signature": old})
    assert (forged.status_code, late.status_code) == (400, 400)
    assert row_counts(db) == before
    settled = db.execute("SELECT count(*) FROM tollgate.outbox WHERE topic = 'payment.settled'")
    assert settled.fetchone() == (1,)


def test_a_key_cannot_read_or_act_for_another_account(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """Everything of account B answers 404 to A's key, as if it did not exist, and A's
    attempts write nothing."""
    key_a, key_b, ops = new_key("acct_a"), new_key("acct_b"), new_key("ops", admin=True)
    with api.client(ops) as admin:
        admin.put("/v1/accounts/acct_b/wallets/USD", json={"allow_negative": True})
        admin.post(
            "/v1/transactions",
            json={"account_id": "acct_b", "reference": "b-1", "amount": "5.00", "currency": "USD"},
        )
        admin.post("/v1/transactions/b-1/settle?account_id=acct_b")
    with api.client(key_b) as b:
        paid = b.post(
            "/v1/payments",
            json={"amount_minor": 700, "currency": "usd"},
            headers={"Idempotency-Key": "b-pay"},
        ).json()
        hold = b.post("/v1/authorize", json={"action": "x.run", "cost": "1", "currency": "USD"})
        assert hold.status_code == 200, hold.text
        hold_id = hold.json()["hold_id"]
    before = row_counts(db)
    with api.client(key_a) as a:
        answers = {
            "payment by id": a.get(f"/v1/payments/{paid['id']}"),
            "payment by pi": a.get(f"/v1/payments/{paid['stripe_id']}"),
            "balances": a.get("/v1/accounts/acct_b/balances"),
            "usage report": a.get("/v1/accounts/acct_b/usage"),
            "can continue": a.get("/v1/accounts/acct_b/can-continue"),
            "transaction": a.get("/v1/transactions/b-1?account_id=acct_b"),
            "transactions": a.get("/v1/transactions?account_id=acct_b"),
            "hold": a.get(f"/v1/holds/{hold_id}"),
            "capture": a.post(f"/v1/holds/{hold_id}/capture"),
            "release": a.post(f"/v1/holds/{hold_id}/release"),
            "authorize for b": a.post(
                "/v1/authorize",
                json={"account_id": "acct_b", "action": "x.run", "cost": "1", "currency": "USD"},
            ),
            "transfer from b": a.post(
                "/v1/transfers",
                json={
                    "from_account_id": "acct_b",
                    "to_account_id": "acct_a",
                    "amount": "1",
                    "currency": "USD",
                },
                headers={"Idempotency-Key": "steal"},
            ),
            "pay for b": a.post(
                "/v1/payments",
                json={"amount_minor": 100, "currency": "usd", "account_id": "acct_b"},
                headers={"Idempotency-Key": "for-b"},
            ),
        }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == dict.fromkeys(answers, 404), {
        n: r.text for n, r in answers.items() if r.status_code != 404
    }
    assert row_counts(db) == before
