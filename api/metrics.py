"""GET /metrics: Prometheus metrics (prometheus-client's text format).

- ``tollgate_http_request_duration_seconds{method, route, status_class}``: a histogram per
  route template (``/v1/holds/{hold_id}/capture``; ``unmatched`` for unknown paths) and status
  class (``2xx`` ... ``5xx``), timed by api/observability.py's middleware.
- ``tollgate_stripe_webhooks_total{outcome}``: webhooks by outcome (``applied``, ...) or by the
  error code they were refused with (``invalid_signature``, ``database_unavailable``, ...).
- ``tollgate_db_pool_*``: the connection pool's statistics (psycopg_pool ``get_stats()``).
- The database's gauges, read at each scrape by one call of ``api.metrics_v1()``
  (db/sql/88-metrics.sql): Stripe events pending, outbox backlog, oldest pending age and dead
  letters per consumer, active holds per currency, audit-chain problems among the newest rows;
  and ``tollgate_db_up``, 0 when that call failed (the scrape itself still answers 200).

With several worker processes (``tollgate serve --workers N``) every scrape reports the sum of
all of them: their metrics live in files in ``PROMETHEUS_MULTIPROC_DIR`` (set up by
``tollgate serve``, api/observability.py), and each worker writes its pool's statistics there
every few seconds. Unauthenticated unless ``METRICS_TOKEN`` is set (then a bearer token).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.requests import Request
from starlette.responses import Response

from api import errors
from db import queries

log = logging.getLogger("tollgate.metrics")

# No *_created series beside every counter and histogram: nothing here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# How long a scrape waits for a pooled connection, and for api.metrics_v1() in all.
POOL_WAIT_SECONDS = 2.0
DATABASE_SECONDS = 5.0
# How often each worker writes its pool's statistics, with several workers.
POOL_SYNC_SECONDS = 5.0

# psycopg_pool's get_stats(): the measures are gauges, the rest counters since the pool opened.
POOL_GAUGES = {  # get_stats() key: (metric name, help)
    "pool_min": ("min", "connections the pool keeps open at least"),
    "pool_max": ("max", "connections the pool opens at most"),
    "pool_size": ("size", "connections open (in use, idle, or being opened)"),
    "pool_available": ("available", "idle connections"),
    "requests_waiting": ("requests_waiting", "requests waiting for a connection now"),
}
POOL_COUNTERS = {  # get_stats() key: (metric name, help, divisor to seconds)
    "requests_num": ("requests", "connections asked for", 1),
    "requests_queued": ("requests_queued", "connections asked for that had to wait", 1),
    "requests_wait_ms": ("requests_wait_seconds", "time spent waiting for a connection", 1000),
    "requests_errors": ("requests_errors", "connections not given in time (503s)", 1),
    "usage_ms": ("usage_seconds", "time connections were in use", 1000),
    "returns_bad": ("returns_bad", "connections returned broken", 1),
    "connections_num": ("connections", "connections opened", 1),
    "connections_ms": ("connections_seconds", "time spent opening connections", 1000),
    "connections_errors": ("connections_errors", "connections that failed to open", 1),
    "connections_lost": ("connections_lost", "connections found broken and discarded", 1),
}

# The gauges api.metrics_v1() returns (a name it returns that is not here is exposed too).
DATABASE_GAUGES = {
    "stripe_events_pending": "Stripe events stored but not applied: early events whose "
    "PaymentIntent is not recorded yet, or never will be (another integration's)",
    "stripe_events_pending_oldest_age_seconds": "age of the oldest pending Stripe event",
    "stripe_events_received": "Stripe events stored by the webhook and not applied yet: the "
    "applier's backlog",
    "stripe_events_received_oldest_age_seconds": "age of the oldest event waiting for the "
    "applier: its lag",
    "outbox_backlog": "outbox deliveries not delivered yet, per consumer",
    "outbox_oldest_pending_age_seconds": "age of the oldest event not delivered yet, per consumer",
    "outbox_dead_letters": "outbox deliveries that used up their attempts, per consumer",
    "holds_active": "holds reserving credits now, per currency",
    "holds_active_amount_minor": "credits held now, in minor units, per currency",
    "audit_chain_problems": "audit-chain problems among the newest 1000 audit rows and their "
    "chains' heads (the full check: SELECT * FROM tollgate.verify_audit_chain())",
}


def multiprocess() -> bool:
    """Whether prometheus-client keeps values in PROMETHEUS_MULTIPROC_DIR's files (decided when
    it was first imported)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Metrics:
    """One app's metrics (a registry of its own, so apps in one process do not mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "tollgate_http_request_duration_seconds",
            "time from a request's arrival to the end of its answer",
            ["method", "route", "status_class"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "tollgate_stripe_webhooks",
            "Stripe webhooks answered, by outcome or by the error code of a refusal",
            ["outcome"],
            registry=self.registry,
        )
        self.pool_gauges = {
            key: Gauge(
                f"tollgate_db_pool_{name}",
                text,
                multiprocess_mode="livesum",
                registry=self.registry,
            )
            for key, (name, text) in POOL_GAUGES.items()
        }
        self.pool_counters = {
            key: Counter(f"tollgate_db_pool_{name}", text, registry=self.registry)
            for key, (name, text, _) in POOL_COUNTERS.items()
        }
        self._pool_seen: dict[str, int] = {}

    def observe(
        self, method: str, route: str | None, status: int, seconds: float, webhook: str | None
    ) -> None:
        self.requests.labels(
            method if method in METHODS else "other", route or "unmatched", status_class(status)
        ).observe(seconds)
        if webhook is not None:
            self.webhooks.labels(webhook).inc()

    def sync_pool(self, pool: Any) -> None:
        """Copy the pool's statistics into the metrics (counters by what grew since)."""
        stats: dict[str, int] = pool.get_stats()
        for key, gauge in self.pool_gauges.items():
            gauge.set(stats.get(key, 0))
        for key, counter in self.pool_counters.items():
            now, before = stats.get(key, 0), self._pool_seen.get(key, 0)
            if now > before:
                counter.inc((now - before) / POOL_COUNTERS[key][2])
            self._pool_seen[key] = now

    async def sync_pool_forever(self, pool: Any) -> None:
        """With several workers: each writes its pool's statistics, for any worker's scrape."""
        while True:
            self.sync_pool(pool)
            await asyncio.sleep(POOL_SYNC_SECONDS)

    def app_metrics(self) -> Iterable[Metric]:
        if multiprocess():
            # Every worker's files (prometheus_client.multiprocess has no type hints).
            found: Iterable[Metric] = MultiProcessCollector(None).collect()  # type: ignore[no-untyped-call]
            return found
        return self.registry.collect()

    @staticmethod
    def process_ended() -> None:
        """A worker's last step: its pool gauges stop counting in the sums."""
        if multiprocess():
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _Scrape:
    """The collector one scrape renders: the app's metrics and the database's gauges."""

    def __init__(self, *sources: Iterable[Metric]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source


async def database_gauges(pool: Any) -> list[Metric]:
    """api.metrics_v1() as gauges, and tollgate_db_up: 1 if it answered, else 0 (and nothing
    else: a scrape never fails because the database does)."""
    up = GaugeMetricFamily("tollgate_db_up", "1 when the database answered this scrape, else 0")
    try:
        async with asyncio.timeout(DATABASE_SECONDS):
            async with pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
                rows = await queries.metrics(conn)
    except Exception as exc:
        log.warning("metrics: the database did not answer: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    families: dict[str, GaugeMetricFamily] = {}
    for row in rows:
        names = sorted(row.labels)
        family = families.get(row.metric)
        if family is None:
            family = families[row.metric] = GaugeMetricFamily(
                f"tollgate_{row.metric}",
                DATABASE_GAUGES.get(row.metric, "see api.metrics_v1()"),
                labels=names,
            )
        family.add_metric([str(row.labels[n]) for n in names], float(row.value))
    return [up, *families.values()]


def _authorized(request: Request) -> bool:
    token = request.app.state.settings.metrics_token
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


async def endpoint(request: Request) -> Response:
    """GET /metrics."""
    if not _authorized(request):
        return errors.error_response(
            401,
            "invalid_metrics_token",
            "send METRICS_TOKEN as Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    metrics: Metrics = request.app.state.metrics
    pool = request.app.state.pool
    metrics.sync_pool(pool)
    database = await database_gauges(pool)
    body = generate_latest(_Scrape(metrics.app_metrics(), database))
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
