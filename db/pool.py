"""The service's connection pool: one per process, opened in the FastAPI lifespan."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from db import queries


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
        open=False,
        kwargs={"autocommit": True},
        configure=configure,
        name="tollgate",
    )
