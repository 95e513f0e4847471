"""Outbox benchmark: commit -> listener handler latency, and how fast a backlog drains.

    python -m bench.outbox [--events 200] [--backlog 20000]

Runs `tollgate listen` as its own process with a probe handler that notes when each event
arrives. Latency: events committed one at a time (a settled transaction each), from the moment
COMMIT returns to the moment the handler runs. Drain: a backlog written while no listener runs,
then handled by one listener; events per second between the first and the last handled.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

from bench.ledger import fresh_database, save, server_dsn
from db.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent


def start_listener(dsn: str, consumer: str, probe: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "listen",
            "--consumer",
            consumer,
            "--from-start",
            "--handler",
            "bench.outbox_probe:record",
            "--batch",
            "500",
        ],
        cwd=ROOT,
        env=os.environ | {"DATABASE_URL": dsn, "TOLLGATE_BENCH_PROBE": str(probe)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Probe:
    """The probe file's arrivals (event id -> first time handled), read on from where the last
    look stopped: rereading the whole file every look would compete with the listener."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, float] = {}
        self.offset = 0
        self.partial = ""

    def arrivals(self) -> dict[str, float]:
        if not self.path.exists():
            return self.seen
        with self.path.open() as f:
            f.seek(self.offset)
            lines = (self.partial + f.read()).split("\n")
            self.offset = f.tell()
        self.partial = lines.pop()
        for line in lines:
            event, _, at = line.partition(" ")
            self.seen.setdefault(event, float(at))
        return self.seen


def wait_for(probe: Probe, count: int, timeout: float = 300) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while len(seen := probe.arrivals()) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {count} events arrived")
        time.sleep(0.05)
    return seen


def settle(conn: psycopg.Connection[Any], reference: str) -> str:
    with conn.transaction():
        conn.execute(
            "INSERT INTO tollgate.transactions (account_uuid, reference, amount, currency)"
            " SELECT id, %s, 100, 'USD' FROM tollgate.accounts WHERE external_id = 'bench_outbox'",
            (reference,),
        )
        conn.execute(
            "UPDATE tollgate.transactions SET status = 'settled' WHERE reference = %s", (reference,)
        )
        row = conn.execute(
            "SELECT event_id::text FROM tollgate.outbox WHERE payload ->> 'reference' = %s",
            (reference,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def run(admin_dsn: str, *, events: int = 200, backlog: int = 20_000) -> dict[str, Any]:
    """Commit -> handler latency over ``events`` single commits, then a ``backlog`` drain."""
    with ExitStack() as stack:
        dsn = fresh_database(admin_dsn, "tollgate_bench_outbox")
        migrate(dsn)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO tollgate.accounts (external_id) VALUES ('bench_outbox')")

            # Latency: one event per commit, the listener waiting.
            probe = tmp / "latency.txt"
            listener = start_listener(dsn, "latency", probe)
            latency_probe = Probe(probe)
            stack.callback(listener.kill)
            settle(conn, "warm-up")
            wait_for(latency_probe, 1, timeout=60)
            committed: dict[str, float] = {}
            for i in range(events):
                event = settle(conn, f"lat-{i}")
                committed[event] = time.time()
                time.sleep(0.005)
            seen = wait_for(latency_probe, events + 1)
            listener.kill()
            latencies = [(seen[e] - t) * 1000 for e, t in committed.items()]

            # Drain: a backlog written while nobody listens (payments of 2,000 accounts
            # succeeding, one payment.settled each), then one listener. Not settlements: 20,000
            # of them in one statement update one clearing row 20,000 times in one
            # transaction, which PostgreSQL makes quadratic (see docs/PERFORMANCE.md).
            with conn.transaction():
                conn.execute("ALTER TABLE tollgate.payment_intents DISABLE TRIGGER USER")
                conn.execute(
                    "INSERT INTO tollgate.accounts (external_id)"
                    " SELECT 'drain_' || g FROM generate_series(1, 2000) g"
                )
                conn.execute(
                    "INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount,"
                    " currency, status, purpose)"
                    " SELECT a.id, 'pi_drain_' || g, 100, 'USD', 'requires_payment_method',"
                    " 'report.generate' FROM generate_series(1, %s) g"
                    " JOIN tollgate.accounts a ON a.external_id = 'drain_' || (g %% 2000 + 1)",
                    (backlog,),
                )
                conn.execute("ALTER TABLE tollgate.payment_intents ENABLE TRIGGER USER")
            conn.execute(
                "UPDATE tollgate.payment_intents SET status = 'succeeded'"
                " WHERE stripe_id LIKE 'pi_drain_%'"
            )
            drain_probe = tmp / "drain.txt"
            drainer = start_listener(dsn, "drain", drain_probe)
            stack.callback(drainer.kill)
            total = events + 1 + backlog
            seen = wait_for(Probe(drain_probe), total)
            drainer.kill()
            times = sorted(seen.values())
    return {
        "latency_events": events,
        "commit_to_handler_p50_ms": round(statistics.median(latencies), 2),
        "commit_to_handler_p99_ms": round(percentile(latencies, 99), 2),
        "commit_to_handler_max_ms": round(max(latencies), 2),
        "drain_events": total,
        "drain_events_per_s": round(total / (times[-1] - times[0])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=20_000)
    args = parser.parse_args()
    with ExitStack() as stack:
        report = run(server_dsn(stack), events=args.events, backlog=args.backlog)
    save("outbox", report)


if __name__ == "__main__":
    main()
