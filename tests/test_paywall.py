"""The seller paywall (tollgate.paywall) as a seller runs it: `tollgate dev` in one process,
examples/paid_api.py in another, callers over HTTP; the ledger is checked afterwards: one
charge per paid call, none for a failed call, none for a refused one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
from x402.schemas import PaymentPayload, PaymentRequired

from api import devstack, stripe_emulator
from tests.helpers import stripe_client
from tests.test_example_agent import dev_stack
from tollgate.paywall import Paywall

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["dev_stack", "paid_api"]


@pytest.fixture
def paid_api(dev_stack: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """examples/paid_api.py against the dev stack; yields its URL and the dev.env variables."""
    port = stripe_emulator.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    log = (dev_stack / "paid_api.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "examples/paid_api.py",
            "--env-file",
            str(dev_stack / "dev.env"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        stripe_emulator.wait_for_port(port, timeout=30, process=process)
        yield f"http://127.0.0.1:{port}", devstack.read_env_file(dev_stack / "dev.env")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def pay_credits(data_dir: Path, amount: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "api.cli",
            "--data-dir",
            str(data_dir),
            "dev",
            "pay",
            "credits",
            amount,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_paywall_charges_paid_calls_once_and_failed_calls_never(
    paid_api: tuple[str, dict[str, str]], dev_stack: Path, db: psycopg.Connection[Any]
) -> None:
    url, env = paid_api
    agent = {"Authorization": f"Bearer {env['TOLLGATE_API_KEY']}"}
    with httpx.Client(base_url=url, timeout=60) as http:
        # Unpaid: the 402 in every format, naming this API's URL as the x402 resource.
        for headers in ({}, agent):
            refused = http.post("/report", headers=headers)
            assert refused.status_code == 402, refused.text
            assert refused.json()["error"]["code"] == "payment_required"
            required = decode_payment_required_header(refused.headers["PAYMENT-REQUIRED"])
            assert isinstance(required, PaymentRequired)
            assert required.resource is not None and required.resource.url == f"{url}/report"
            assert {r.scheme for r in required.accepts} == {"auth-capture", "tollgate-credits"}
        # Routes the paywall does not price pass through untouched.
        assert http.get("/openapi.json").status_code == 200

        pay_credits(dev_stack, "2.00")
        made = http.post("/report", params={"topic": "q3"}, headers=agent)
        assert made.status_code == 200, made.text
        assert made.json()["topic"] == "q3"
        failed = http.post("/report", params={"fail": "true"}, headers=agent)
        assert failed.status_code == 500
        again = http.post("/report", headers=agent)
        assert again.status_code == 200, again.text

    holds = db.execute(
        "SELECT h.status::text, count(*) FROM tollgate.holds h GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert holds == [("captured", 2), ("released", 1)]
    captured = db.execute(
        "SELECT sum(captured_amount) FROM tollgate.holds WHERE status = 'captured'"
    ).fetchone()
    assert captured == (100,), "two runs at 0.50 USD"
    assert db.execute("SELECT * FROM tollgate.ledger_discrepancies()").fetchall() == []


def card_signature(required: PaymentRequired, token: str, paid_id: str) -> dict[str, str]:
    """PAYMENT-SIGNATURE paying the card entry of ``required`` with ``token``."""
    accepted = next(r for r in required.accepts if r.scheme == "auth-capture")
    payload = PaymentPayload(
        payload={"token": token, "paymentId": paid_id},
        accepted=accepted,
        resource=required.resource,
    )
    return {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}


def test_no_keyless_call_is_served_from_credits_a_card_bought(
    paid_api: tuple[str, dict[str, str]], db: psycopg.Connection[Any]
) -> None:
    """Credits on the card account (as a keyless payer's card payment leaves them once its
    webhook is applied, before that payer's hold) serve no other call: not a keyless call
    without payment (authorized on the paywall key's own account), not a card payload whose
    card is declined or unknown. No hold, and the credits are all still there."""
    url, env = paid_api
    admin = {"Authorization": f"Bearer {env['TOLLGATE_ADMIN_KEY']}"}
    card_account = env["TOLLGATE_CARD_ACCOUNT"]
    with httpx.Client(base_url=env["TOLLGATE_URL"], headers=admin, timeout=30) as tollgate:
        funded = tollgate.post(
            "/v1/transactions",
            json={
                "account_id": card_account,
                "reference": "landed-card-payment",
                "amount": "5.00",
                "currency": "USD",
            },
        )
        assert funded.status_code == 201, funded.text
        settled = tollgate.post(
            "/v1/transactions/landed-card-payment/settle", params={"account_id": card_account}
        )
        assert settled.status_code == 200, settled.text
    declined = stripe_client(env["STRIPE_API_BASE"]).v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4000000000000341", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    with httpx.Client(base_url=url, timeout=60) as http:
        unpaid = http.post("/report")
        assert unpaid.status_code == 402, unpaid.text
        required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
        assert isinstance(required, PaymentRequired)
        refused = http.post(
            "/report", headers=card_signature(required, str(declined.id), "pay_declined_card_01")
        )
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["code"] == "card_declined"
        bogus = http.post(
            "/report", headers=card_signature(required, "pm_no_such_card_at_all", "pay_bogus_01")
        )
        assert 400 <= bogus.status_code < 500, bogus.text
        assert http.post("/report").status_code == 402, "still nothing for the unpaid"

    assert db.execute("SELECT count(*) FROM tollgate.holds").fetchone() == (0,)
    balances = db.execute(
        "SELECT a.external_id, b.balance FROM tollgate.accounts a,"
        " LATERAL api.balances_v1(%s, a.external_id) b"
        " WHERE b.name = 'main' ORDER BY 1",
        (env["TOLLGATE_ADMIN_KEY"],),
    ).fetchall()
    assert balances == [(card_account, "5.00")]


def test_without_a_card_account_keyless_card_payments_are_refused(
    dev_stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paywall with no card account offers keyless callers no card in its 402 (real Tollgate
    behind it), and refuses a keyless card payment before asking Tollgate anything (nothing is
    charged)."""
    monkeypatch.delenv("TOLLGATE_CARD_ACCOUNT", raising=False)
    env = devstack.read_env_file(dev_stack / "dev.env")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the route must not run")

    paywall = Paywall(
        app,
        routes={"POST /report": "report.generate"},
        tollgate_url=env["TOLLGATE_URL"],
        api_key=env["TOLLGATE_ADMIN_KEY"],
    )
    assert paywall.card_account is None
    required = PaymentRequired.model_validate(
        {
            "x402Version": 2,
            "resource": {"url": "http://shop/report"},
            "accepts": [
                {
                    "scheme": "auth-capture",
                    "network": "card:any",
                    "asset": "USD",
                    "amount": "50",
                    "payTo": "tollgate",
                    "maxTimeoutSeconds": 30,
                }
            ],
        }
    )

    async def call(headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=paywall)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            return await http.post("/report", headers=headers)

    unpaid = asyncio.run(call({}))
    offered = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    assert isinstance(offered, PaymentRequired)
    assert [r.scheme for r in offered.accepts] == ["tollgate-credits"], "no card offered"
    refused = asyncio.run(call(card_signature(required, "pm_card_visa", "pay_no_card_acct_1")))
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == "card_account_not_configured"
    assert "TOLLGATE_CARD_ACCOUNT" in error["message"]
