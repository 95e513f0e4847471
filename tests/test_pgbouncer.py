"""Tollgate behind PgBouncer in transaction pooling mode (docs/OPERATIONS.md, "Behind
PgBouncer"): the API and the CLI keep no session state on a pooled connection, LISTEN stays on
a direct one, and what cannot work through the pooler refuses with a clear message.

The session's PgBouncer (tests/conftest.py, db/pgbouncer.py) has 4 server connections per
database and user; the API below keeps 8 connections open, so its clients share server
connections, and it runs each query far more than 5 times per connection (psycopg's
threshold for preparing one). A SET ROLE or a prepared statement on the API's connections
would fail these tests; so would a PgBouncer that was not in the path.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from db import queries
from db.migrate import MIGRATIONS_DIR, migrate
from db.pooling import PooledConnectionRefused, is_pooled
from tests.conftest import (
    Api,
    Emulator,
    Pooler,
    ServerThread,
    make_settings,
    register_webhook_secret,
)
from tests.helpers import stripe_client, wait_applied
from tollgate import Client

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 8  # the API's pool, twice PgBouncer's server connections per pool (4)


def dbname(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


def pool_row(pooler: Pooler, database: str, user: str) -> dict[str, Any]:
    rows = [
        r for r in pooler.bouncer.show("POOLS") if (r["database"], r["user"]) == (database, user)
    ]
    assert len(rows) == 1, f"PgBouncer has no pool for {user}@{database}: {rows}"
    return rows[0]


def transactions(pooler: Pooler, database: str) -> int:
    """Transactions PgBouncer carried to ``database`` (SHOW STATS, every user)."""
    rows = [r for r in pooler.bouncer.show("STATS") if r["database"] == database]
    return int(rows[0]["total_xact_count"]) if rows else 0


@contextmanager
def pooled_api(pooler: Pooler, db_dsn: str, emulator: Emulator, **overrides: Any) -> Iterator[Api]:
    """The app as deployed behind PgBouncer: its login (a member of tollgate_app) through the
    pooler, no DATABASE_ROLE, LISTEN on a direct connection."""
    values: dict[str, Any] = {
        "database_url": pooler.dsn(db_dsn),
        "database_role": None,
        "database_listen_url": db_dsn,
        "db_pool_min_size": CONNECTIONS,
        "db_pool_max_size": CONNECTIONS,
    }
    settings = make_settings(db_dsn, emulator.base, **(values | overrides))
    secret = register_webhook_secret(db_dsn)
    with ServerThread(settings) as url:
        emulator.point_webhooks_at(f"{url}/v1/webhooks/stripe", secret)
        yield Api(url, settings, secret, db_dsn)


def test_this_pgbouncer_pools_transactions_and_resets_what_a_session_sets(
    pgbouncer: Pooler, db_dsn: str
) -> None:
    """What the rules below guard against: through a transaction pooler a client's connection
    is not one server process, and clients share server connections. What one client sets for
    its session (here default_transaction_read_only, which would make every write fail) is
    reset when its transaction ends (server_reset_query_always): neither its own next
    transaction nor another client's sees it. The pooled connection is told apart from a
    direct one."""
    config = {r["key"]: r["value"] for r in pgbouncer.bouncer.show("CONFIG")}
    assert config["pool_mode"] == "transaction"
    assert (config["server_reset_query"], config["server_reset_query_always"]) == (
        "RESET ALL; RESET ROLE",
        "1",
    )
    through = pgbouncer.dsn(db_dsn)
    with (
        psycopg.connect(through, autocommit=True) as one,
        psycopg.connect(through, autocommit=True) as other,
        psycopg.connect(db_dsn, autocommit=True) as direct,
    ):
        assert is_pooled(one) and is_pooled(other) and not is_pooled(direct)
        for setting in ("SET default_transaction_read_only = on", "SET ROLE tollgate_app"):
            one.execute(setting)
            for client in (other, one):
                seen = client.execute(
                    "SELECT current_setting('default_transaction_read_only'), current_user"
                ).fetchone()
                assert seen == ("off", pgbouncer.login), setting
        with one.transaction():  # within a transaction, a SET holds
            one.execute("SET default_transaction_read_only = on")
            shown = one.execute("SHOW default_transaction_read_only").fetchone()
            assert shown == ("on",)
        assert other.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
        assert pool_row(pgbouncer, dbname(db_dsn), pgbouncer.login)["pool_mode"] == "transaction"


def test_a_read_only_session_set_by_another_client_does_not_reach_the_api(
    pgbouncer: Pooler, db_dsn: str, emulator: Emulator, db: psycopg.Connection[Any]
) -> None:
    """Another client logged in as the API's login sets its sessions read-only on every
    server connection of the pool, one after the other: the API's writes still succeed."""
    from db import keys

    key = keys.create(db, account="pooled_writer").key
    with (
        pooled_api(pgbouncer, db_dsn, emulator, apply_stripe_events=False) as api,
        httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        for n in range(20):
            with psycopg.connect(pgbouncer.dsn(db_dsn), autocommit=True) as intruder:
                intruder.execute("SET default_transaction_read_only = on")
            made = http.post(
                "/v1/transactions",
                json={"reference": f"pooled-{n}", "amount_minor": 5, "currency": "USD"},
            )
            assert made.status_code == 201, made.text


def test_a_payment_authorizations_and_transfers_through_pgbouncer(
    pgbouncer: Pooler, db_dsn: str, emulator: Emulator, db: psycopg.Connection[Any]
) -> None:
    """A card payment settled by the emulator's webhook (stored through the pooler, applied
    by the applier woken on its direct LISTEN), then many authorizations, captures and
    transfers from parallel clients: every answer right, every balance right, and PgBouncer
    carried the API's transactions on fewer server connections than the API has."""
    from db import keys

    ops_key = keys.create(db, account="ops", is_admin=True).key
    agent_key = keys.create(db, account="agent_pooled").key
    keys.create(db, account="friend")
    before = transactions(pgbouncer, dbname(db_dsn))
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    with (
        pooled_api(pgbouncer, db_dsn, emulator) as api,
        Client(api.url, ops_key, retries=0) as ops,
        Client(api.url, agent_key, retries=0) as agent,
    ):
        ops.set_action_price("report.generate", "0.50", "USD")
        bought = agent.create_payment(
            "10.00", "usd", purpose="credits", payment_method=card.id, idempotency_key="buy"
        )
        stripe.v1.payment_intents.confirm(bought.stripe_id)
        deadline = time.monotonic() + 20
        while agent.get_payment(bought.id).status != "succeeded":
            assert time.monotonic() < deadline, "the emulator's webhook was never applied"
            time.sleep(0.1)
        assert wait_applied(db) == {}

        runs, transfers = 120, 20

        def run(i: int) -> str:
            with Client(api.url, agent_key, retries=0) as mine:
                allowed = mine.authorize("report.generate")
                assert allowed.via == "credits" and allowed.hold_id is not None
                captured = mine.capture_hold(allowed.hold_id, amount="0.01")
                assert (captured.status, captured.captured_amount) == ("captured", "0.01")
                if i < transfers:
                    sent = mine.transfer("friend", "0.05", "USD", idempotency_key=f"t{i}")
                    assert sent.amount == "0.05"
                return str(mine.me().account_id)

        with ThreadPoolExecutor(max_workers=CONNECTIONS) as threads:
            assert set(threads.map(run, range(runs))) == {"agent_pooled"}

        # 10.00 - 120 x 0.01 - 20 x 0.05 (8 holds of 0.50 at once fit in what is left)
        assert agent.balances().balances[0].balance == "7.80"
        assert ops.balances("friend").balances[0].balance == "1.00"
        pool = pool_row(pgbouncer, dbname(db_dsn), pgbouncer.login)
        servers = sum(int(pool[k]) for k in pool if k.startswith("sv_") and "cancel" not in k)
        assert int(pool["cl_active"]) + int(pool["cl_waiting"]) >= CONNECTIONS
        assert servers <= 4, f"more server connections than the pool's size: {pool}"
    carried = transactions(pgbouncer, dbname(db_dsn)) - before
    assert carried >= runs * 3 + transfers, f"PgBouncer carried {carried} transactions"


def test_the_pool_refuses_a_database_role_through_pgbouncer(
    pgbouncer: Pooler, db_dsn: str, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """SET ROLE is session state: through the pooler it would stay on a server connection
    that other clients get. The API answers 503 and says what to change."""
    caplog.set_level(logging.WARNING)
    with pooled_api(
        pgbouncer,
        db_dsn,
        emulator,
        database_url=pgbouncer.dsn(db_dsn, user=pgbouncer.bouncer.admin),
        database_role="tollgate_app",
        db_pool_min_size=1,
        db_pool_timeout=0.5,
        apply_stripe_events=False,
    ) as api:
        ready = httpx.get(f"{api.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "database_unavailable"
    said = [r.getMessage() for r in caplog.records if "DATABASE_ROLE" in r.getMessage()]
    assert said and "empty value" in said[0], caplog.text


def test_the_applier_does_not_listen_through_pgbouncer_and_still_applies(
    pgbouncer: Pooler, db_dsn: str, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Without DATABASE_LISTEN_URL the wake-up connection would go through the pooler, where
    a LISTEN hears nothing: the applier says so and looks every second instead."""
    caplog.set_level(logging.ERROR, logger="tollgate.applier")
    with (
        pooled_api(pgbouncer, db_dsn, emulator, database_listen_url=None) as api,
        httpx.Client(base_url=api.url) as http,
    ):
        deadline = time.monotonic() + 10
        while not any("DATABASE_LISTEN_URL" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the applier never said why it does not LISTEN"
            time.sleep(0.05)
        from tests.helpers import event, sign

        payload = event("evt_polled", "pi_unknown_here", "succeeded")
        stored = http.post(
            "/v1/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": sign(payload, api.webhook_secret)},
        )
        assert stored.status_code == 200, stored.text
        assert wait_applied(db_dsn, "evt_polled") != {}, "applied by the applier's sweep"


def tollgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_cli_command_but_listen_works_through_pgbouncer(
    pgbouncer: Pooler,
    db_dsn: str,
    db: psycopg.Connection[Any],
    emulator: Emulator,
    tmp_path: Path,
) -> None:
    """The operator's commands with DATABASE_URL at PgBouncer (as the operator's login);
    `tollgate listen` refuses it with the reason."""
    through = pgbouncer.dsn(db_dsn, user=pgbouncer.bouncer.admin)
    env = os.environ | {
        "DATABASE_URL": through,
        "DATABASE_LISTEN_URL": db_dsn,
        "STRIPE_API_KEY": "sk_test_tollgate",
        "STRIPE_API_BASE": emulator.base,
    }

    def ok(*args: str, stdin: str | None = None) -> str:
        done = tollgate(*args, env=env)
        assert done.returncode == 0, f"tollgate {' '.join(args)}: {done.stderr}"
        return done.stdout

    assert "nothing new" in ok("migrate")
    key = ok("keys", "create", "--account", "cli_pooled").strip()
    listed = ok("keys", "list", "--account", "cli_pooled")
    assert key[:11] in listed
    ok("keys", "revoke", listed.split()[0])
    assert (
        "added"
        in tollgate(
            "webhook-secret", "add", env=env | {"STRIPE_WEBHOOK_SECRET": "whsec_" + "a" * 32}
        ).stdout
    )
    secret_id = ok("webhook-secret", "list").split()[0]
    ok("webhook-secret", "remove", secret_id)
    assert "report.generate: 0.50 USD" in ok("actions", "set", "report.generate", "0.50", "usd")
    queries.register_consumer(db, consumer="pooled", from_start=False)
    ok("outbox", "dead", "--consumer", "pooled")
    ok("outbox", "replay", "--consumer", "pooled")
    ok("outbox", "prune", "--days", "1")
    ok("outbox", "unregister", "--consumer", "pooled")
    csv = tmp_path / "bank.csv"
    csv.write_text("reference,amount,currency,date\nnothing-matches,1.00,USD,2026-11-01\n")
    ok("reconcile", "import", str(csv))
    ok("reconcile", "stripe", "--since", "2026-11-01")
    assert "postgresql://" in ok("analyst", "url")
    assert "events applied" in ok("apply-events", "--once")

    refused = tollgate("listen", "--consumer", "pooled", env=env)
    assert refused.returncode == 2
    assert "needs a direct connection" in refused.stderr, refused.stderr
    assert queries.list_api_keys(db, account="cli_pooled")[0].revoked_at is not None


TRANSACTIONLESS = """-- A concurrent index: not in a transaction.
-- transactional: false
-- depends: {depends}

SET ROLE tollgate_owner;

CREATE INDEX CONCURRENTLY IF NOT EXISTS probe_pooled_idx ON tollgate.api_keys (label);

RESET ROLE;
"""


def migrations_with(tmp: Path, extra: str) -> Path:
    from yoyo import read_migrations
    from yoyo.migrations import topological_sort

    folder = tmp / "migrations"
    folder.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        if path.suffix in (".sql", ".py"):
            (folder / path.name).symlink_to(path)
    last = list(topological_sort(read_migrations(str(MIGRATIONS_DIR))))[-1].id
    (folder / "9999.probe-pooled.sql").write_text(extra.format(depends=last))
    return folder


def test_a_migration_outside_a_transaction_is_refused_through_pgbouncer(
    pgbouncer: Pooler, db_dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Its SET ROLE would hold for the next statements only on a direct connection: through
    the pooler it is refused before anything runs, and runs directly."""
    folder = migrations_with(tmp_path, TRANSACTIONLESS)
    through = pgbouncer.dsn(db_dsn, user=pgbouncer.bouncer.admin)
    with pytest.raises(PooledConnectionRefused, match=r"9999\.probe-pooled") as refused:
        migrate(through, folder)
    assert "DATABASE_URL set to the database server itself" in str(refused.value)
    index = "SELECT to_regclass('tollgate.probe_pooled_idx')"
    assert db.execute(index).fetchone() == (None,)
    assert migrate(db_dsn, folder) == ["9999.probe-pooled"]
    assert db.execute(index).fetchone() == ("tollgate.probe_pooled_idx",)


TRANSACTIONAL = """-- An index, in a transaction.
-- depends: {depends}

SET LOCAL ROLE tollgate_owner;

CREATE INDEX probe_pooled_tx_idx ON tollgate.api_keys (label);
"""


def test_a_fresh_install_and_a_transactional_migration_work_through_pgbouncer(
    pgbouncer: Pooler, tmp_path: Path
) -> None:
    """Each is one transaction (yoyo's lock is a row of a table, not a session lock)."""
    cluster, name = pgbouncer.cluster, f"tollgate_test_fresh_{os.getpid()}"
    with cluster.admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        direct = cluster.dsn(name)
        through = pgbouncer.dsn(direct, user=pgbouncer.bouncer.admin)
        assert len(migrate(through)) > 30, "every migration recorded by the fresh install"
        folder = migrations_with(tmp_path, TRANSACTIONAL)
        assert migrate(through, folder) == ["9999.probe-pooled"]
        with psycopg.connect(direct, autocommit=True) as conn:
            owner = conn.execute(
                "SELECT tableowner FROM pg_indexes JOIN pg_tables USING (schemaname, tablename)"
                " WHERE indexname = 'probe_pooled_tx_idx'"
            ).fetchone()
        assert owner == ("tollgate_owner",)
    finally:
        with cluster.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
