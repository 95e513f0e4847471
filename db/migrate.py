"""Apply yoyo migrations, then re-apply the stored functions in ``db/sql``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def yoyo_uri(dsn: str) -> str:
    """Turn a libpq connection string or URI into yoyo's ``postgresql+psycopg://`` form."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname", ""), safe="")
    if host.startswith("/"):  # a socket directory travels as a query parameter
        params["host"] = host
        host = ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    netloc = f"{auth}{host}{':' + port if port else ''}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg://{netloc}/{dbname}{query}"


def migrate(dsn: str) -> list[str]:
    """Bring the database at ``dsn`` up to date; return the ids of the migrations applied.

    Post-apply steps (functions, triggers, grants) run every time, even when no migration is
    new, so an edited function in ``db/sql`` reaches the database on the next run.
    """
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_uri(dsn))
    try:
        migrations = read_migrations(str(MIGRATIONS_DIR))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations_only(pending)
            backend.run_post_apply(migrations)
    finally:
        backend.connection.close()
    return [m.id for m in pending]
