"""GET routes on a hot standby (DATABASE_READ_URL), with read-your-own-writes.

With DATABASE_READ_URL set, the GET routes of the API read from that server, a streaming
standby of DATABASE_URL's, through a second pool (the same role, SET ROLE tollgate_app);
everything else stays on the primary. A standby is behind by its replication lag, so:

- A request that may have written is answered with ``Tollgate-Write-Lsn``: the primary's WAL
  position once it is done. That is a request not GET, HEAD or OPTIONS, to a route that takes
  the key (api/deps.py BEARER), answered 2xx, 402 or 409: the database took the key and the
  request's transactions committed. A 401 or 403 (the key refused), 400, 404, 405, 422 (nothing
  done) or 5xx gets none, costs no query, and changes nothing here.
- The worker that answered remembers the position for that key (its hash; the newest 10,000
  keys, so only keys the database accepted). A key forgotten to make room reads as one that
  wrote at the newest forgotten position: nobody's write is lost from sight, though while
  more than 10,000 keys write within a replication lag everyone else may read the primary.
- A GET by that key reads from the standby only once the standby has replayed up to that
  position, else from the primary. A caller can also send the position back as
  ``Tollgate-Read-After`` (other workers and processes do not share the memory); a malformed
  one reads from the primary.
- Callers that have not written read whatever the standby has replayed: a change made by
  another key, a webhook or the applier shows there after the lag (usually well under a
  second). A key revoked a moment ago still reads there for as long.
- A GET says where it read: ``Tollgate-Read-From: standby`` (or ``primary``).
- How far the standby has replayed is asked at most once a second, and whenever a caller needs
  more than was last seen. A standby that does not answer within a second, or is not in
  recovery (promoted, or not a standby at all), serves nothing until it answers again: GETs go
  to the primary meanwhile.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import queries
from db.errors import DomainError

WRITE_LSN_HEADER = "Tollgate-Write-Lsn"
READ_AFTER_HEADER = "Tollgate-Read-After"
READ_FROM_HEADER = "Tollgate-Read-From"  # standby or primary: where a GET read
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The answers of a request, by a key the database took, whose transactions committed: 402 is an
# authorization refused with how to pay (returned, not raised), 409 may be a replay.
MAY_HAVE_WRITTEN_4XX = frozenset({402, 409})
# Keys whose last write position a worker remembers (the least recent are forgotten: their
# next GET reads the standby, which has replayed their write by then, most likely).
REMEMBERED_KEYS = 10_000
CHECK_EVERY_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 1.0
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")

Pool = AsyncConnectionPool[AsyncConnection[Any]]


def parse_lsn(text: str | None) -> int | None:
    """A pg_lsn's text (``16/B374D848``) as a number, or None."""
    found = _LSN.fullmatch(text.strip()) if text else None
    return (int(found[1], 16) << 32) | int(found[2], 16) if found else None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _caller(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


class Reads:
    """Which pool a GET reads from, and what each key last wrote."""

    def __init__(self, primary: Pool, standby: Pool) -> None:
        self.primary = primary
        self.standby = standby
        self._written: OrderedDict[bytes, int] = OrderedDict()
        # The newest position of a key forgotten to make room: what an unknown key waits for.
        self._forgotten = 0
        self._replayed = 0  # the newest replay position the standby reported
        self._standby_ok = False
        self._checked_at = float("-inf")
        self._checking = False

    async def pool_for(self, api_key: str, read_after: str | None) -> Pool:
        """The standby if it has replayed what this caller wrote, else the primary."""
        needed = self._written.get(_caller(api_key), self._forgotten)
        if read_after is not None:
            asked = parse_lsn(read_after)
            if asked is None:
                return self.primary
            needed = max(needed, asked)
        now = time.monotonic()
        if needed > self._replayed or now - self._checked_at >= CHECK_EVERY_SECONDS:
            await self._check(now)
        if self._standby_ok and needed <= self._replayed:
            return self.standby
        return self.primary

    async def _check(self, now: float) -> None:
        if self._checking:  # another request is asking: decide with what is known
            return
        self._checking, self._checked_at = True, now
        try:
            async with self.standby.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
                lsn = parse_lsn((await queries.wal_replayed(conn)).lsn)
            self._standby_ok = lsn is not None
            self._replayed = max(self._replayed, lsn or 0)
        except (psycopg.Error, PoolTimeout, DomainError):
            self._standby_ok = False
        finally:
            self._checking = False

    async def wrote(self, api_key: str) -> int | None:
        """Remember the primary's WAL position as this caller's last write; return it."""
        try:
            async with self.primary.connection() as conn:
                lsn = parse_lsn((await queries.wal_written(conn)).lsn)
        except (psycopg.Error, PoolTimeout, DomainError):
            return None  # the database is down: the request's own answer says so
        if lsn is None:
            return None
        caller = _caller(api_key)
        self._written[caller] = max(lsn, self._written.get(caller, 0))
        self._written.move_to_end(caller)
        while len(self._written) > REMEMBERED_KEYS:
            _, position = self._written.popitem(last=False)
            self._forgotten = max(self._forgotten, position)
        return lsn

    async def close(self) -> None:
        await self.standby.close()


def _may_have_written(status: int) -> bool:
    return 200 <= status < 300 or status in MAY_HAVE_WRITTEN_4XX


class Headers:
    """Plain ASGI middleware (when DATABASE_READ_URL is set): a GET answers where it read
    (Tollgate-Read-From); after a request by a key the database took that may have written,
    the primary's WAL position is remembered for its key and answered as Tollgate-Write-Lsn."""

    def __init__(self, app: ASGIApp, *, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reads: Reads | None = getattr(self.state, "reads", None)
        if reads is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                added = []
                if scope["method"] in SAFE_METHODS:
                    read_from = scope.get("state", {}).get("read_from")
                    if read_from:  # set by the route's pool dependency (api/deps.py)
                        added.append((READ_FROM_HEADER.lower().encode(), read_from.encode()))
                elif _may_have_written(message["status"]) and (
                    key := scope.get("state", {}).get("api_key")
                ):
                    # The handler has returned (its transactions committed) before its answer
                    # starts. The key is set by the route's key dependency (api/deps.py): a
                    # request that no route took, or refused before, has none.
                    lsn = await reads.wrote(key)
                    if lsn is not None:
                        added.append((WRITE_LSN_HEADER.lower().encode(), format_lsn(lsn).encode()))
                if added:
                    message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)
