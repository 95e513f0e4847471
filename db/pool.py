"""The service's connection pool: one per process, opened in the FastAPI lifespan."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from db import queries
from db.pooling import PooledConnectionRefused, is_pooled_async

# Seconds one chain of reconnection attempts goes on before it gives up. psycopg_pool retries
# a connection that failed after 1, 2, 4, 8, 16 ... seconds with no cap until this timeout (5
# minutes by default): after a 20-second failover its next try could be 16 s away, and every
# request meanwhile waits DB_POOL_TIMEOUT for nothing and gets 503. Given up sooner, the next
# request that finds the pool empty starts a new attempt at once (the pool grows on demand,
# back to its minimum after the first success).
RECONNECT_TIMEOUT = 3.0


def create_pool(
    dsn: str, *, role: str | None, min_size: int, max_size: int, timeout: float
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """A closed pool of autocommit connections acting as ``role`` (usually tollgate_app).

    Autocommit: most requests are one function call, so they need no BEGIN/COMMIT round trips;
    the few multi-statement flows open ``conn.transaction()`` themselves.

    A connection through a pooler (PgBouncer in transaction mode, db/pooling.py) keeps nothing
    in its session: it prepares no statement (psycopg would after 5 runs of a query, and the
    next run may reach a server that never saw it) and it refuses ``role``, whose SET ROLE
    would stay on a server connection other clients get. Behind a pooler the login in ``dsn``
    is itself a member of tollgate_app and ``role`` is empty (DATABASE_ROLE='').
    """

    async def configure(conn: AsyncConnection[Any]) -> None:
        if await is_pooled_async(conn):
            conn.prepare_threshold = None
            if role:
                raise PooledConnectionRefused(
                    f"DATABASE_URL goes through a pooler (PgBouncer) and DATABASE_ROLE is "
                    f"{role!r}: SET ROLE would stay on a server connection that other clients "
                    f"get. Log in as a role that is a member of {role} (e.g. tollgate_api) "
                    "and set DATABASE_ROLE to an empty value (docs/OPERATIONS.md, "
                    "Behind PgBouncer)."
                )
        elif role:
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        await queries.register_types(conn)

    return AsyncConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        reconnect_timeout=RECONNECT_TIMEOUT,
        open=False,
        kwargs={"autocommit": True},
        configure=configure,
        name="tollgate",
    )
