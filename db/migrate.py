"""Bring a database to today's schema: a fresh install from db/sql, or pending migrations."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

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
            backend.apply_migrations_only(pending)
            backend.run_post_apply(migrations)
    finally:
        backend.connection.close()
    return [m.id for m in pending]


def _has_schema(backend: object) -> bool:
    cursor = backend.execute("SELECT to_regnamespace('tollgate') IS NOT NULL")  # type: ignore[attr-defined]
    return bool(cursor.fetchone()[0])
