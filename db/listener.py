"""`tollgate listen`: deliver the outbox to a handler, at least once.

The delivery rows in PostgreSQL are the truth; NOTIFY tollgate_outbox only wakes the listener
early. The loop: claim due deliveries (FOR UPDATE SKIP LOCKED, so several processes of one
consumer share the work), run the handler for each, and in the same transaction mark them
delivered or failed (retried with exponential backoff, then dead). If the process dies before
the commit, the deliveries are claimed again: a handler may see an event twice, always with
the same event id, and never misses one. Connections that break (a database restart) are
reopened with backoff.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from db.queries import QUERIES

log = logging.getLogger("tollgate.listen")

CHANNEL = "tollgate_outbox"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    outbox_id: int
    event_id: UUID
    topic: str
    account_id: str
    payload: dict[str, Any]
    created_at: dt.datetime
    attempt: int

    def to_json(self) -> dict[str, Any]:
        """The event as handlers send it on: id, type, created, account_id, data, attempt."""
        return {
            "id": str(self.event_id),
            "type": self.topic,
            "created": self.created_at.isoformat(),
            "account_id": self.account_id,
            "data": self.payload,
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
    from_start: bool = False


class Listener:
    def __init__(self, settings: ListenerSettings, handler: Handler) -> None:
        self.settings = settings
        self.handler = handler
        self.stop = threading.Event()
        self.delivered = 0

    def _connect(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.settings.dsn, autocommit=autocommit)
        if self.settings.role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.settings.role)))
            if not autocommit:
                conn.commit()
        return conn

    def run(self) -> None:
        """Deliver until stop is set, reconnecting whenever the database goes away."""
        pause = 0.2
        while not self.stop.is_set():
            try:
                with (
                    self._connect(autocommit=True) as wake,
                    self._connect(autocommit=False) as work,
                ):
                    wake.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._register(work)
                    log.info("listening as consumer %s", self.settings.consumer)
                    pause = 0.2
                    self._loop(wake, work)
            except psycopg.OperationalError as exc:
                log.warning("database unavailable (%s); reconnecting in %.1f s", exc, pause)
                self.stop.wait(pause)
                pause = min(pause * 2, 5.0)

    def _register(self, work: psycopg.Connection[Any]) -> None:
        with work.transaction():
            work.execute(
                QUERIES["register_consumer"],
                {"consumer": self.settings.consumer, "from_start": self.settings.from_start},
            )

    def _loop(self, wake: psycopg.Connection[Any], work: psycopg.Connection[Any]) -> None:
        while not self.stop.is_set():
            while self._deliver_batch(work) and not self.stop.is_set():
                pass
            for _ in wake.notifies(timeout=self._sleep_seconds(work), stop_after=1):
                pass

    def _sleep_seconds(self, work: psycopg.Connection[Any]) -> float:
        with work.transaction():
            row = work.execute(
                QUERIES["next_delivery_due"], {"consumer": self.settings.consumer}
            ).fetchone()
        due: dt.datetime | None = row[0] if row else None
        if due is None:
            return self.settings.poll_seconds
        wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
        return float(min(max(wait, 0.01), self.settings.poll_seconds))

    def _deliver_batch(self, work: psycopg.Connection[Any]) -> int:
        """Handle one batch of due deliveries in one transaction; how many were claimed."""
        consumer = self.settings.consumer
        with work.transaction():
            cur = work.cursor(row_factory=class_row(OutboxEvent))
            events = cur.execute(
                QUERIES["claim_deliveries"], {"consumer": consumer, "limit": self.settings.batch}
            ).fetchall()
            done: list[int] = []
            for event in events:
                try:
                    self.handler(event)
                except Exception as exc:  # a handler's failure is data: retry, then dead
                    log.warning("handler failed for %s (%s): %r", event.event_id, event.topic, exc)
                    work.execute(
                        QUERIES["delivery_failed"],
                        {
                            "consumer": consumer,
                            "outbox_id": event.outbox_id,
                            "error": repr(exc),
                            "max_attempts": self.settings.max_attempts,
                            "retry_base": dt.timedelta(seconds=self.settings.retry_base_seconds),
                        },
                    )
                else:
                    done.append(event.outbox_id)
            if done:
                work.execute(QUERIES["deliveries_done"], {"consumer": consumer, "outbox_ids": done})
        self.delivered += len(done)
        return len(events)


def dead(dsn: str, consumer: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(QUERIES["dead_deliveries"], {"consumer": consumer})
        names = [c.name for c in rows.description or []]
        return [dict(zip(names, r, strict=True)) for r in rows.fetchall()]


def replay(dsn: str, consumer: str, event_id: UUID | None) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            QUERIES["replay_deliveries"], {"consumer": consumer, "event_id": event_id}
        ).fetchone()
        return int(row[0]) if row else 0


def event_json(event: OutboxEvent) -> str:
    return json.dumps(event.to_json(), default=str, separators=(",", ":"))
