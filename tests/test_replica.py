"""A hot standby in use.

- Analysts: `tollgate analyst url --replica` issues the login on the primary and prints its URL
  on the standby, where every documented view reads what the primary wrote and every write is
  refused.
- The API with DATABASE_READ_URL: GET routes read the standby, except for a caller whose own
  write the standby has not replayed yet (api/reads.py).

The primary is an embedded server of these tests' own (in every mode, DATABASE_URL or not) and
the standby a streaming replica of it (tests/replica.py), both removed after.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

import tollgate as tollgate_client
from api import reads
from api.reads import READ_AFTER_HEADER, READ_FROM_HEADER, WRITE_LSN_HEADER, Reads, parse_lsn
from db import analyst
from db.embedded import EmbeddedServer
from db.migrate import migrate
from tests.conftest import Cluster, ServerThread, make_settings
from tests.replica import Standby, start_standby
from tests.test_analysts import QUERY, some_of_everything
from tests.test_cli import tollgate

DOC = Path(__file__).resolve().parent.parent / "docs" / "ANALYSTS.md"
TEMPLATE = "tollgate_template"


@dataclass
class Replicated:
    primary: EmbeddedServer
    standby: Standby


@dataclass
class Pair:
    """One fresh Tollgate database, on the primary and (replicated) on the standby."""

    name: str
    primary_dsn: str
    standby: Standby

    def env(self, **more: str) -> dict[str, str]:
        return os.environ | {"DATABASE_URL": self.primary_dsn} | more

    def roles(self) -> list[str]:
        with psycopg.connect(self.primary_dsn, autocommit=True) as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'tollgate_analyst_%'"
                )
            ]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    """A primary with a migrated template database, and its hot standby."""
    root = tmp_path_factory.mktemp("replication")
    primary = EmbeddedServer(root / "primary", temporary=True)
    try:
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        migrate(primary.dsn(TEMPLATE))
        standby = start_standby(primary, root / "standby")
        try:
            yield Replicated(primary, standby)
        finally:
            standby.stop()
    finally:
        primary.stop()


@pytest.fixture
def pair(replicated: Replicated) -> Iterator[Pair]:
    """A fresh database cloned from the template on the primary, replayed on the standby."""
    name = f"tollgate_test_{secrets.token_hex(6)}"
    with psycopg.connect(replicated.primary.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
        conn.execute(
            sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
        )
    replicated.standby.catch_up()
    try:
        yield Pair(name, replicated.primary.dsn(name), replicated.standby)
    finally:
        with psycopg.connect(replicated.primary.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(analyst.login_role(name)))
            )


def replica_url(pair: Pair) -> str:
    """`tollgate analyst url --replica`, the standby named by DATABASE_REPLICA_URL."""
    issued = tollgate(
        "analyst", "url", "--replica", env=pair.env(DATABASE_REPLICA_URL=pair.standby.url())
    )
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip()


def documented_views() -> list[str]:
    return re.findall(r"^### `(\w+)`$", DOC.read_text(encoding="utf-8"), re.M)


def test_replica_url_reads_every_view_there(pair: Pair) -> None:
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        some_of_everything(primary)
    url = replica_url(pair)
    params = conninfo_to_dict(url)
    assert url.startswith(f"postgresql://{analyst.login_role(pair.name)}:")
    assert (params["host"], params["port"], params["dbname"]) == (
        "127.0.0.1",
        str(pair.standby.port),
        pair.name,
    ), "the URL names the standby and the database"
    # No waiting here: the command waited for the login, written after these rows.

    views = documented_views()
    assert len(views) >= 10
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        on_primary = {
            view: primary.execute(
                sql.SQL("SELECT count(*) FROM reporting.{}").format(sql.Identifier(view))
            ).fetchone()
            for view in views
        }
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), current_user").fetchone() == (
            True,
            analyst.login_role(pair.name),
        ), "the analyst's session is on the standby"
        on_standby = {
            view: conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(view))
            ).fetchone()
            for view in views
        }
        for query in QUERY.findall(DOC.read_text(encoding="utf-8")):
            try:
                conn.execute(query.encode()).fetchall()
            except psycopg.Error as exc:
                pytest.fail(f"{query}\nfailed on the standby: {exc}")
    assert on_standby == on_primary, "the standby answers what the primary holds"
    assert on_standby["payments"] == (3,) and on_standby["refunds"] == (1,)


def test_rows_written_on_the_primary_reach_the_standby(pair: Pair) -> None:
    url = replica_url(pair)
    with (
        psycopg.connect(pair.primary_dsn, autocommit=True) as primary,
        psycopg.connect(url, autocommit=True) as standby,
    ):
        assert standby.execute("SELECT count(*) FROM payments").fetchone() == (0,)
        primary.execute("SELECT api.create_api_key_v1('ann', 'ann-key', false, NULL)")
        primary.execute(
            "SELECT api.finish_payment_v1('ann-key', (SELECT payment_id FROM"
            " api.begin_payment_v1('ann-key', 'k1', NULL, 1250, 'USD', NULL, NULL, NULL)),"
            " 'pi_replicated', 'requires_payment_method', NULL)"
        )
        primary.execute(
            "SELECT api.create_transaction_v1('ann-key', NULL, 'order-1', 5, 'USD', NULL)"
        )
        pair.standby.catch_up()
        assert standby.execute(
            "SELECT account_id, stripe_id, amount_minor, currency, status FROM payments"
        ).fetchall() == [("ann", "pi_replicated", 1250, "USD", "requires_payment_method")]
        assert standby.execute("SELECT reference, status FROM transactions").fetchall() == [
            ("order-1", "pending")
        ]


def test_the_standby_refuses_writes(pair: Pair) -> None:
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        primary.execute("SELECT api.create_api_key_v1('ann', 'ann-key', false, NULL)")
    url = replica_url(pair)
    with psycopg.connect(url, autocommit=True) as conn:
        # A session may turn its read-only default off (on the primary the grants then refuse
        # these with 42501): the standby still refuses every write.
        conn.execute("SET default_transaction_read_only = off")
        for statement in (
            "CREATE TEMP TABLE x (a int)",
            "CREATE TABLE reporting.x (a int)",
        ):
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute(statement)
        with pytest.raises(psycopg.Error, match="read-write mode during recovery"):
            with conn.transaction():
                conn.execute("SET TRANSACTION READ WRITE")
        # What analysts may not read, they may not read on the standby either.
        for statement in (
            "SELECT * FROM tollgate.api_keys",
            "SELECT * FROM tollgate.payment_events",
            "SELECT * FROM api.list_reviews_v1('ann-key', NULL)",
            "SELECT api.create_api_key_v1('eve', 'eve-key', true, NULL)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # Even the service's own role and a superuser cannot write there: the api functions
    # that write fail read-only.
    with psycopg.connect(pair.standby.dsn(pair.name), autocommit=True) as admin:
        for role, statement in (
            (
                "tollgate_app",
                "SELECT api.begin_payment_v1('ann-key', 'k1', NULL, 1250, 'USD', NULL, NULL, NULL)",
            ),
            (
                "tollgate_app",
                "SELECT api.create_transaction_v1('ann-key', NULL, 'x', 5, 'USD', NULL)",
            ),
            ("postgres", "INSERT INTO tollgate.accounts (external_id) VALUES ('eve')"),
            ("postgres", "UPDATE tollgate.ledger_accounts SET balance = balance + 100"),
        ):
            admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                admin.execute(statement)
            admin.execute("RESET ROLE")
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        assert primary.execute("SELECT count(*) FROM tollgate.api_keys").fetchone() == (1,)


def test_a_lagging_standby_gets_the_url_once_it_catches_up(pair: Pair) -> None:
    """A standby that has not replayed the login in time: the URL comes back, marked so."""
    with psycopg.connect(pair.standby.dsn(), autocommit=True) as admin:
        admin.execute("SELECT pg_wal_replay_pause()")
        try:
            with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
                login = analyst.issue_replica_login(primary, pair.standby.url(), timeout=0.3)
            assert not login.replayed
            with pytest.raises(psycopg.OperationalError):  # the role is not there yet
                psycopg.connect(login.url).close()
        finally:
            admin.execute("SELECT pg_wal_replay_resume()")
    pair.standby.catch_up()
    with psycopg.connect(login.url) as conn:
        assert conn.execute("SELECT count(*) FROM payments").fetchone() == (0,)


def test_replica_urls_that_name_no_standby_change_nothing(
    pair: Pair, db_dsn: str, cluster: Cluster
) -> None:
    no_env = {k: v for k, v in pair.env().items() if k != "DATABASE_REPLICA_URL"}
    refused = tollgate("analyst", "url", "--replica", env=no_env)
    assert refused.returncode == 2 and "DATABASE_REPLICA_URL" in refused.stderr
    for url, says in (
        (pair.primary_dsn, "not a standby"),  # the primary itself takes writes
        ("postgresql://postgres@127.0.0.1:1/postgres", "cannot connect to the replica"),
        ("host=127.0.0.1 port=", "cannot connect to the replica"),
        ("not a url", "not a connection string"),
    ):
        refused = tollgate("analyst", "url", "--replica", url, env=pair.env())
        assert refused.returncode == 2 and says in refused.stderr, (url, refused.stderr)
        assert refused.stdout == ""
    assert pair.roles() == [], "no login was issued"

    # A standby of another server than DATABASE_URL's.
    role = analyst.login_role(str(conninfo_to_dict(db_dsn)["dbname"]))
    try:
        refused = tollgate(
            "analyst",
            "url",
            "--replica",
            pair.standby.url(),
            env=os.environ | {"DATABASE_URL": db_dsn},
        )
        assert refused.returncode == 2 and "standby of another server" in refused.stderr
        with cluster.admin() as admin:
            assert (
                admin.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None
            )
    finally:
        with cluster.admin() as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_replica_flag_takes_a_url_over_the_environment(pair: Pair) -> None:
    issued = tollgate(
        "analyst",
        "url",
        "--replica",
        pair.standby.url(),
        env=pair.env(DATABASE_REPLICA_URL="postgresql://postgres@127.0.0.1:1/postgres"),
    )
    assert issued.returncode == 0, issued.stderr
    with psycopg.connect(issued.stdout.strip()) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


# ---------------------------------------------------------------------------------------------
# GET routes on the standby (DATABASE_READ_URL)
# ---------------------------------------------------------------------------------------------


def serve(pair: Pair) -> ServerThread:
    """The app on the pair's primary, reading GETs from its standby (no Stripe is called)."""
    return ServerThread(
        make_settings(
            pair.primary_dsn,
            "http://127.0.0.1:9",
            database_read_url=pair.standby.dsn(pair.name),
            apply_stripe_events=False,
        )
    )


class Paused:
    """Replay paused on the standby for the block: what the primary writes meanwhile is not
    there yet (a standby behind, deterministically)."""

    def __init__(self, standby: Standby) -> None:
        self.conn = psycopg.connect(standby.dsn(), autocommit=True)

    def __enter__(self) -> None:
        self.conn.execute("SELECT pg_wal_replay_pause()")

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("SELECT pg_wal_replay_resume()")
        self.conn.close()


def read(client: httpx.Client, reference: str, **headers: str) -> tuple[int, str]:
    got = client.get(f"/v1/transactions/{reference}", headers=headers)
    assert got.status_code in (200, 404), got.text
    return got.status_code, got.headers[READ_FROM_HEADER]


def test_a_caller_reads_its_own_writes_and_others_read_the_standby(pair: Pair) -> None:
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        for key in ("ann-key", "ann-other-key"):  # two callers of one account
            primary.execute("SELECT api.create_api_key_v1('ann', %s, false, NULL)", (key,))
    pair.standby.catch_up()
    with (
        serve(pair) as url,
        httpx.Client(base_url=url, headers={"Authorization": "Bearer ann-key"}) as ann,
        httpx.Client(base_url=url, headers={"Authorization": "Bearer ann-other-key"}) as other,
        psycopg.connect(pair.primary_dsn, autocommit=True) as primary,
    ):
        with Paused(pair.standby):
            # Written on the primary by someone else: a GET reads the standby, not there yet.
            primary.execute(
                "SELECT api.create_transaction_v1('ann-key', NULL, 'direct-1', 5, 'USD', NULL)"
            )
            assert read(ann, "direct-1") == (404, "standby")

            # Ann writes through the API: her GETs read the primary until the standby has it.
            made = ann.post(
                "/v1/transactions",
                json={"reference": "api-1", "amount_minor": 250, "currency": "USD"},
            )
            assert made.status_code == 201, made.text
            lsn = made.headers[WRITE_LSN_HEADER]
            assert read(ann, "api-1") == (200, "primary")
            assert read(ann, "direct-1") == (200, "primary")
            # Another caller reads the standby: not there yet...
            assert read(other, "api-1") == (404, "standby")
            # ...unless it sends the position back; a malformed one reads the primary.
            assert read(other, "api-1", **{READ_AFTER_HEADER: lsn}) == (200, "primary")
            assert read(other, "api-1", **{READ_AFTER_HEADER: "yesterday"}) == (200, "primary")
            failed = ann.post(
                "/v1/transactions",
                json={"reference": "api-1", "amount_minor": 250, "currency": "USD"},
            )
            assert failed.status_code == 409 and WRITE_LSN_HEADER in failed.headers
        pair.standby.catch_up()
        assert read(other, "api-1", **{READ_AFTER_HEADER: lsn}) == (200, "standby")
        assert read(ann, "api-1") == (200, "standby"), "once replayed, the standby serves Ann"

        with Paused(pair.standby):  # Ann's write replayed: she reads the standby again
            primary.execute(
                "SELECT api.create_transaction_v1('ann-key', NULL, 'direct-2', 5, 'USD', NULL)"
            )
            assert read(ann, "direct-2") == (404, "standby")
        pair.standby.catch_up()
        assert read(ann, "direct-2") == (200, "standby")


def remembered(server: ServerThread) -> dict[bytes, int]:
    """What the served app's worker remembers of each key's last write (api/reads.py)."""
    app = server.server.config.app
    assert isinstance(app, FastAPI)
    app_reads: Reads = app.state.reads
    return dict(app_reads._written)


def test_only_a_write_by_a_key_the_database_took_is_remembered(pair: Pair) -> None:
    """A refused or impossible request gets no Tollgate-Write-Lsn, costs no query on the
    primary and leaves the worker's memory as it was: an unauthenticated caller can neither
    learn the primary's WAL position nor push other keys' positions out."""
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        primary.execute("SELECT api.create_api_key_v1('bo', 'bo-key', false, NULL)")
    pair.standby.catch_up()
    server = serve(pair)
    body = {"reference": "bo-1", "amount_minor": 250, "currency": "USD"}
    with server as url, httpx.Client(base_url=url) as http:
        bogus = {"Authorization": "Bearer bogus"}
        bo = {"Authorization": "Bearer bo-key"}
        refused = [
            http.post("/v1/nonexistent", headers=bogus),  # 404: no route
            http.post("/v1/transactions", headers=bogus, json=body),  # 401: unknown key
            http.post("/v1/transactions", json=body),  # 401: no key
            http.put("/v1/transactions", headers=bo, json=body),  # 405
            http.post("/v1/transactions", headers=bo, json={"reference": "bo-1"}),  # 422
            http.post(  # 400 malformed_json
                "/v1/transactions", headers=bo | {"Content-Type": "application/json"}, content=b"{"
            ),
            http.post(  # 422 refused by the database
                "/v1/transactions", headers=bo, json=body | {"currency": "ZZZ"}
            ),
        ]
        assert [r.status_code for r in refused] == [404, 401, 401, 405, 422, 400, 422]
        for r in refused:
            assert WRITE_LSN_HEADER not in r.headers, r.request.url
        assert remembered(server) == {}

        made = http.post("/v1/transactions", headers=bo, json=body)
        assert made.status_code == 201, made.text
        assert parse_lsn(made.headers[WRITE_LSN_HEADER]) in remembered(server).values()
        assert len(remembered(server)) == 1


def test_a_key_forgotten_to_make_room_still_reads_its_writes(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past REMEMBERED_KEYS the least recent key is forgotten; its GETs (and any unknown key's)
    wait for the newest forgotten position, so none reads a standby without its own write."""
    monkeypatch.setattr(reads, "REMEMBERED_KEYS", 2)
    keys = ["cy-key", "dee-key", "eve-key"]
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        for key in keys:
            primary.execute("SELECT api.create_api_key_v1('cy', %s, false, NULL)", (key,))
    pair.standby.catch_up()
    server = serve(pair)
    with server as url, httpx.Client(base_url=url) as http:
        with Paused(pair.standby):
            for n, key in enumerate(keys):  # cy's position is forgotten for eve's
                made = http.post(
                    "/v1/transactions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"reference": f"cy-{n}", "amount_minor": 5, "currency": "USD"},
                )
                assert made.status_code == 201, made.text
            assert len(remembered(server)) == 2
            cy = {"Authorization": "Bearer cy-key"}
            got = http.get("/v1/transactions/cy-0", headers=cy)
            assert (got.status_code, got.headers[READ_FROM_HEADER]) == (200, "primary")
        pair.standby.catch_up()
        got = http.get("/v1/transactions/cy-0", headers=cy)
        assert (got.status_code, got.headers[READ_FROM_HEADER]) == (200, "standby")


def test_every_get_route_answers_from_the_standby(pair: Pair) -> None:
    """No GET route writes: each answers from the standby, which refuses writes."""
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        some_of_everything(primary)
    pair.standby.catch_up()
    with (
        serve(pair) as url,
        httpx.Client(base_url=url, headers={"Authorization": "Bearer ops-key"}) as ops,
    ):
        paths = [
            path
            for path, operations in ops.get("/openapi.json").json()["paths"].items()
            if "get" in operations and path.startswith("/v1/")
        ]
        assert len(paths) >= 15, "the schema lists the GET routes"
        answered = {}
        for path in paths:
            filled = path.format(
                account_id="ann", ref="pi_doc0", reference="small", hold_id=uuid.uuid4()
            )
            got = ops.get(filled, params={"account_id": "ann"} if "{reference}" in path else {})
            assert got.status_code < 500, (path, got.text)
            assert got.headers[READ_FROM_HEADER] == "standby", path
            answered[path] = got.status_code
        assert answered.pop("/v1/holds/{hold_id}") == 404
        # Ann's newest payment (pi_doc2) waits: she may not continue.
        assert answered.pop("/v1/accounts/{account_id}/can-continue") == 402
        assert {p: c for p, c in answered.items() if c != 200} == {}


def test_an_unreachable_standby_leaves_gets_on_the_primary(pair: Pair) -> None:
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        primary.execute("SELECT api.create_api_key_v1('ann', 'ann-key', false, NULL)")
    settings = make_settings(
        pair.primary_dsn,
        "http://127.0.0.1:9",
        database_read_url="postgresql://postgres@127.0.0.1:1/postgres",
        apply_stripe_events=False,
    )
    with (
        ServerThread(settings) as url,
        httpx.Client(base_url=url, headers={"Authorization": "Bearer ann-key"}) as ann,
    ):
        for _ in range(2):
            got = ann.get("/v1/me")
            assert got.status_code == 200, got.text
            assert got.headers[READ_FROM_HEADER] == "primary"


class Spread(httpx.BaseTransport):
    """A load balancer's effect: writes go to one instance of the API, reads to another."""

    def __init__(self, writes: str, reads: str) -> None:
        self.writes, self.reads = httpx.URL(writes), httpx.URL(reads)
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        to = self.reads if request.method == "GET" else self.writes
        request.url = request.url.copy_with(port=to.port)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_the_client_reads_its_writes_through_any_instance(pair: Pair) -> None:
    """The instance that answers a GET never saw the write: the Python client sends the write's
    position back (Tollgate-Read-After), so the GET still reads the primary."""
    with psycopg.connect(pair.primary_dsn, autocommit=True) as primary:
        primary.execute("SELECT api.create_api_key_v1('ann', 'ann-key', false, NULL)")
    pair.standby.catch_up()
    with (
        serve(pair) as one,
        serve(pair) as other,
        tollgate_client.Client(one, "ann-key", transport=Spread(one, other)) as client,
        Paused(pair.standby),
    ):
        made = client.create_transaction("via-one", None, "USD", amount_minor=250)
        assert client.get_transaction("via-one") == made
        with httpx.Client(base_url=other, headers={"Authorization": "Bearer ann-key"}) as raw:
            assert read(raw, "via-one") == (404, "standby"), "without the header: the standby"
