"""Retention benchmark: what a write costs with a long history live, and after `tollgate
archive` moved that history to the archive tables.

    python -m bench.retention [--rows 300000] [--writes 2000]

Three writes, each one call on one connection, timed one by one (``--writes`` of each, new ids
every time): a Stripe event stored (``api.ingest_stripe_event_v1``, an event type Tollgate only
stores: the webhook's insert, its duplicate check in the live table and the archive), a usage
event (``api.record_usage_v2``, one event: the account's lock, the duplicate check in both,
the insert) and a transfer (``api.transfer_v1``: a posting, its audit row and its seal at
COMMIT). Measured three times: on a fresh database; with ``--rows`` Stripe events, usage
events and sealed audit rows of history live (bench/seed_retention.sql, 200 days old); and
after archiving all of it (``retention.archive_batch``, batches of 1,000, timed: rows per
second). Besides the time (mean, median, 99th percentile, which a busy shared machine makes
noisy), the shared buffers each write touched (EXPLAIN (ANALYZE, BUFFERS), mean of 200): the
work itself. Results in bench/results/retention.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

from bench.ledger import fresh_database, quiet, save, server_dsn
from db import keys, queries
from db.migrate import migrate

SEED = Path(__file__).with_name("seed_retention.sql")


def timed(calls: int, run: Any) -> dict[str, float]:
    """Milliseconds per call: mean, median, 99th percentile."""
    took = []
    for i in range(calls):
        start = time.perf_counter()
        run(i)
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return {
        "mean_ms": round(statistics.fmean(took), 3),
        "p50_ms": round(took[len(took) // 2], 3),
        "p99_ms": round(took[int(len(took) * 0.99)], 3),
    }


def blocks(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> int:
    """Shared buffers one call touched (hit or read), from EXPLAIN (ANALYZE, BUFFERS): the
    work a write does, without the noise of a shared machine's clock. Functions' own
    statements count toward the call's node."""
    row = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query,
        params,
    ).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def writes(dsn: str, label: str, calls: int) -> dict[str, dict[str, float]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        user = keys.create(conn, account=f"w_{label}").key
        admin = keys.create(conn, account=f"ops_{label}", is_admin=True).key
        conn.execute(
            "SELECT api.create_transaction_v1(%s, %s, 'fund', 1000000.00, 'USD', NULL)",
            (admin, f"w_{label}"),
        )
        conn.execute(
            "SELECT api.move_transaction_v1(%s, %s, 'fund', 'settled')", (admin, f"w_{label}")
        )
        keys.create(conn, account=f"to_{label}")
        tag = uuid.uuid4().hex[:8]

        def event_call(i: int) -> tuple[str, tuple[Any, ...]]:
            body = {
                "id": f"evt_{label}_{tag}_{i}",
                "type": "customer.updated",
                "created": int(time.time()),
                "data": {"object": {"object": "customer", "id": f"cus_{i}"}},
            }
            return "SELECT * FROM api.ingest_stripe_event_v1(%s::jsonb)", (json.dumps(body),)

        def usage_call(i: int) -> tuple[str, tuple[Any, ...]]:
            return (
                "SELECT * FROM api.record_usage_v2(%s,"
                " ARRAY[ROW(%s, NULL, NULL, 'tokens', 1, now())::api.usage_event_v1])",
                (user, f"{label}-{tag}-{i}"),
            )

        def transfer_call(i: int) -> tuple[str, tuple[Any, ...]]:
            return (
                "SELECT * FROM api.transfer_v1(%s, %s, %s, 0.01, 'USD', %s)",
                (user, f"w_{label}", f"to_{label}", f"{tag}-{i}"),
            )

        def event(i: int) -> None:
            conn.execute(*event_call(i))

        def usage(i: int) -> None:
            conn.execute(*usage_call(i))

        def transfer(i: int) -> None:
            conn.execute(*transfer_call(i))

        def buffers(call: Any) -> float:
            touched = [blocks(conn, *call(calls + 100 + i)) for i in range(200)]
            return round(statistics.fmean(touched), 1)

        for warm in (event, usage, transfer):  # plans and caches, before the clock runs
            for i in range(calls, calls + 50):
                warm(i)
        report = {
            "stripe_event": timed(calls, event),
            "usage_event": timed(calls, usage),
            "transfer": timed(calls, transfer),
        }
        for name, call in (
            ("stripe_event", event_call),
            ("usage_event", usage_call),
            ("transfer", transfer_call),
        ):
            report[name]["buffers_per_call"] = buffers(call)
        return report


def sizes(dsn: str) -> dict[str, int]:
    tables = (
        "payment_events",
        "payment_events_archive",
        "usage_events",
        "usage_events_archive",
        "audit_log",
        "audit_log_archive",
    )
    with psycopg.connect(dsn) as conn:
        return {
            t: int(conn.execute(f"SELECT count(*) FROM tollgate.{t}").fetchone()[0])  # type: ignore[index]
            for t in tables
        }


def archive_all(dsn: str) -> dict[str, int]:
    rates = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for kind in queries.ARCHIVE_KINDS:
            moved, start = 0, time.perf_counter()
            while n := queries.archive_batch(
                conn, kind=kind, older_than=dt.timedelta(days=30), batch=1000
            ):
                moved += n
            took = time.perf_counter() - start
            rates[kind] = round(moved / took) if moved else 0
        problems = conn.execute("SELECT count(*) FROM tollgate.verify_audit_chain()").fetchone()
        assert problems == (0,), f"the audit chain has problems after archiving: {problems}"
    return rates


def run(admin_dsn: str, rows: int, calls: int) -> dict[str, Any]:
    report: dict[str, Any] = {"rows": rows, "writes": calls}
    # The fresh database is one of its own: the history's audit rows must come first in id
    # order, as they would in a database that grew old (retention walks the trail in id order).
    fresh = fresh_database(admin_dsn, "tollgate_bench_retention_fresh")
    migrate(fresh)
    report["fresh"] = writes(fresh, "fresh", calls)
    quiet(admin_dsn, "tollgate_bench_retention_fresh")
    dsn = fresh_database(admin_dsn, "tollgate_bench_retention")
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            psycopg.ClientCursor(conn).execute(SEED.read_text(), {"rows": rows})
        conn.execute("VACUUM ANALYZE")
        problems = conn.execute("SELECT count(*) FROM tollgate.verify_audit_chain()").fetchone()
        assert problems == (0,), "the seeded audit chain does not verify"
    report["history_live"] = writes(dsn, "live", calls)
    report["sizes_before"] = sizes(dsn)
    report["archive_rows_per_second"] = archive_all(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    report["history_archived"] = writes(dsn, "archived", calls)
    report["sizes_after"] = sizes(dsn)
    quiet(admin_dsn, "tollgate_bench_retention")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()
    with ExitStack() as stack:
        report = run(server_dsn(stack), rows=args.rows, calls=args.writes)
    save("retention", report)


if __name__ == "__main__":
    main()
