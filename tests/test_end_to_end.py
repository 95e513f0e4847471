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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.stripe_emulator import free_port, wait_for_port
from tests.conftest import Emulator
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
                "amount": 4200,
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
        assert note["payment_id"] == payment["id"] and note["topic"] == "payment.settled"

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
