"""The Stripe event applier: applies the events webhooks stored (state ``received``).

A webhook only verifies and stores its event (api.ingest_stripe_webhook_v1) and NOTIFYs
``tollgate_stripe_events`` when it commits (unless a concurrent webhook's notification is
already on its way). The applier LISTENs on a connection of its own (autocommit, outside the
service's pool), and on each wake-up calls api.apply_stripe_events_v1 until a batch comes back
short; it also looks again ``linger_seconds`` after applying anything (events stored by
webhooks that sent no notification), and at least every ``sweep_seconds`` in case a
notification was missed (a reconnect, a crash of another applier). Each call is one
transaction that applies up to ``batch`` events in arrival order; the rules are the database's.

Neither connection keeps session state, so both may go through a pooler in transaction mode
(PgBouncer): the work connection prepares no statement and takes the role with SET LOCAL ROLE
inside each batch's transaction; the wake-up connection uses ``listen_dsn`` (the API's
DATABASE_LISTEN_URL), which must be direct for LISTEN to hear anything. When it is not (a
pooler answers, db/pooling.py), the applier says so in the log and does not LISTEN: it looks
every ``sweep_seconds`` instead.

Every API worker runs one (``create_app``'s lifespan; APPLY_STRIPE_EVENTS=false turns it off),
and so does ``tollgate apply-events``. Several are safe: the database lets one batch run at a
time and every claim is FOR UPDATE SKIP LOCKED. A process killed mid-batch takes its
transaction with it: the events are received again and the next batch (another applier's, or
its own after a restart) applies them, each once.

A batch that fails on an event's rules (not on the database being unavailable) is retried
once with ``isolate``: the event that raises is kept as ignored, with the error as its note,
and the rest are applied. Any other error closes both connections and reopens them with
backoff, as `tollgate listen` does; the applier never stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from db import queries
from db.errors import DomainError, translate
from db.listener import KEEPALIVES
from db.pooling import is_pooled_async

log = logging.getLogger("tollgate.applier")

CHANNEL = "tollgate_stripe_events"
# How its sessions show in pg_stat_activity.
APPLICATION_NAME = "tollgate-applier"


@dataclass(frozen=True)
class ApplierSettings:
    dsn: str
    # The service's role: it may execute api.apply_stripe_events_v1 and nothing on tables.
    # Taken with SET LOCAL ROLE in each batch's transaction (no session state).
    role: str | None = "tollgate_app"
    # A direct connection for LISTEN; None: dsn.
    listen_dsn: str | None = None
    # Events per transaction (1-5000).
    batch: int = 100
    # Longest wait without a NOTIFY before looking anyway.
    sweep_seconds: float = 1.0
    # After applying anything, look again this soon even without a NOTIFY: a webhook whose
    # commit raced another's sends none (api.ingest_stripe_webhook_v1).
    linger_seconds: float = 0.05


class Applier:
    def __init__(self, settings: ApplierSettings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.applied = 0

    async def connect(self, *, listen: bool = False) -> psycopg.AsyncConnection[Any]:
        """A connection of its own, in autocommit: ``listen`` for the wake-ups (on
        ``listen_dsn``), else for the batches (prepares nothing: one call per batch)."""
        dsn = (self.settings.listen_dsn or self.settings.dsn) if listen else self.settings.dsn
        conn = await psycopg.AsyncConnection.connect(
            make_conninfo(dsn, application_name=APPLICATION_NAME, **KEEPALIVES),
            autocommit=True,
            prepare_threshold=None,
        )
        if not listen and self.settings.role:
            try:  # a login that may not take the role is refused here, before any batch
                async with conn.transaction():
                    await self._set_role(conn)
            except BaseException:
                await conn.close()
                raise
        return conn

    async def _set_role(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self.settings.role:
            await conn.execute(
                sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.settings.role))
            )

    async def run(self) -> None:
        """Apply until ``stop`` is set (or the task is cancelled), reconnecting whenever the
        database fails us, with backoff: never gives up (a refusal, such as a role without the
        grant, is logged as an error and retried every 30 s; its backlog shows in
        tollgate_stripe_events_received_oldest_age_seconds)."""
        pause = 0.2
        while not self.stop.is_set():
            try:
                async with await self.connect(listen=True) as wake, await self.connect() as work:
                    listening = await self.listen(wake)
                    pause = 0.2
                    await self._loop(wake if listening else None, work)
            except Exception as exc:
                error = translate(exc) if isinstance(exc, psycopg.Error) else exc
                delay, pause = pause, min(pause * 2, 5.0)
                if isinstance(error, DomainError) and error.kind != "unavailable":
                    delay = 30.0
                    log.error("applier: refused (%s); trying again in 30 s", error)
                else:
                    log.warning("applier: error (%s); reconnecting in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)

    async def listen(self, wake: psycopg.AsyncConnection[Any]) -> bool:
        """LISTEN on ``wake``, unless it goes through a pooler: there the LISTEN would stay on
        a server connection that this one does not keep (and that other clients get)."""
        if await is_pooled_async(wake):
            log.error(
                "applier: the LISTEN connection goes through a pooler (PgBouncer): set "
                "DATABASE_LISTEN_URL to a direct connection to the database. Until then, "
                "looking for events every %.1f s without notifications",
                self.settings.sweep_seconds,
            )
            return False
        await wake.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        return True

    async def _loop(
        self, wake: psycopg.AsyncConnection[Any] | None, work: psycopg.AsyncConnection[Any]
    ) -> None:
        # LISTEN came first: an event stored from now on wakes this loop, and the drain below
        # takes every event stored before.
        while not self.stop.is_set():
            applied = await self.drain(work)
            wait = self.settings.linger_seconds if applied else self.settings.sweep_seconds
            if wake is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), wait)
                continue
            async for _ in wake.notifies(timeout=wait, stop_after=1):
                pass

    async def drain(self, work: psycopg.AsyncConnection[Any]) -> int:
        """Apply batches until one comes back short: every event received before it started
        is applied (or left to a concurrent applier's batch, which commits it)."""
        total = 0
        batch = self.settings.batch
        while not self.stop.is_set():
            try:
                n = await self._batch(work, isolate=False)
            except (DomainError, psycopg.Error) as exc:
                if isinstance(exc, psycopg.OperationalError) or getattr(exc, "kind", None) == (
                    "unavailable"
                ):
                    raise
                log.warning("applier: a batch failed (%s); applying it event by event", exc)
                n = await self._batch(work, isolate=True)
            total += n
            self.applied += n
            if n < batch:
                break
        return total

    async def _batch(self, work: psycopg.AsyncConnection[Any], *, isolate: bool) -> int:
        """One batch: one transaction, as the applier's role (SET LOCAL ROLE ends with it)."""
        async with work.transaction():
            await self._set_role(work)
            return await queries.apply_stripe_events(
                work, limit=self.settings.batch, isolate=isolate
            )


async def run_in_background(settings: ApplierSettings) -> tuple[Applier, asyncio.Task[None]]:
    """Start an applier as a task of the running loop (the API's lifespan)."""
    applier = Applier(settings)

    return applier, asyncio.create_task(applier.run(), name="stripe-event-applier")


async def stop_background(applier: Applier, task: asyncio.Task[None]) -> None:
    applier.stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
