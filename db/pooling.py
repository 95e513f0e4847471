"""Whether a connection reaches PostgreSQL through a pooler such as PgBouncer.

A pooler in transaction mode (PgBouncer's ``pool_mode = transaction``) gives each transaction
whichever server connection is free: what a statement leaves in the *session* (``SET ROLE``,
a plain ``SET``, ``LISTEN``, a session advisory lock, a temporary table, a server-side
prepared statement) stays on that server connection, is missing from the client's next
transaction and shows up in another client's. Tollgate keeps no session state on a connection
that may be pooled (docs/OPERATIONS.md, "Behind PgBouncer"):

- the service's pool: no ``SET ROLE`` (``DATABASE_ROLE`` empty; the login is a member of
  tollgate_app) and no prepared statements (``prepare_threshold=None``) on a pooled connection;
- the Stripe event applier: ``SET LOCAL ROLE`` inside each batch's transaction; it LISTENs on
  ``DATABASE_LISTEN_URL`` only when that connection is direct;
- CLI commands: never prepare; ``tollgate listen`` and migrations that cannot run in a
  transaction refuse a pooled connection.

Found, not configured: PgBouncer answers every client with a cancel key of its own
(BackendKeyData), so the backend pid libpq reports differs from the ``pg_backend_pid()`` of
the server that runs the query. On a direct connection they are the same process.
"""

from __future__ import annotations

from typing import Any

import psycopg

PROBE = "SELECT pg_backend_pid()"


class PooledConnectionRefused(RuntimeError):
    """A connection that must be direct (it keeps session state) goes through a pooler."""


def _pooled(reported: int, row: tuple[Any, ...] | None) -> bool:
    return row is None or int(row[0]) != reported


def is_pooled(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` goes through a pooler (one round trip, its own transaction when the
    connection is in autocommit)."""
    return _pooled(conn.info.backend_pid, conn.execute(PROBE, prepare=False).fetchone())


async def is_pooled_async(conn: psycopg.AsyncConnection[Any]) -> bool:
    cur = await conn.execute(PROBE, prepare=False)
    return _pooled(conn.info.backend_pid, await cur.fetchone())
