"""`tollgate listen`: deliver the outbox to a handler, at least once.

The delivery rows in PostgreSQL are the truth; NOTIFY tollgate_outbox only wakes the listener
early (it also looks every --poll seconds). Each round leases due deliveries in a short
transaction (FOR UPDATE SKIP LOCKED: processes of one consumer never lease the same one; the
attempt is counted and the delivery is not due again until the lease ends), runs the handler
for each outside any transaction and under a deadline, then records the outcomes in a second
short transaction: delivered, or failed and retried with exponential backoff, or dead after
the last attempt. Each of those calls presents the lease token the claim returned: a delivery
whose lease ran out and was claimed by another process since is left to that process. A
process that dies mid-round leaves its leases to run out: the events are handled again (same
event ids), and an event whose handler keeps killing the process ends up dead instead of
looping.

Every call goes through the typed wrappers of db/queries.py, so database errors arrive
translated by db/errors.py, as they do in the service. Any database error closes the
connections and reopens them with backoff, except a refusal (a consumer name or a setting the
database does not accept): reconnecting cannot change that answer, so the listener stops with
it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from db import queries
from db.errors import DomainError, translate
from db.pooling import PooledConnectionRefused, is_pooled

log = logging.getLogger("tollgate.listen")

CHANNEL = "tollgate_outbox"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """What a handler is given, under the names of the JSON it sends on (``to_json``): the
    outbox row's event_id is ``id``, its topic ``type``, its payload ``data``, its created_at
    ``created``. ``outbox_id`` (the row) is the one field the JSON leaves out."""

    outbox_id: int
    id: UUID
    type: str
    account_id: str
    data: dict[str, Any]
    created: dt.datetime
    attempt: int

    def to_json(self) -> dict[str, Any]:
        """The event as handlers send it on: id, type, created, account_id, data, attempt."""
        return {
            "id": str(self.id),
            "type": self.type,
            "created": self.created.isoformat(),
            "account_id": self.account_id,
            "data": self.data,
            "attempt": self.attempt,
        }


Handler = Callable[[OutboxEvent], None]


@dataclass(frozen=True)
class ListenerSettings:
    dsn: str
    consumer: str
    role: str | None = "tollgate_listener"
    batch: int = 100
    # Longest sleep without a NOTIFY before looking again (the polling fallback).
    poll_seconds: float = 5.0
    max_attempts: int = 10
    retry_base_seconds: float = 1.0
    # How long one handler call may take; past it the attempt counts as failed.
    handler_timeout_seconds: float = 30.0
    # How long leased deliveries stay with this process before another may take them (after
    # a crash, the wait until they are handled again). Renewed while a batch is worked on.
    lease_seconds: float = 60.0
    from_start: bool = False

    @property
    def lease(self) -> dt.timedelta:
        # At least twice a handler's deadline, so a lease renewed before each call holds.
        return dt.timedelta(seconds=max(self.lease_seconds, 2 * self.handler_timeout_seconds))


# TCP keepalives, so a listener cut off by the network notices (no effect on Unix sockets).
KEEPALIVES = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


class HandlerTimeout(Exception):
    pass


class _Run:
    """One pass of the worker thread over events, in order. ``started`` is when the call of
    event ``len(outcomes)`` began; both change under ``lock``."""

    def __init__(self, events: list[OutboxEvent]) -> None:
        self.events = events
        self.outcomes: list[BaseException | None] = []
        self.started = time.monotonic()
        self.abandoned = False  # a call ran past its deadline: the thread must stop after it
        self.lock = threading.Lock()
        self.finished = threading.Event()


class HandlerRunner:
    """Runs the handler on one reused worker thread, a batch at a time, each call under a
    deadline. The thread goes through the batch on its own (no hand-off per event, which under
    a busy CPU waits for the scheduler twice per event); the caller wakes to renew leases and
    to enforce the deadline. A call past its deadline is abandoned with its thread, counted as
    failed, and the events after it go on in a fresh thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handler")

    def _work(self, run: _Run, stop: threading.Event) -> None:
        try:
            with run.lock:
                run.started = time.monotonic()
            for event in run.events:
                if stop.is_set():
                    return
                outcome: BaseException | None = None
                try:
                    self.handler(event)
                except BaseException as exc:  # a handler's failure is data: retry, then dead
                    outcome = exc
                with run.lock:
                    if run.abandoned:
                        return
                    run.outcomes.append(outcome)
                    run.started = time.monotonic()
        finally:
            run.finished.set()

    def run(
        self,
        events: list[OutboxEvent],
        seconds: float,
        *,
        stop: threading.Event,
        renew: Callable[[int], None],
        renew_every: float,
    ) -> list[BaseException | None]:
        """The outcome of each event handled, in order (None: handled), stopping after the
        event in hand once ``stop`` is set: the events past the end were not tried. Every
        ``renew_every`` seconds, ``renew(i)`` is called with the position of the first event
        not handled yet."""
        outcomes: list[BaseException | None] = []
        renewed = time.monotonic()
        while len(outcomes) < len(events) and not stop.is_set():
            first = len(outcomes)
            run = _Run(events[first:])
            self.pool.submit(self._work, run, stop)
            try:
                renewed = self._wait(run, seconds, renew, renew_every, first, renewed)
            except BaseException:
                with run.lock:  # the caller goes away (renewing failed): the thread stops too
                    run.abandoned = True
                raise
            outcomes.extend(run.outcomes)
            if run.abandoned:
                outcomes.append(HandlerTimeout(f"the handler took longer than {seconds} s"))
                self.pool.shutdown(wait=False)
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handler")
        return outcomes

    def _wait(
        self,
        run: _Run,
        seconds: float,
        renew: Callable[[int], None],
        every: float,
        first: int,
        renewed: float,
    ) -> float:
        """Until the run has finished or its call in hand is past its deadline (then marked
        abandoned), renewing the leases every ``every`` seconds since ``renewed``; returns
        when they were last renewed."""
        while True:
            now = time.monotonic()
            with run.lock:
                at, late = len(run.outcomes), now - run.started - seconds
            if late >= 0 and not run.finished.is_set():
                with run.lock:
                    # The call in hand may have just returned: only a late one is given up.
                    run.abandoned = len(run.outcomes) == at
                if run.abandoned:
                    return renewed
                continue
            if now - renewed >= every:
                renew(first + at)
                renewed = now
            if run.finished.wait(max(min(-late, every - (now - renewed)), 0.001)):
                return renewed


class Listener:
    def __init__(self, settings: ListenerSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = HandlerRunner(handler)
        self.stop = threading.Event()
        self.delivered = 0

    def _connect(self, *, autocommit: bool, working: bool = False) -> psycopg.Connection[Any]:
        conn = psycopg.connect(make_conninfo(self.settings.dsn, **KEEPALIVES), autocommit=True)
        if is_pooled(conn):
            # LISTEN, SET ROLE and SET would stay on a server connection of the pooler's.
            conn.close()
            raise PooledConnectionRefused(
                "DATABASE_URL goes through a pooler (PgBouncer): `tollgate listen` LISTENs and "
                "sets its role for the session, so it needs a direct connection to the "
                "database server (docs/OPERATIONS.md, Behind PgBouncer)"
            )
        if self.settings.role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.settings.role)))
        if working:
            # Claims and outcomes commit without waiting for the WAL flush (two waits per
            # batch, which a busy disk makes long). Losing them takes a
            # server crash, and then every delivery they touched is still pending or leased:
            # it is handled again, which at-least-once allows, as after a listener crash.
            conn.execute("SET synchronous_commit = off")
        conn.autocommit = autocommit
        return conn

    def run(self) -> None:
        """Deliver until stop is set, reconnecting whenever the database fails us. Raises the
        DomainError of a refusal, which no reconnecting changes, and PooledConnectionRefused
        when DATABASE_URL goes through a pooler."""
        pause = 0.2
        while not self.stop.is_set():
            try:
                with (
                    self._connect(autocommit=True) as wake,
                    self._connect(autocommit=True, working=True) as work,
                ):
                    wake.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    queries.register_consumer(
                        work, consumer=self.settings.consumer, from_start=self.settings.from_start
                    )
                    log.info("listening as consumer %s", self.settings.consumer)
                    pause = 0.2
                    self._loop(wake, work)
            except (psycopg.Error, DomainError) as exc:
                # The wrappers of db/queries.py translate their errors; the connection's own
                # (connect, SET ROLE, LISTEN, waiting for a notification) are translated here.
                error = translate(exc) if isinstance(exc, psycopg.Error) else exc
                if isinstance(error, DomainError) and error.kind != "unavailable":
                    raise error from exc.__cause__ or exc
                detail = exc.__cause__ or exc  # psycopg's words: which server, what failed
                log.warning("database error (%s); reconnecting in %.1f s", detail, pause)
                self.stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _loop(self, wake: psycopg.Connection[Any], work: psycopg.Connection[Any]) -> None:
        while not self.stop.is_set():
            while not self.stop.is_set() and self._deliver_round(work):
                pass
            if self.stop.is_set():
                return
            for _ in wake.notifies(timeout=self._sleep_seconds(work), stop_after=1):
                pass

    def _sleep_seconds(self, work: psycopg.Connection[Any]) -> float:
        due = queries.next_delivery_due(work, consumer=self.settings.consumer)
        if due is None:
            return self.settings.poll_seconds
        wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
        return float(min(max(wait, 0.01), self.settings.poll_seconds))

    def _deliver_round(self, work: psycopg.Connection[Any]) -> int:
        """Lease a batch, handle it outside any transaction, record the outcomes."""
        consumer, settings = self.settings.consumer, self.settings
        rows = queries.claim_deliveries(
            work,
            consumer=consumer,
            limit=settings.batch,
            lease=settings.lease,
            max_attempts=settings.max_attempts,
        )
        if not rows:
            return 0
        # One token for the whole batch: every outcome below is recorded with it.
        token = rows[0].lease_token
        events = [
            OutboxEvent(
                outbox_id=r.outbox_id,
                id=r.id,
                type=r.type,
                account_id=r.account_id,
                data=r.data,
                created=r.created,
                attempt=r.attempt,
            )
            for r in rows
        ]

        def renew(first: int) -> None:
            queries.renew_leases(
                work,
                consumer=consumer,
                lease_token=token,
                outbox_ids=[e.outbox_id for e in events[first:]],
                lease=settings.lease,
            )

        outcomes = self.handler.run(
            events,
            settings.handler_timeout_seconds,
            stop=self.stop,
            renew=renew,
            renew_every=settings.lease.total_seconds() / 3,
        )
        done: list[int] = []
        failed: list[tuple[int, str]] = []
        for event, outcome in zip(events, outcomes, strict=False):
            if outcome is None:
                done.append(event.outbox_id)
            else:
                log.warning("handler failed for %s (%s): %r", event.id, event.type, outcome)
                failed.append((event.outbox_id, repr(outcome)))
        untried = [e.outbox_id for e in events[len(outcomes) :]]
        lost = 0
        with work.transaction():
            if done:
                recorded = queries.deliveries_done(
                    work, consumer=consumer, lease_token=token, outbox_ids=done
                )
                lost += len(done) - recorded
            for outbox_id, error in failed:
                queries.delivery_failed(
                    work,
                    consumer=consumer,
                    lease_token=token,
                    outbox_id=outbox_id,
                    error=error,
                    max_attempts=settings.max_attempts,
                    retry_base=dt.timedelta(seconds=settings.retry_base_seconds),
                )
            if untried:
                queries.release_deliveries(
                    work, consumer=consumer, lease_token=token, outbox_ids=untried
                )
        if lost:
            # Their lease ran out and another process claimed them: it will deliver them again.
            log.warning("%d deliveries were no longer leased to this process when done", lost)
        self.delivered += len(done) - lost
        return len(events)


def dead(dsn: str, consumer: str) -> list[queries.DeadDeliveryRow]:
    with psycopg.connect(dsn) as conn:
        return queries.dead_deliveries(conn, consumer=consumer)


def replay(dsn: str, consumer: str, event_id: UUID | None) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return queries.replay_deliveries(conn, consumer=consumer, event_id=event_id)


def unregister(dsn: str, consumer: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return queries.unregister_consumer(conn, consumer=consumer)


def prune(dsn: str, older_than: dt.timedelta) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return queries.prune_deliveries(conn, older_than=older_than)


def event_json(event: OutboxEvent) -> str:
    return json.dumps(event.to_json(), default=str, separators=(",", ":"))
