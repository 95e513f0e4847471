"""A login for analysts: read-only SQL over the ``reporting`` views, and nothing else.

``tollgate_analyst`` (created by migration 0012) holds the grants; the login role is a member
of it and of nothing else, with a fresh password each time one is issued. Its sessions start
read-only, with ``reporting`` on the search path and time limits; those are defaults a session
may change, the grants are what refuse.

Roles belong to the PostgreSQL server, not to one database: each database gets its own login
(``tollgate_analyst_<database>``), but ``tollgate_analyst`` itself is shared by every Tollgate
database on the server. Give each deployment its own server.

A hot standby (streaming replication) serves analysts as well: the login is made on the primary
and replicates, with its grants and settings, and the standby refuses every write whatever a
session sets. ``issue_replica_login`` checks that the standby is one of this server, makes the
login and waits until the standby has replayed it, so the URL it returns works at once.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, NamedTuple
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

GROUP_ROLE = "tollgate_analyst"
# How long issue_replica_login waits for the standby to replay the new login.
REPLICA_WAIT_SECONDS = 30.0


class RoleRefused(ValueError):
    """The named role exists and is more than an analyst login: Tollgate leaves it alone."""


class ReplicaRefused(ValueError):
    """The server named as the replica is not a hot standby of this database's server."""


class ReplicaLogin(NamedTuple):
    url: str  # the login's URL on the standby
    replayed: bool  # whether the standby had replayed the login within the wait


def login_role(dbname: str) -> str:
    """The analyst login of a database: tollgate_analyst_<database>, within 63 bytes."""
    return "tollgate_analyst_" + re.sub(r"[^a-z0-9_]", "_", dbname.lower())[:46]


def issue_login(conn: psycopg.Connection[Any], *, role: str | None = None) -> str:
    """Create (or re-key) the database's analyst login; return a postgresql:// URL for it.

    Re-running replaces the password: new connections with the old URL fail (connected sessions
    stay until they end). ``conn`` must be allowed to create roles (the operator's connection).
    """
    role = role or login_role(conn.info.dbname)
    return login_url(conn.info, role, _issue(conn, role))


def _issue(conn: psycopg.Connection[Any], role: str) -> str:
    """Create or re-key ``role`` (as issue_login says); return its new password."""
    password = secrets.token_urlsafe(24)
    name = sql.Identifier(role)
    with conn.transaction():
        # An existing role is re-keyed only if it is what this function makes: a login, member of
        # tollgate_analyst and of nothing else, with no members and no special attributes.
        found = conn.execute(
            "SELECT r.rolcanlogin AND NOT (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb"
            "       OR r.rolreplication OR r.rolbypassrls)"
            "   AND NOT EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = r.oid)"
            "   AND ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g"
            "             ON g.oid = m.roleid WHERE m.member = r.oid) = ARRAY[%s]"
            " FROM pg_roles r WHERE r.rolname = %s",
            [GROUP_ROLE, role],
        ).fetchone()
        if found and not found[0]:
            raise RoleRefused(f"role {role} exists and is not an analyst login: not changed")
        verb = sql.SQL("ALTER") if found else sql.SQL("CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                verb, name, sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(GROUP_ROLE), name))
        for setting, value in (
            ("default_transaction_read_only", "on"),
            ("search_path", "reporting"),
            ("statement_timeout", "5min"),
            ("idle_in_transaction_session_timeout", "10min"),
        ):
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    name, sql.Identifier(setting), sql.Literal(value)
                )
            )
    return password


def connect_standby(primary: psycopg.Connection[Any], standby_url: str) -> psycopg.Connection[Any]:
    """Connect to the standby at ``standby_url``, in the primary's database, and check it is a
    hot standby of the primary's server (in recovery, the same system identifier), else
    ReplicaRefused.

    The URL names the standby's server and an operator's login there. A database it names is
    where the check is made (a standby of another server may lack the primary's database);
    the connection returned is to the primary's database (a physical standby holds the same).
    """
    try:
        params = conninfo_to_dict(standby_url)
    except psycopg.ProgrammingError as exc:
        raise ReplicaRefused(f"the replica's URL is not a connection string: {exc}") from None
    query = "SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system())"
    mine = primary.execute(query).fetchone()
    standby = _connect_replica(params | {"dbname": params.get("dbname") or primary.info.dbname})
    try:
        theirs = standby.execute(query).fetchone()
        assert mine is not None and theirs is not None
        if not theirs[0]:
            raise ReplicaRefused(
                "the replica is not a standby: it accepts writes (not in recovery)"
            )
        if mine[1] != theirs[1]:
            raise ReplicaRefused(
                f"the replica is a standby of another server (system identifier {theirs[1]}, "
                f"this database's server is {mine[1]})"
            )
        if standby.info.dbname != primary.info.dbname:
            standby.close()
            standby = _connect_replica(params | {"dbname": primary.info.dbname})
    except BaseException:
        standby.close()
        raise
    return standby


def _connect_replica(params: dict[str, Any]) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(make_conninfo("", **params), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ReplicaRefused(f"cannot connect to the replica: {exc}".rstrip()) from None


def wait_for_replay(
    standby: psycopg.Connection[Any], lsn: str, *, timeout: float = REPLICA_WAIT_SECONDS
) -> bool:
    """Whether the standby replays WAL up to ``lsn`` within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        row = standby.execute(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", [lsn]
        ).fetchone()
        if row and row[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 2, 0.5)


def issue_replica_login(
    primary: psycopg.Connection[Any],
    standby_url: str,
    *,
    role: str | None = None,
    timeout: float = REPLICA_WAIT_SECONDS,
) -> ReplicaLogin:
    """Issue the database's analyst login (on the primary: a standby takes no writes) and
    return its URL on the standby at ``standby_url``, once the standby has replayed it.

    A URL that names no standby of this server changes nothing (ReplicaRefused). If the
    standby has not replayed the login within ``timeout`` seconds, the URL is returned with
    ``replayed`` false: it works once the standby catches up.
    """
    with connect_standby(primary, standby_url) as standby:
        role = role or login_role(primary.info.dbname)
        password = _issue(primary, role)
        row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        replayed = wait_for_replay(standby, row[0], timeout=timeout)
        return ReplicaLogin(login_url(standby.info, role, password), replayed)


def login_url(info: psycopg.ConnectionInfo, user: str, password: str) -> str:
    """A postgresql:// URL for the same server and database, as another user."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    db = quote(info.dbname, safe="")
    if info.host.startswith("/"):  # a Unix socket folder
        return f"postgresql://{auth}@/{db}?host={quote(info.host, safe='')}&port={info.port}"
    host = f"[{info.host}]" if ":" in info.host else info.host
    return f"postgresql://{auth}@{host}:{info.port}/{db}"
