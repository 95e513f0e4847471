"""Test fixtures: a real PostgreSQL, a fresh database per test, a real Stripe emulator.

PostgreSQL is the server in DATABASE_URL, else an embedded one started for the session. The
migrations are applied once to a template database (with pgTAP installed); every test gets
its own database cloned from it, so no test sees another's rows. Tests marked
``restarts_postgres`` restart their server: they always get an embedded one (the session's, or
with DATABASE_URL one started for them alone), so they run in every mode. Nothing is skipped:
a skip fails the test.

With TOLLGATE_TEST_PGBOUNCER=1 (``make test`` runs the HTTP tests a second time so), every API
the tests start (``make_settings``) reaches its database through a PgBouncer in transaction
pooling mode that the session starts (db/pgbouncer.py, installed with apt-get when missing),
as a login that is only a member of tollgate_app, with no DATABASE_ROLE, and LISTENs on a
direct connection (DATABASE_LISTEN_URL): as docs/OPERATIONS.md, "Behind PgBouncer", says to
deploy it. The ``pgbouncer`` fixture is there in both modes (tests/test_pgbouncer.py).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from api import stripe_emulator
from api.config import Settings
from api.main import create_app
from db import keys, pgtap, queries
from db.embedded import EmbeddedServer
from db.migrate import migrate
from db.pgbouncer import PgBouncer

ROOT = Path(__file__).resolve().parent.parent
PGTAP_CACHE = ROOT / ".tollgate" / "cache" / "pgtap"
# Set to 1: the APIs the tests start go through PgBouncer (see the module's docstring).
PGBOUNCER_SWITCH = "TOLLGATE_TEST_PGBOUNCER"
# The API's login through PgBouncer: a member of tollgate_app and of nothing else, as
# docker-compose.yml's tollgate_api (roles are cluster-wide: made once, kept).
POOLED_LOGIN = "tollgate_test_pooled_api"


@dataclass
class Cluster:
    admin_dsn: str
    embedded: bool
    # The embedded server, which tests may restart; None for a DATABASE_URL server.
    server: EmbeddedServer | None = None

    def dsn(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        return make_conninfo(**params)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_dsn, autocommit=True)


@dataclass
class Template:
    name: str
    pgtap_error: str | None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield Cluster(url, embedded=False)
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("postgres") / "data", temporary=True)
    try:
        yield Cluster(server.dsn(), embedded=True, server=server)
    finally:
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "restarts_postgres: the test restarts its PostgreSQL (an embedded server)"
    )
    if importlib.util.find_spec("tollgate") is None:  # the client is a distribution of its own
        raise pytest.UsageError(
            "the Python client is not installed: pip install -e ./client (make test does)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped test is a failed one: every test runs in every mode."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, and nothing may be: {report.longrepr}"


@pytest.fixture(scope="session")
def embedded_cluster(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """An embedded server tests may restart: the session's own, or with DATABASE_URL, one
    started when the first such test needs it."""
    if cluster.server is not None:
        yield cluster
        return
    server = EmbeddedServer(
        tmp_path_factory.mktemp("postgres-restartable") / "data", temporary=True
    )
    try:
        yield Cluster(server.dsn(), embedded=True, server=server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template(cluster: Cluster) -> Iterator[Template]:
    yield from _template(cluster)


@pytest.fixture(scope="session")
def embedded_template(
    cluster: Cluster, embedded_cluster: Cluster, request: pytest.FixtureRequest
) -> Iterator[Template]:
    if embedded_cluster is cluster:
        yield request.getfixturevalue("template")
        return
    yield from _template(embedded_cluster)


def _template(cluster: Cluster) -> Iterator[Template]:
    name = f"tollgate_template_{os.getpid()}"
    with cluster.admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate(cluster.dsn(name))
    pgtap_error = None
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        try:
            override = os.environ.get("PGTAP_DIR")
            pgtap.install(
                conn,
                PGTAP_CACHE,
                embedded_server=cluster.embedded,
                override=Path(override) if override else None,
            )
        except pgtap.PgTapUnavailable as exc:
            pgtap_error = str(exc)
    try:
        yield Template(name, pgtap_error)
    finally:
        with cluster.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@dataclass
class Pooler:
    """The session's PgBouncer (transaction pooling) in front of the session's cluster."""

    bouncer: PgBouncer
    cluster: Cluster
    # The API's login (POOLED_LOGIN) and its password ("" for the embedded server).
    login: str
    password: str

    def serves(self, dsn: str) -> bool:
        """Whether ``dsn`` names a database of the cluster behind this PgBouncer."""
        ours, theirs = conninfo_to_dict(self.cluster.admin_dsn), conninfo_to_dict(dsn)
        return all(ours.get(k) == theirs.get(k) for k in ("host", "port", "user"))

    def dsn(self, direct: str, *, user: str | None = None, password: str | None = None) -> str:
        """The same database through PgBouncer, as the API's login (or ``user``)."""
        dbname = str(conninfo_to_dict(direct)["dbname"])
        if user is None:
            return self.bouncer.dsn(dbname, self.login, self.password)
        return self.bouncer.dsn(dbname, user, password)


def _server_login(cluster: Cluster) -> tuple[str, str]:
    """The admin DSN's user and password (for PgBouncer's auth file)."""
    with cluster.admin() as conn:
        user = conn.info.user
        password = conn.info.password or os.environ.get("PGPASSWORD", "")
    return user, password


@pytest.fixture(scope="session")
def pgbouncer(cluster: Cluster, template: Template) -> Iterator[Pooler]:
    """A PgBouncer in transaction mode in front of the session's cluster, with a login for the
    API. After ``template``: tollgate_app exists once the template is migrated."""
    password = "" if cluster.embedded else secrets.token_urlsafe(18)
    with cluster.admin() as conn:
        found = conn.execute("SELECT FROM pg_roles WHERE rolname = %s", [POOLED_LOGIN]).fetchone()
        verb = sql.SQL("ALTER" if found else "CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                verb, sql.Identifier(POOLED_LOGIN), sql.Literal(password or None)
            )
        )
        conn.execute(sql.SQL("GRANT tollgate_app TO {}").format(sql.Identifier(POOLED_LOGIN)))
    admin, admin_password = _server_login(cluster)
    bouncer = PgBouncer(
        cluster.admin_dsn,
        users={admin: admin_password, POOLED_LOGIN: password},
        admin=admin,
    )
    try:
        yield Pooler(bouncer, cluster, POOLED_LOGIN, password)
    finally:
        bouncer.stop()


# The PgBouncer make_settings sends the APIs through (TOLLGATE_TEST_PGBOUNCER=1), else None;
# and how many APIs it sent.
_through: Pooler | None = None
_routed = 0


@pytest.fixture(scope="session", autouse=True)
def _through_pgbouncer(request: pytest.FixtureRequest) -> Iterator[None]:
    global _through
    if os.environ.get(PGBOUNCER_SWITCH) != "1":
        yield
        return
    _through = request.getfixturevalue("pgbouncer")
    try:
        yield
    finally:
        pooler, _through = _through, None
    # The pass proves something only if its APIs' transactions went through PgBouncer.
    carried = sum(
        int(row["total_xact_count"])
        for row in pooler.bouncer.show("STATS")
        if str(row["database"]).startswith("tollgate_test_")
    )
    assert _routed > 0, f"{PGBOUNCER_SWITCH}=1, and no API of these tests went through PgBouncer"
    assert carried > 0, f"{_routed} APIs were sent through PgBouncer, and it carried nothing"


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> tuple[Cluster, Template]:
    """The server and template of this test: an embedded one for ``restarts_postgres`` tests."""
    if request.node.get_closest_marker("restarts_postgres"):
        return request.getfixturevalue("embedded_cluster"), request.getfixturevalue(
            "embedded_template"
        )
    return request.getfixturevalue("cluster"), request.getfixturevalue("template")


@pytest.fixture
def restartable(pg: tuple[Cluster, Template]) -> EmbeddedServer:
    """The embedded server holding this test's database (mark the test ``restarts_postgres``)."""
    server = pg[0].server
    assert server is not None, "mark the test restarts_postgres"
    return server


@pytest.fixture
def db_dsn(pg: tuple[Cluster, Template]) -> Iterator[str]:
    """A fresh database with every migration applied, dropped after the test."""
    cluster, template = pg
    name = f"tollgate_test_{secrets.token_hex(6)}"
    with cluster.admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template.name)
            )
        )
        # A database's ACL is not copied from its template: as db/sql/90-grants.sql does.
        conn.execute(
            sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
        )
    try:
        yield cluster.dsn(name)
    finally:
        with cluster.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def sql_dsn(db_dsn: str) -> str:
    """The test's database as SQL clients reach it: through the session's PgBouncer in the
    PgBouncer pass (TOLLGATE_TEST_PGBOUNCER=1, as the server's own login, so a pgTAP file may
    SET ROLE inside its transaction), else directly."""
    if _through is None or not _through.serves(db_dsn):
        return db_dsn
    user, password = _server_login(_through.cluster)
    return _through.dsn(db_dsn, user=user, password=password)


@pytest.fixture
def db(db_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the test's database, for arranging and inspecting rows."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        yield conn


@dataclass
class Emulator:
    base: str

    def point_webhooks_at(self, url: str, secret: str) -> None:
        stripe_emulator.register_webhook(self.base, name="tollgate", url=url, secret=secret)


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One localstripe process for the session (its objects have unique ids)."""
    port = stripe_emulator.free_port()
    log = (tmp_path_factory.mktemp("localstripe") / "localstripe.log").open("ab")
    process = stripe_emulator.start(port, log=log.fileno())
    try:
        yield Emulator(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@dataclass
class Api:
    url: str
    settings: Settings
    webhook_secret: str
    # The test database, directly and as its superuser (settings.database_url may be the
    # API's login through PgBouncer, which reads no table).
    dsn: str

    def client(
        self, key: str | None = None, *, headers: dict[str, str] | None = None
    ) -> httpx.Client:
        sent = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=sent | (headers or {}), timeout=30)


def make_settings(dsn: str, emulator_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": dsn,
        "stripe_api_key": "sk_test_tollgate",
        "stripe_api_base": emulator_base,
        "db_pool_max_size": 20,
    }
    if _through is not None and _through.serves(dsn):
        # As deployed behind PgBouncer: its own login, no SET ROLE, LISTEN direct.
        global _routed
        _routed += 1
        values |= {
            "database_url": _through.dsn(dsn),
            "database_role": None,
            "database_listen_url": dsn,
        }
    values.update(overrides)
    return Settings(**values)


def register_webhook_secret(dsn: str, label: str = "tests") -> str:
    """A new Stripe webhook signing secret, registered in the database at ``dsn`` (as
    `tollgate webhook-secret add` does; PostgreSQL verifies webhook signatures with it)."""
    secret = "whsec_" + secrets.token_hex(16)
    with psycopg.connect(dsn, autocommit=True) as conn:
        queries.operator_add_webhook_secret(conn, secret=secret, label=label)
    return secret


class ServerThread:
    """The real app, served by uvicorn on a free port in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.port = stripe_emulator.free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        stripe_emulator.wait_for_port(self.port)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def api(db_dsn: str, emulator: Emulator) -> Iterator[Api]:
    settings = make_settings(db_dsn, emulator.base)
    secret = register_webhook_secret(db_dsn)
    with ServerThread(settings) as url:
        emulator.point_webhooks_at(f"{url}/v1/webhooks/stripe", secret)
        yield Api(url, settings, secret, db_dsn)


@pytest.fixture
def new_key(db: psycopg.Connection[Any]) -> Any:
    """Create an API key: new_key("user_1") or new_key("ops", admin=True)."""

    def create(account: str, *, admin: bool = False) -> str:
        return keys.create(db, account=account, is_admin=admin).key

    return create
