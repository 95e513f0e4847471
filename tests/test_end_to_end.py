"""The whole path with real processes: `tollgate serve`, localstripe, PostgreSQL, LISTEN.

Create a payment over HTTP -> confirm it at the Stripe emulator -> the emulator's signed
webhook reaches the API -> the payment is succeeded in PostgreSQL -> a LISTEN connection
is notified -> can-continue says yes.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.stripe_emulator import free_port, wait_for_port
from tests.conftest import Api, Emulator
from tests.helpers import stripe_client

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def served(db_dsn: str, emulator: Emulator, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`tollgate serve` in its own process, configured only through the environment."""
    port = free_port()
    secret = "whsec_" + secrets.token_hex(16)
    env = os.environ | {
        "ENVIRONMENT": "test",
        "DATABASE_URL": db_dsn,
        "STRIPE_API_KEY": "sk_test_tollgate",
        "STRIPE_WEBHOOK_SECRET": secret,
        "STRIPE_API_BASE": emulator.base,
    }
    # As docker-compose.yml does: `tollgate migrate` registers the webhook secret in the
    # database (which verifies signatures), then `tollgate serve` runs without it.
    migrated = subprocess.run(
        [sys.executable, "-m", "api.cli", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0 and "registered" in migrated.stdout, migrated.stderr
    env.pop("STRIPE_WEBHOOK_SECRET")
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30, process=process)
        url = f"http://127.0.0.1:{port}"
        emulator.point_webhooks_at(f"{url}/v1/webhooks/stripe", secret)
        yield url, secret
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def test_pay_confirm_webhook_settle_notify_continue(
    served: tuple[str, str], db_dsn: str, new_key: Any, emulator: Emulator
) -> None:
    url, _ = served
    key = new_key("agent_user")
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )

    with (
        psycopg.connect(db_dsn, autocommit=True) as listener,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
    ):
        listener.execute("LISTEN payment_settled")
        assert http.get("/v1/accounts/agent_user/can-continue").status_code == 402

        created = http.post(
            "/v1/payments",
            json={
                "amount": "42.00",
                "currency": "usd",
                "purpose": "report.generate",
                "payment_method": card.id,
            },
            headers={"Idempotency-Key": "agent-run-1"},
        )
        assert created.status_code == 201, created.text
        payment = created.json()
        assert payment["status"] == "requires_confirmation"

        confirmed = stripe.v1.payment_intents.confirm(payment["stripe_id"])
        assert confirmed.status == "succeeded"

        # The emulator delivers the signed webhook about a second later; wait for the NOTIFY
        # that the settlement trigger sends when that delivery commits.
        notes = list(listener.notifies(timeout=30, stop_after=1))
        assert notes, "no payment_settled notification within 30 s"
        note = json.loads(notes[0].payload)
        assert note["topic"] == "payment.settled"
        assert announced(listener, note) == payment["id"], "the row it names is the payment's"

        assert http.get(f"/v1/payments/{payment['id']}").json()["status"] == "succeeded"
        allowed = http.get(
            "/v1/accounts/agent_user/can-continue", params={"purpose": "report.generate"}
        )
        assert allowed.status_code == 200
        assert allowed.json()["allowed"] is True and allowed.json()["status"] == "succeeded"

    with psycopg.connect(db_dsn) as db:
        received = db.execute(
            "SELECT type, state::text FROM tollgate.payment_events WHERE stripe_object_id = %s",
            (payment["stripe_id"],),
        ).fetchall()
        outbox = db.execute(
            "SELECT topic FROM tollgate.outbox WHERE payload ->> 'payment_id' = %s",
            (payment["id"],),
        ).fetchall()
    assert received == [("payment_intent.succeeded", "applied")], (
        "the real webhook was stored and applied"
    )
    assert outbox == [("payment.settled",)]


def announced(conn: psycopg.Connection[Any], note: dict[str, Any]) -> str | None:
    """The payment a notification announces, read from the outbox row it names (its payload
    carries ids only, and anyone may send a NOTIFY)."""
    row = conn.execute(
        "SELECT payload ->> 'payment_id' FROM tollgate.outbox WHERE id = %s AND event_id = %s",
        (note["outbox_id"], note["event_id"]),
    ).fetchone()
    return row[0] if row else None


def wait_for(
    listener: psycopg.Connection[Any], channel_payload_check: Any, timeout: float = 30
) -> dict[str, Any]:
    """The first notification the check accepts, within the timeout."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        # Collected before they are checked: the check may read from the same connection.
        for note in list(listener.notifies(timeout=left, stop_after=1)):
            payload: dict[str, Any] = json.loads(note.payload)
            if channel_payload_check(payload):
                return payload
    raise AssertionError("no matching notification in time")


def test_an_agent_refused_pays_at_stripe_and_is_then_allowed(
    api: Api, db_dsn: str, new_key: Any, emulator: Emulator
) -> None:
    """402 -> the payment request it names -> confirmed at the emulator -> its real webhook ->
    entitled -> allowed."""
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    with api.client(new_key("ops", admin=True)) as admin:
        admin.put("/v1/actions/report.generate", json={"price": "0.50", "currency": "USD"})
    with (
        psycopg.connect(db_dsn, autocommit=True) as listener,
        api.client(new_key("agent_user")) as agent,
    ):
        listener.execute("LISTEN payment_settled")
        refused = agent.post("/v1/authorize", json={"action": "report.generate"})
        assert refused.status_code == 402
        how = next(o for o in refused.json()["accepts"] if o["scheme"] == "stripe.payment")[
            "request"
        ]

        paid = agent.request(
            how["method"],
            how["url"],
            json=how["body"] | {"payment_method": card.id},
            headers=how["headers"],
        )
        assert paid.status_code == 201, paid.text
        assert stripe.v1.payment_intents.confirm(paid.json()["stripe_id"]).status == "succeeded"
        wait_for(listener, lambda n: announced(listener, n) == paid.json()["id"])

        allowed = agent.post("/v1/authorize", json={"action": "report.generate"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["via"] == "payment"


def test_a_stripe_subscription_entitles_every_action(
    api: Api, new_key: Any, emulator: Emulator, db_dsn: str
) -> None:
    """customer.subscription.created from the emulator, signed and delivered, keeps the
    subscription current in PostgreSQL; an active one entitles any action."""
    stripe = stripe_client(emulator.base)
    with api.client(new_key("ops", admin=True)) as admin:
        admin.put("/v1/actions/copilot.answer", json={"price": "0.05", "currency": "USD"})
    with api.client(new_key("team_42")) as agent:
        assert agent.post("/v1/authorize", json={"action": "copilot.answer"}).status_code == 402
        card = stripe.v1.payment_methods.create(
            {
                "type": "card",
                "card": {
                    "number": "4242424242424242",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "cvc": "123",
                },
            }
        )
        customer = stripe.v1.customers.create(
            {"payment_method": card.id, "invoice_settings": {"default_payment_method": card.id}}
        )
        plan = stripe.v1.plans.create(
            {"amount": 2000, "currency": "usd", "interval": "month", "product": {"name": "Pro"}}
        )
        with psycopg.connect(db_dsn, autocommit=True) as db:
            sub = stripe.v1.subscriptions.create(
                {
                    "customer": customer.id,
                    "items": [{"plan": plan.id}],
                    "metadata": {"tollgate_account": "team_42"},
                }
            )
            assert sub.status == "active"
            deadline = time.monotonic() + 30
            while (
                db.execute(
                    "SELECT status::text FROM tollgate.subscriptions WHERE stripe_id = %s",
                    (sub.id,),
                ).fetchone()
                is None
            ):
                assert time.monotonic() < deadline, "the subscription webhook never arrived"
                time.sleep(0.1)
        allowed = agent.post("/v1/authorize", json={"action": "copilot.answer"})
        assert allowed.status_code == 200 and allowed.json()["via"] == "subscription"
