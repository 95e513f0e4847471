"""The seller paywall (tollgate.paywall) as a seller runs it: `tollgate dev` in one process,
examples/paid_api.py in another, callers over HTTP; the ledger is checked afterwards: one
charge per paid call, none for a failed call, none for a refused one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequired

from api import devstack, stripe_emulator
from tests.test_example_agent import dev_stack

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
