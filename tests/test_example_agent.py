"""examples/paid_action.py, run as a user would: `tollgate dev` in one process (the Stripe
emulator it starts, webhooks included), the example agent in another."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api import stripe_emulator

ROOT = Path(__file__).resolve().parent.parent
STRIPE_VARIABLES = ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE")


def check_steps(stdout: str, account: str) -> None:
    """The example's printed steps, from a first 402 to the captured hold."""
    steps = [line.split("] ", 1)[1] for line in stdout.splitlines()]
    expected = [
        f"agent for account {account}",
        "402 payment_required",
        "  can pay: stripe.payment",
        "  can pay: credits",
        "created payment",
        "confirmed at Stripe",
        "payment succeeded; credits: 0.50 USD",
        "authorized via credits: hold",
        "ran report.generate",
        "usage recorded: 1 accepted, 0 rejected",
        "hold captured: 0.50 USD charged",
        "done; balances: 0.00 USD",
    ]
    assert len(steps) == len(expected), stdout
    for line, start in zip(steps, expected, strict=True):
        assert line.startswith(start), (line, start)


@pytest.fixture
def dev_stack(db_dsn: str, tmp_path: Path) -> Iterator[Path]:
    """`tollgate dev` on a free port over the test database; yields its data folder."""
    port, stripe_port = stripe_emulator.free_port(), stripe_emulator.free_port()
    env = {k: v for k, v in os.environ.items() if k not in STRIPE_VARIABLES and k != "TOLLGATE_URL"}
    log = (tmp_path / "dev.log").open("wb")
    ports = ["--port", str(port), "--stripe-port", str(stripe_port)]
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--data-dir", str(tmp_path), "dev", *ports],
        cwd=ROOT,
        env=env | {"DATABASE_URL": db_dsn},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        stripe_emulator.wait_for_port(port, timeout=60, process=process)
        yield tmp_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_the_example_agent_pays_runs_and_captures(
    dev_stack: Path, db: psycopg.Connection[Any]
) -> None:
    env_file = dev_stack / "dev.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, "it holds an API key"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "STRIPE_"))}
    done = subprocess.run(
        [sys.executable, "examples/paid_action.py", "--env-file", str(env_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (dev_stack / "dev.log").read_text()[-3000:]
    assert done.returncode == 0, done.stdout + done.stderr + log
    check_steps(done.stdout, "dev_account")

    # What the steps claim is what the database holds.
    facts = db.execute(
        """
        SELECT (SELECT string_agg(status::text, ',') FROM tollgate.payment_intents),
               (SELECT string_agg(status::text, ',') FROM tollgate.holds),
               (SELECT count(*) FROM tollgate.usage_events)
        """
    ).fetchone()
    assert facts == ("succeeded", "captured", 1)
    assert db.execute("SELECT * FROM tollgate.ledger_discrepancies()").fetchall() == []
