"""The `tollgate` command, run as a real process, and migrations re-run."""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from api import cli
from db.migrate import migrate
from tests.conftest import Cluster

ROOT = Path(__file__).resolve().parent.parent


def tollgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=env if env is not None else os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def can_continue(db: psycopg.Connection[Any], key: str) -> Any:
    return db.execute(
        "SELECT allowed FROM api.can_continue_v1(%s, NULL, NULL)",
        (key,),
    ).fetchone()


def test_keys_create_list_revoke(db_dsn: str, db: psycopg.Connection[Any]) -> None:
    env = os.environ | {"DATABASE_URL": db_dsn}
    created = tollgate("keys", "create", "--account", "cli_user", "--label", "laptop", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("tg_") and len(key) > 40
    assert can_continue(db, key) == (False,), "the printed key authenticates"
    stored = db.execute("SELECT key_hash, key_prefix FROM tollgate.api_keys").fetchone()
    assert stored == (hashlib.sha256(key.encode()).digest(), key[:11]), "only the hash is stored"

    listed = tollgate("keys", "list", "--account", "cli_user", env=env)
    assert listed.returncode == 0 and key[:11] in listed.stdout and key not in listed.stdout
    key_id = listed.stdout.split()[0]

    assert tollgate("keys", "revoke", key_id, env=env).returncode == 0
    with pytest.raises(psycopg.Error) as refused:
        can_continue(db, key)
    assert refused.value.sqlstate == "TG001"


def test_keys_create_refuses_a_malformed_account(db_dsn: str, db: psycopg.Connection[Any]) -> None:
    before = db.execute("SELECT count(*) FROM tollgate.accounts").fetchone()
    done = tollgate(
        "keys", "create", "--account", "has space", env=os.environ | {"DATABASE_URL": db_dsn}
    )
    assert done.returncode == 2 and "account ids" in done.stderr
    assert db.execute("SELECT count(*) FROM tollgate.accounts").fetchone() == before


def test_migrate_registers_the_configured_webhook_secret(
    db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """STRIPE_WEBHOOK_SECRET reaches the database with the migrations (the service's own
    role cannot register one); running again changes nothing."""
    secret = "whsec_" + secrets.token_hex(16)
    env = os.environ | {"DATABASE_URL": db_dsn, "STRIPE_WEBHOOK_SECRET": secret}
    first = tollgate("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert f"({secret[:10]}...) registered" in first.stdout and secret not in first.stdout
    again = tollgate("migrate", env=env)
    assert again.returncode == 0 and "already registered" in again.stdout
    listed = tollgate("webhook-secret", "list", env=env)
    assert listed.stdout.count(secret[:10]) == 1 and secret not in listed.stdout

    short = tollgate("migrate", env=env | {"STRIPE_WEBHOOK_SECRET": "whsec_placeholder"})
    assert short.returncode == 2 and "24 to 1000" in short.stderr
    unset = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
    missing = tollgate("webhook-secret", "add", env=unset | {"DATABASE_URL": db_dsn})
    assert missing.returncode == 2 and "STRIPE_WEBHOOK_SECRET" in missing.stderr
    count = db.execute("SELECT count(*) FROM tollgate.stripe_webhook_secrets").fetchone()
    assert count == (1,), "refused secrets are not stored"


def test_serve_without_configuration_explains_what_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "STRIPE_API_KEY"}}
    done = tollgate("serve", env=env)
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr and "STRIPE_API_KEY" in done.stderr


def schema_fingerprint(db: psycopg.Connection[Any]) -> str:
    rows = db.execute(
        """
        SELECT 'function', p.oid::regprocedure::text, pg_get_functiondef(p.oid),
               coalesce(p.proacl::text, '')
        FROM pg_proc p WHERE p.pronamespace IN ('tollgate'::regnamespace, 'api'::regnamespace)
        UNION ALL
        SELECT 'trigger', t.tgname, pg_get_triggerdef(t.oid), ''
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'tollgate'::regnamespace AND NOT t.tgisinternal
        UNION ALL
        SELECT 'relation', c.relname, c.relkind::text, coalesce(c.relacl::text, '')
        FROM pg_class c WHERE c.relnamespace IN ('tollgate'::regnamespace, 'api'::regnamespace)
        ORDER BY 1, 2
        """
    ).fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_migrating_again_changes_nothing(db_dsn: str, db: psycopg.Connection[Any]) -> None:
    before = schema_fingerprint(db)
    assert migrate(db_dsn) == [], "every migration was already applied"
    assert schema_fingerprint(db) == before, "re-applying db/sql is idempotent"
    done = tollgate("migrate", env=os.environ | {"DATABASE_URL": db_dsn})
    assert done.returncode == 0 and "nothing new" in done.stdout


def test_audit_rows_from_before_the_chain_are_sealed(cluster: Cluster) -> None:
    """A database at migration 0011 has an audit trail without seals; 0012 seals it, in
    (account, id) order, and the chain verifies."""
    from yoyo import get_backend, read_migrations

    from db.migrate import MIGRATIONS_DIR, yoyo_uri

    name = f"tollgate_upgrade_{secrets.token_hex(4)}"
    with cluster.admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = cluster.dsn(name)
    try:
        backend = get_backend(yoyo_uri(dsn))
        try:
            migrations = read_migrations(str(MIGRATIONS_DIR))
            with backend.lock():
                old = [m for m in backend.to_apply(migrations) if m.id < "0012"]
                backend.apply_migrations_only(old)
        finally:
            backend.connection.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for account in ("acc_a", "acc_b"):
                conn.execute("INSERT INTO tollgate.accounts (external_id) VALUES (%s)", (account,))
            conn.execute(
                "INSERT INTO tollgate.audit_log (account_id, entity, entity_id, action, actor)"
                " SELECT a.id, 'transaction', 't' || n, 'created', 'db:old'"
                " FROM tollgate.accounts a, generate_series(1, 3) n"
                " WHERE a.external_id LIKE 'acc_%' ORDER BY n, a.external_id"
            )
        assert "0012.audit-chain-and-analysts" in migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT * FROM tollgate.verify_audit_chain()").fetchall() == []
            chains = conn.execute(
                "SELECT a.external_id, array_agg(l.entity_id ORDER BY s.seq)"
                " FROM tollgate.audit_seals s JOIN tollgate.audit_log l ON l.id = s.audit_id"
                " JOIN tollgate.accounts a ON a.id = s.account_uuid GROUP BY 1 ORDER BY 1"
            ).fetchall()
            assert chains == [("acc_a", ["t1", "t2", "t3"]), ("acc_b", ["t1", "t2", "t3"])]
    finally:
        with cluster.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------
# The command itself: help, version, the data folder, psql
# ---------------------------------------------------------------------------------------------


def without_configuration() -> dict[str, str]:
    configured = ("DATABASE_URL", "TOLLGATE_", "STRIPE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(configured)}


def test_bare_commands_print_their_help() -> None:
    bare = tollgate(env=without_configuration())
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: tollgate")
    for command in ("dev", "serve", "migrate", "psql", "keys", "listen", "reconcile"):
        assert f"\n    {command} " in bare.stdout, command
    group = tollgate("keys", env=without_configuration())
    assert group.returncode == 0 and group.stdout.startswith("usage: tollgate keys")
    assert "revoke" in group.stdout and "Traceback" not in group.stderr


def test_version() -> None:
    done = tollgate("--version", env=without_configuration())
    assert done.returncode == 0
    assert done.stdout == f"tollgate {importlib.metadata.version('tollgate')}\n"


def test_every_option_and_argument_has_help() -> None:
    def walk(p: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")
            elif not action.help:
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(walk(cli.parser(), "tollgate")) == []


def test_the_data_folder_comes_from_the_variable_or_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLGATE_DATA_DIR", str(tmp_path / "named"))
    assert cli.find_data_dir(tmp_path) == tmp_path / "named"
    monkeypatch.delenv("TOLLGATE_DATA_DIR")
    project = tmp_path / "project"
    (project / ".tollgate").mkdir(parents=True)
    (project / "src" / "deep").mkdir(parents=True)
    assert cli.find_data_dir(project / "src" / "deep") == project.resolve() / ".tollgate"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert cli.find_data_dir(elsewhere) == ROOT / ".tollgate", "this checkout's"


def test_no_command_but_dev_creates_a_database(tmp_path: Path) -> None:
    folder = tmp_path / "nothing-here"
    for args, env in (
        (["--data-dir", str(folder), "keys", "list"], without_configuration()),
        (["migrate"], without_configuration() | {"TOLLGATE_DATA_DIR": str(folder)}),
        (["psql", "-c", "SELECT 1"], without_configuration() | {"TOLLGATE_DATA_DIR": str(folder)}),
    ):
        done = tollgate(*args, env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{folder}/pgdata holds no embedded database" in done.stderr
        assert "tollgate dev" in done.stderr and "Traceback" not in done.stderr
        assert not folder.exists(), args


def test_psql_opens_the_configured_database(db_dsn: str, tmp_path: Path) -> None:
    env = without_configuration() | {"DATABASE_URL": db_dsn}
    done = tollgate("psql", "-X", "-At", "-c", "SELECT current_database()", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == conninfo_to_dict(db_dsn)["dbname"]
    failing = tollgate("psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT 1/0", env=env)
    assert failing.returncode != 0 and "division by zero" in failing.stderr, "psql's status"

    no_psql = tollgate("psql", env=env | {"PATH": str(tmp_path)})
    assert no_psql.returncode == 2
    assert "no psql on PATH" in no_psql.stderr and "apt-get install postgresql-client" in (
        no_psql.stderr
    )
