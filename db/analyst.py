"""A login for analysts: read-only SQL over the ``reporting`` views, and nothing else.

``tollgate_analyst`` (created by migration 0012) holds the grants; the login role is a member
of it and of nothing else, with a fresh password each time one is issued. Its sessions start
read-only, with ``reporting`` on the search path and time limits; those are defaults a session
may change, the grants are what refuse.

Roles belong to the PostgreSQL server, not to one database: each database gets its own login
(``tollgate_analyst_<database>``), but ``tollgate_analyst`` itself is shared by every Tollgate
database on the server. Give each deployment its own server.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

GROUP_ROLE = "tollgate_analyst"


class RoleRefused(ValueError):
    """The named role exists and is more than an analyst login: Tollgate leaves it alone."""


def login_role(dbname: str) -> str:
    """The analyst login of a database: tollgate_analyst_<database>, within 63 bytes."""
    return "tollgate_analyst_" + re.sub(r"[^a-z0-9_]", "_", dbname.lower())[:46]


def issue_login(conn: psycopg.Connection[Any], *, role: str | None = None) -> str:
    """Create (or re-key) the database's analyst login; return a postgresql:// URL for it.

    Re-running replaces the password: new connections with the old URL fail (connected sessions
    stay until they end). ``conn`` must be allowed to create roles (the operator's connection).
    """
    role = role or login_role(conn.info.dbname)
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
    return login_url(conn.info, role, password)


def login_url(info: psycopg.ConnectionInfo, user: str, password: str) -> str:
    """A postgresql:// URL for the same server and database, as another user."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    db = quote(info.dbname, safe="")
    if info.host.startswith("/"):  # a Unix socket folder
        return f"postgresql://{auth}@/{db}?host={quote(info.host, safe='')}&port={info.port}"
    host = f"[{info.host}]" if ":" in info.host else info.host
    return f"postgresql://{auth}@{host}:{info.port}/{db}"
