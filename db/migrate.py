"""Bring a database to today's schema: a fresh install from db/sql, or pending migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

from db.pooling import PooledConnectionRefused, is_pooled
from db.schema import fresh_install_sql, replaceable_sql


def _migrations_dir() -> Path:
    """The yoyo migrations: ``db/migrations/`` where Tollgate is installed from its wheel
    (pyproject.toml installs the repository's top-level ``migrations/`` there), else
    ``migrations/`` beside ``db/`` (a checkout, or an editable install)."""
    here = Path(__file__).resolve().parent
    installed, checkout = here / "migrations", here.parent / "migrations"
    return installed if installed.is_dir() else checkout


MIGRATIONS_DIR = _migrations_dir()


def yoyo_uri(dsn: str) -> str:
    """Turn a libpq connection string or URI into yoyo's ``postgresql+psycopg://`` form."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname", ""), safe="")
    # A socket directory travels as a query parameter, and so do several hosts (a multi-host
    # DSN, as for Patroni: libpq tries each) with their ports.
    if host.startswith("/") or "," in host or "," in port:
        params["host"] = host
        if "," in port:
            params["port"] = port
            port = ""
        host = ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    netloc = f"{auth}{host}{':' + port if port else ''}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg://{netloc}/{dbname}{query}"


class SchemaWithoutHistory(RuntimeError):
    """Tollgate's schema exists but yoyo records no migration: refuse to guess its version."""


def migrate(dsn: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Bring the database at ``dsn`` up to date; return the ids of the migrations applied (on a
    fresh database: all of them, recorded as applied by the fresh install).

    A database with no Tollgate schema gets today's schema straight from db/sql (every Tables
    section, then every Functions and Triggers section) and every migration is recorded as
    applied, all in one transaction: migrations never run on a fresh database. Any other
    database gets its pending migrations, then the Functions and Triggers sections again
    (migrations/post-apply.py), even when no migration is new, so an edited function reaches
    the database on the next run. tests/test_migrations.py proves both paths end equal.
    """
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_uri(dsn))
    try:
        # Through a pooler (PgBouncer, db/pooling.py) every transaction may reach another
        # server connection: prepare nothing (yoyo runs the same statements many times; there
        # is nothing to gain on a direct connection either).
        backend.connection.prepare_threshold = None
        pooled = is_pooled(backend.connection)
        migrations = read_migrations(str(migrations_dir))
        if not migrations:  # a fresh install would record no history: refuse, say where
            raise FileNotFoundError(f"no migrations in {migrations_dir}")
        with backend.lock():
            pending = backend.to_apply(migrations)
            if len(pending) == len(migrations) and not _has_schema(backend):
                with backend.transaction():
                    cursor = backend.connection.cursor()
                    for sql in fresh_install_sql() + replaceable_sql():
                        cursor.execute(sql)  # no parameters: '%' in the SQL stays as written
                    cursor.execute("RESET ROLE")  # the files SET LOCAL ROLE tollgate_owner
                    backend.mark_migrations(migrations)
                return [m.id for m in migrations]
            if len(pending) == len(migrations):
                raise SchemaWithoutHistory(
                    "schema tollgate exists but no migration is recorded as applied"
                    " (table _yoyo_migration): restore that table, or migrate an empty database"
                )
            if pooled:  # a fresh install (above) is one transaction: it may be pooled
                _refuse_transactionless(pending)
            backend.apply_migrations_only(pending)
            backend.run_post_apply(migrations)
    finally:
        backend.connection.close()
    return [m.id for m in pending]


def _refuse_transactionless(pending: list[Any]) -> None:
    """Migrations marked ``-- transactional: false`` (CREATE INDEX CONCURRENTLY, enum values)
    run statement by statement, each its own transaction, and SET ROLE for all of them: through
    a transaction pooler the role would be missing from the next statement and left on a
    server connection another client gets. Refused before anything runs."""
    for migration in pending:
        migration.load()
    outside = [m.id for m in pending if not m.use_transactions]
    if outside:
        raise PooledConnectionRefused(
            f"DATABASE_URL goes through a pooler (PgBouncer) and the pending migration"
            f"{'s' if len(outside) > 1 else ''} {', '.join(outside)} cannot run in a "
            "transaction (it sets its role for the session): run `tollgate migrate` with "
            "DATABASE_URL set to the database server itself (docs/OPERATIONS.md, Behind "
            "PgBouncer). Nothing was applied."
        )


def _has_schema(backend: object) -> bool:
    cursor = backend.execute("SELECT to_regnamespace('tollgate') IS NOT NULL")  # type: ignore[attr-defined]
    return bool(cursor.fetchone()[0])
