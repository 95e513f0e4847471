"""An x402 agent, with the x402 SDK's own HTTP client and Tollgate's scheme clients registered,
buys a route of examples/paid_api.py, all three as real processes (`tollgate dev`, the seller's
API, the agent); the ledger is checked afterwards: one charge per paid call, none for the failed
call, none for the resent payment (refused: one payment is one run)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.http.utils import encode_payment_signature_header
from x402.schemas import PaymentPayload

from tests.test_example_agent import dev_stack
from tests.test_paywall import ROOT, paid_api, pay_credits
from tollgate.x402 import CreditsScheme

__all__ = ["dev_stack", "paid_api"]


def run_agent(url: str, data_dir: Path, *flags: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    done = subprocess.run(
        [sys.executable, "examples/x402_agent.py", "--env-file", str(data_dir / "dev.env"), *flags],
        cwd=ROOT,
        env=env | {"PAID_API_URL": url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    logs = "".join((data_dir / name).read_text()[-3000:] for name in ("dev.log", "paid_api.log"))
    assert done.returncode == 0, done.stdout + done.stderr + logs
    return done.stdout


def steps(stdout: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in stdout.splitlines()]


def holds(db: psycopg.Connection[Any]) -> list[tuple[str, str, int]]:
    return db.execute(
        "SELECT a.external_id, h.status::text, count(*)::int FROM tollgate.holds h"
        " JOIN tollgate.accounts a ON a.id = h.account_uuid GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def test_an_x402_agent_pays_by_card_through_the_sdk(
    paid_api: tuple[str, dict[str, str]], dev_stack: Path, db: psycopg.Connection[Any]
) -> None:
    url, env = paid_api
    said = steps(run_agent(url, dev_stack))
    assert said[0].startswith("buying a report")
    assert said[1].startswith("paid 50 on card:any (pi_") and "got report" in said[1]
    assert said[2] == "resent the same payment after the report: 409 payment_already_used"
    assert said[3] == "a call that fails at the seller: 500, its hold released"

    # Two card payments (the paid call, the failed call), each bought 0.50 of credits on the
    # seller's card account (TOLLGATE_CARD_ACCOUNT, x402_card: never ops, the paywall key's own
    # account that unpaid callers are authorized on); one hold captured, one released, and
    # the failed call's payment refunded: its credits are taken back once Stripe reports it.
    assert holds(db) == [("x402_card", "captured", 1), ("x402_card", "released", 1)]
    deadline = time.monotonic() + 30
    while True:
        payments = db.execute(
            "SELECT p.status::text, p.purpose, p.amount, p.amount_refunded,"
            " (SELECT b.balance FROM api.balances_v1(%s, 'x402_card') b WHERE b.name = 'main')"
            " FROM tollgate.payment_intents p ORDER BY p.created_at",
            (env["TOLLGATE_ADMIN_KEY"],),
        ).fetchall()
        if payments[-1] != ("refunded", "credits", 50, 50, "0.00") and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
            continue
        break
    assert payments == [
        ("succeeded", "credits", 50, 0, "0.00"),
        ("refunded", "credits", 50, 50, "0.00"),
    ], "the failed call kept nothing"
    ops = db.execute(
        "SELECT coalesce(sum(b.balance_minor), 0)::int FROM api.balances_v1(%s, 'ops') b",
        (env["TOLLGATE_ADMIN_KEY"],),
    ).fetchone()
    assert ops == (0,), "the paywall key's own account never holds credits"
    settled = db.execute(
        "SELECT count(*) FILTER (WHERE response IS NOT NULL), count(*)"
        " FROM tollgate.x402_settlements"
    ).fetchone()
    assert settled == (2, 2)
    assert db.execute("SELECT * FROM tollgate.ledger_discrepancies()").fetchall() == []


def test_an_x402_agent_pays_from_credits_and_identifiers_are_bound(
    paid_api: tuple[str, dict[str, str]], dev_stack: Path, db: psycopg.Connection[Any]
) -> None:
    url, env = paid_api
    pay_credits(dev_stack, "2.00")
    said = steps(run_agent(url, dev_stack, "--credits"))
    assert said[1].startswith("paid 50 on tollgate:credits (")
    assert said[2] == "resent the same payment after the report: 409 payment_already_used"
    assert holds(db) == [("dev_account", "captured", 1), ("dev_account", "released", 1)]

    # The same payment identifier with another payload (another resource) is refused: 409.
    payer = x402Client()
    payer.register(
        "tollgate:*",
        CreditsScheme(api_key=env["TOLLGATE_API_KEY"], payment_id=lambda: "pay_one_identifier_01"),
    )
    sent: list[PaymentPayload] = []
    payer.on_after_payment_creation(lambda ctx: sent.append(ctx.payment_payload))

    async def buy(topic: str) -> httpx.Response:
        async with x402HttpxClient(payer, timeout=60) as http:
            return await http.post(f"{url}/report", params={"topic": topic})

    first = asyncio.run(buy("q1"))
    assert first.status_code == 200, first.text
    # The paid signature sent again and again gets no second report: its run was delivered.
    signature = encode_payment_signature_header(sent[0])
    for _ in range(4):
        again = httpx.post(
            f"{url}/report", params={"topic": "q1"}, headers={"PAYMENT-SIGNATURE": signature}
        )
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "payment_already_used"
        assert "report" not in again.json() and "PAYMENT-RESPONSE" not in again.headers
    other = asyncio.run(buy("q2"))
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert holds(db) == [("dev_account", "captured", 2), ("dev_account", "released", 1)]
    assert db.execute("SELECT * FROM tollgate.ledger_discrepancies()").fetchall() == []
