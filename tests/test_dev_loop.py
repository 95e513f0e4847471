"""`tollgate dev` as a developer meets it, in real processes: a restart is the same Tollgate
(port, webhook secret, keys, dev.env), a second start refuses and changes nothing, and
`tollgate dev pay` pays through the emulator with a test card. The database is the test's
(DATABASE_URL); the Stripe emulator is the one `tollgate dev` starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from api import stripe_emulator
from api.devstack import DEV_ACTION, DEV_SECRET_LABEL
from tests.test_cli import tollgate

ROOT = Path(__file__).resolve().parent.parent


def dev_env(db_dsn: str) -> dict[str, str]:
    configured = ("DATABASE_URL", "TOLLGATE_", "STRIPE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(configured)} | {
        "DATABASE_URL": db_dsn
    }


@contextmanager
def running_dev(data_dir: Path, *args: str, env: dict[str, str]) -> Iterator[None]:
    """`tollgate dev` with these options (which must include --port), until the block ends."""
    port = int(args[args.index("--port") + 1])
    log = (data_dir.parent / f"{data_dir.name}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--data-dir", str(data_dir), "dev", *args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        stripe_emulator.wait_for_port(port, timeout=60, process=process)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def pay(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return tollgate("--data-dir", str(data_dir), "dev", "pay", *args, env=env)


def dev_rows(db: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """The keys and webhook secrets in the database."""
    found = db.execute(
        "SELECT (SELECT count(*) FROM tollgate.api_keys),"
        " (SELECT count(*) FROM tollgate.api_keys WHERE revoked_at IS NULL),"
        " (SELECT array_agg(label ORDER BY label) FROM tollgate.stripe_webhook_secrets)"
    ).fetchone()
    assert found is not None
    return tuple(found)


def hold_a_connection(port: int) -> socket.socket:
    """A keep-alive connection to the emulator, answered once and left open."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(
        b"GET /v1/customers HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sk_test_x\r\n\r\n"
    )
    assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    return conn


def test_a_restart_keeps_the_emulator_port_the_webhook_secret_and_the_keys(
    db_dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    data = tmp_path / "dev"
    env = dev_env(db_dsn)
    port, stripe_port = stripe_emulator.free_port(), stripe_emulator.free_port()
    with running_dev(data, "--port", str(port), "--stripe-port", str(stripe_port), env=env):
        env_file = (data / "dev.env").read_text()
        state = json.loads((data / "dev-state.json").read_text())
        for private in ("dev.env", "dev-state.json"):
            assert stat.S_IMODE((data / private).stat().st_mode) == 0o600, "it holds keys"
        assert f"export STRIPE_API_BASE=http://127.0.0.1:{stripe_port}\n" in env_file
        for name in ("TOLLGATE_URL", "TOLLGATE_API_KEY", "TOLLGATE_ADMIN_KEY", "STRIPE_API_KEY"):
            assert f"export {name}=" in env_file
        assert state["stripe_port"] == stripe_port
        assert f"export TOLLGATE_ADMIN_KEY={state['admin_key']['key']}\n" in env_file
        rows = dev_rows(db)
        # A key, an admin key, the card account's (revoked at once: nobody holds a key of it),
        # the emulator's secret.
        assert rows == (3, 2, [DEV_SECRET_LABEL])
        assert "export TOLLGATE_CARD_ACCOUNT=x402_card\n" in env_file

        first = pay(data, env, "credits", "5.00")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "credits of dev_account: 5.00 USD" in first.stdout
        lingering = hold_a_connection(stripe_port)

    # The emulator is gone; its side of the connection closes after ours: the port is left in
    # TIME_WAIT, where a bind without SO_REUSEADDR fails (a start then moved to another port).
    while lingering.recv(4096):
        pass
    lingering.close()
    with socket.socket(socket.AF_INET6) as plain:
        try:
            plain.bind(("::", stripe_port))
            in_time_wait = False
        except OSError:
            in_time_wait = True
    assert in_time_wait, "the emulator's port is in TIME_WAIT"

    with running_dev(data, "--port", str(port), env=env):  # no --stripe-port: the kept one
        assert (data / "dev.env").read_text() == env_file, "the same URLs, keys and ports"
        assert json.loads((data / "dev-state.json").read_text()) == state
        assert dev_rows(db) == rows, "no new key, no new webhook secret"
        again = pay(data, env, "credits", "5.00")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "credits of dev_account: 10.00 USD" in again.stdout, "the webhook still verifies"


def test_a_second_start_refuses_at_once_and_changes_nothing(
    db_dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    data, other = tmp_path / "dev", tmp_path / "other"
    env = dev_env(db_dsn)
    port, stripe_port = stripe_emulator.free_port(), stripe_emulator.free_port()
    with running_dev(data, "--port", str(port), "--stripe-port", str(stripe_port), env=env):
        files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in data.iterdir()}
        rows = dev_rows(db)

        second = tollgate(
            "--data-dir", str(data), "dev", "--port", str(stripe_emulator.free_port()), env=env
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert "tollgate dev is already running on" in second.stderr
        assert "nothing was changed" in second.stderr

        free = str(stripe_emulator.free_port())
        for args, taken in (
            (["--port", str(port), "--stripe-port", free], f"127.0.0.1:{port} for the API"),
            (["--port", free, "--stripe-port", str(stripe_port)], "for the Stripe emulator"),
        ):
            refused = tollgate("--data-dir", str(other), "dev", *args, env=env)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert taken in refused.stderr and "Nothing was changed" in refused.stderr
            assert "Traceback" not in refused.stderr
            assert not other.exists(), "not even the data folder is made"

        after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in data.iterdir()}
        assert after == files, "dev.env, the kept state and the lock are as they were"
        assert dev_rows(db) == rows

        # The running one still works, and pays with the emulator's test cards.
        declined = pay(data, env, DEV_ACTION, "0.50", "--card", "4000 0000 0000 0341")
        assert declined.returncode == 1, declined.stdout + declined.stderr
        assert "the emulator declined card 4000000000000341" in declined.stdout
        assert "webhook applied: payment requires_payment_method" in declined.stdout
        secure = pay(data, env, "credits", "1.00", "--card", "4000002500003155")
        assert secure.returncode == 0, secure.stdout + secure.stderr
        assert "3-D Secure" in secure.stdout and "credits of dev_account: 1.00 USD" in secure.stdout
        canonical = pay(data, env, "credits", "2.00", "--card", "pm_card_visa")
        assert canonical.returncode == 0, canonical.stdout + canonical.stderr
        statuses = db.execute(
            "SELECT purpose, amount::bigint, status::text FROM tollgate.payment_intents"
            " ORDER BY created_at"
        ).fetchall()
        assert statuses == [
            (DEV_ACTION, 50, "requires_payment_method"),
            ("credits", 100, "succeeded"),
            ("credits", 200, "succeeded"),
        ]

    gone = pay(data, env, "credits", "1.00")
    assert gone.returncode == 2 and "is `tollgate dev` running?" in gone.stderr, gone.stderr
    missing = pay(other, env, "credits", "1.00")
    assert missing.returncode == 2 and "start `tollgate dev`" in missing.stderr, missing.stderr
