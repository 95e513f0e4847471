"""A PgBouncer in transaction pooling mode in front of a PostgreSQL server, for the tests and
the benchmarks (docs/OPERATIONS.md, "Behind PgBouncer", has the settings for production).

``pgbouncer`` is found on PATH (or in /usr/sbin); when missing and running as root on Debian
or Ubuntu it is installed with ``apt-get install pgbouncer`` (1.18 on bookworm), as db/pgtap.py
fetches pgTAP. Every database of the server is reachable through it (a ``*`` entry); clients
are trusted (it listens on 127.0.0.1 only) but must be named in its auth file, with the
password it logs in to the server with (empty for a server that trusts local connections).
PgBouncer refuses to run as root: as root it runs as the owner of the server's socket folder
(the embedded server's user), else as ``nobody``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEBIAN_PACKAGE = "pgbouncer"
ADMIN_DATABASE = "pgbouncer"


class PgBouncerUnavailable(RuntimeError):
    pass


def binary() -> str:
    """The pgbouncer program, installed with apt-get when missing (as root)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise PgBouncerUnavailable(
            "pgbouncer is not installed and cannot be installed here (needs root and "
            "apt-get). Install it (Debian/Ubuntu: apt-get install pgbouncer; macOS: brew "
            "install pgbouncer) so that `pgbouncer` is on PATH."
        )
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq"]
    done = subprocess.run([*install, DEBIAN_PACKAGE], capture_output=True, text=True)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        done = subprocess.run([*install, DEBIAN_PACKAGE], capture_output=True, text=True)
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if done.returncode != 0 or not found:
        raise PgBouncerUnavailable(
            f"pgbouncer is not installed and `apt-get install {DEBIAN_PACKAGE}` failed:\n"
            f"{done.stderr.strip()}\nInstall it yourself (apt-get update && apt-get install "
            "pgbouncer) so that `pgbouncer` is on PATH."
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class PgBouncer:
    """A running pgbouncer (``pool_mode = transaction``, session state reset after every
    transaction) on 127.0.0.1, a free port; ``stop()`` ends it. ``users`` maps every login that
    may connect to its server password ("" when the server trusts it); ``admin`` (one of them)
    may use the ``pgbouncer`` admin console."""

    def __init__(
        self,
        server_dsn: str,
        *,
        users: Mapping[str, str],
        admin: str,
        pool_size: int = 4,
    ) -> None:
        program = binary()
        server = conninfo_to_dict(server_dsn)
        host = str(server.get("host") or "127.0.0.1")
        port = str(server.get("port") or "5432")
        # Its files (config, auth file, log, pid) in a folder of its own in the system's
        # temporary folder, which the unprivileged user it runs as can reach; removed by stop().
        self.folder = folder = Path(tempfile.mkdtemp(prefix="tollgate-pgbouncer-"))
        self.host = "127.0.0.1"
        self.port = free_port()
        self.admin = admin
        (folder / "userlist.txt").write_text(
            "".join(f"{_quote(u)} {_quote(p)}\n" for u, p in users.items())
        )
        (folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            # Every database of the server, as whichever user the client names.
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {folder / 'userlist.txt'}\n"
            f"admin_users = {admin}\n"
            f"stats_users = {admin}\n"
            "pool_mode = transaction\n"
            # A session SET by any client (default_transaction_read_only, a role, ...) is reset
            # when its transaction ends, before another client gets the server connection.
            # Not DISCARD ALL: it also drops every cached plan, so each stored function would
            # be planned again in every transaction (authorize through PgBouncer: -45%).
            "server_reset_query = RESET ALL; RESET ROLE\n"
            "server_reset_query_always = 1\n"
            # Fewer server connections than a pool has clients: they are shared.
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 2000\n"
            # Tests drop their databases: a failed login is retried soon.
            "server_login_retry = 1\n"
            f"logfile = {folder / 'pgbouncer.log'}\n"
            f"pidfile = {folder / 'pgbouncer.pid'}\n"
        )
        command = [program, "-q", str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            user = _unprivileged_user(host)
            entry = pwd.getpwnam(user)
            for path in (folder, *folder.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            command[1:1] = ["-u", user]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise PgBouncerUnavailable(f"pgbouncer exited at start: {err}{self.log()}")
            try:
                with self.console():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise PgBouncerUnavailable(
                        f"pgbouncer did not answer in {timeout} s: {self.log()}"
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def dsn(self, dbname: str, user: str, password: str | None = None) -> str:
        """A libpq connection string to ``dbname`` of the server, through this pgbouncer."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": dbname,
            "user": user,
        }
        if password:
            params["password"] = password
        return make_conninfo("", **params)

    def console(self) -> psycopg.Connection[Any]:
        """The admin console (SHOW POOLS, SHOW STATS, ...): simple queries only."""
        return psycopg.connect(
            self.dsn(ADMIN_DATABASE, self.admin), autocommit=True, connect_timeout=5
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` of the admin console (POOLS, STATS, CONFIG, ...) as dicts."""
        if not what.replace("_", "").isalpha():
            raise ValueError(f"not a SHOW command: {what!r}")
        with self.console() as conn:
            cur = conn.execute(f"SHOW {what}".encode())
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _unprivileged_user(server_host: str) -> str:
    """Who pgbouncer runs as when started by root: the owner of the server's socket folder
    (it must reach the socket), else nobody."""
    if server_host.startswith("/"):
        owner = Path(server_host).stat().st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    return "nobody"
