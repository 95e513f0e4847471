"""The service's connection pool: one per process, opened in the FastAPI lifespan."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from db import queries

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
    """

    async def configure(conn: AsyncConnection[Any]) -> None:
        if role:
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
