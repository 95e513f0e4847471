"""A login for analysts: read-only SQL over the ``reporting`` views, and nothing else.

``tollgate_analyst`` (created by migration 0012) holds the grants; the login role is a member
of it with a fresh password each time one is issued, and sessions that are read-only by default
and see ``reporting`` first.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

LOGIN_ROLE = "tollgate_analyst_login"


def issue_login(conn: psycopg.Connection[Any], *, role: str = LOGIN_ROLE) -> str:
    """Create (or re-key) the analyst login role; return a DSN for it.

    Re-running replaces the password, so an old DSN stops working: that is how one revokes it.
    ``conn`` must be allowed to create roles (the operator's connection).
    """
    password = secrets.token_urlsafe(24)
    name = sql.Identifier(role)
    with conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        verb = sql.SQL("ALTER") if exists else sql.SQL("CREATE")
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(verb, name, sql.Literal(password))
        )
        conn.execute(sql.SQL("GRANT tollgate_analyst TO {}").format(name))
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(name))
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path = reporting").format(name))
        conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '5min'").format(name))
    return login_url(conn.info, role, password)


def login_url(info: psycopg.ConnectionInfo, user: str, password: str) -> str:
    """A postgresql:// URL for the same server and database, as another user."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    db = quote(info.dbname, safe="")
    if info.host.startswith("/"):  # a Unix socket folder
        return f"postgresql://{auth}@/{db}?host={quote(info.host, safe='')}&port={info.port}"
    host = f"[{info.host}]" if ":" in info.host else info.host
    return f"postgresql://{auth}@{host}:{info.port}/{db}"
