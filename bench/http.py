"""HTTP benchmarks through `tollgate serve`: authorize, usage, Stripe webhook ingest, and a
duplicate-webhook storm, next to the stack's own ceilings measured in the same run.

    python -m bench.http [--accounts 100000] [--payments 1000000] [--seconds 10]

Seeds a fresh database with the accounts and payments (half the accounts hold a paid
entitlement for the action, 1% hold credits, the rest are refused with 402) and with payments
awaiting their webhook, starts `tollgate serve` with one worker per core, and drives it with wrk
from a separate process. Ceilings: a no-op route (/healthz) and a route doing one pooled
`SELECT 1` (/readyz). Webhooks: distinct events, each signed (Stripe's scheme) before the run
and read by wrk from a file; the storm sends each event five times, near-simultaneously.
Behind PgBouncer: authorize and webhook ingest again, in the same run, through a second
`tollgate serve` whose DATABASE_URL is a PgBouncer in transaction pooling mode (db/pgbouncer.py,
as the tests start it; its login a member of tollgate_app, LISTEN direct), informational.
``--only authorize,webhooks,pgbouncer`` runs just those (with the seed). Needs wrk
(Debian/Ubuntu: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from api.stripe_emulator import free_port, wait_for_port
from bench import profile
from bench.ledger import fresh_database, save, server_dsn
from db import keys, queries
from db.migrate import migrate
from db.pgbouncer import PgBouncer

ROOT = Path(__file__).resolve().parent.parent

SEED = Path(__file__).with_name("seed_gating.sql")

WORKLOADS = ("ceilings", "authorize", "usage", "webhooks", "storm", "pgbouncer")
# The API's login through PgBouncer (a member of tollgate_app only), and PgBouncer's server
# connections per database and user: fewer than the API's 2 x 16 client connections.
POOLED_LOGIN = "tollgate_bench_pooled_api"
POOLED_SERVERS = 16

# Each wrk thread has its own Lua state: tid numbers it, and seeds its random numbers (unseeded,
# every thread would send the same accounts in the same order).
LUA_COMMON = """
counts = {}
local threads = {}
local next_tid = 0
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function init(args)
  counts = {}
  math.randomseed(os.time() * 16 + tid)
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts") or {}
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  io.write("STATUS " .. table.concat(parts, ",") .. "\\n")
end
"""


def authorize_script(key: str, accounts: int) -> str:
    return (
        LUA_COMMON
        + f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
request = function()
  local n = math.random(1, {accounts})
  local body = '{{"action":"report.generate","account_id":"acct_' .. n .. '","hold_seconds":5}}'
  return wrk.format(nil, "/v1/authorize", nil, body)
end
"""
    )


def usage_script(key: str, accounts: int, batch: int) -> str:
    return (
        LUA_COMMON
        + f"""
local sent = 0
local tag = nil
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
request = function()
  tag = tag or (tid .. "x" .. math.random(1, 1000000000))
  sent = sent + 1
  local account = "acct_" .. math.random(1, {accounts})
  local events = {{}}
  for i = 1, {batch} do
    events[i] = '{{"id":"' .. tag .. '-' .. sent .. '-' .. i .. '","account_id":"' .. account ..
      '","metric":"calls","quantity":1,"occurred_at":"2026-11-21T12:00:00Z"}}'
  end
  return wrk.format(nil, "/v1/usage", nil, '{{"events":[' .. table.concat(events, ",") .. ']}}')
end
"""
    )


def plain_script() -> str:
    return LUA_COMMON


def webhook_script(events_file: Path) -> str:
    """Each wrk thread sends its own share of the pre-signed events, in file order."""
    return (
        LUA_COMMON
        + f"""
local lines = {{}}
local at = 0
function init(args)
  counts = {{}}
  local n = 0
  for line in io.lines("{events_file}") do
    if n % 2 == tid then table.insert(lines, line) end
    n = n + 1
  end
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  at = at % #lines + 1
  local signature, body = lines[at]:match("^([^\t]*)\t(.*)$")
  wrk.headers["Stripe-Signature"] = signature
  return wrk.format(nil, "/v1/webhooks/stripe", nil, body)
end
"""
    )


def signed_events(path: Path, secret: str, stripe_ids: list[str], prefix: str, copies: int) -> int:
    """Write one line per delivery, "signature<TAB>body": payment_intent.succeeded for each
    payment, each event ``copies`` times in a row. Returns the number of lines."""
    now = int(time.time())
    with path.open("w") as out:
        for n, stripe_id in enumerate(stripe_ids):
            body = json.dumps(
                {
                    "id": f"evt_{prefix}_{n}",
                    "type": "payment_intent.succeeded",
                    "created": now,
                    "data": {
                        "object": {
                            "object": "payment_intent",
                            "id": stripe_id,
                            "status": "succeeded",
                        }
                    },
                },
                separators=(",", ":"),
            )
            mac = hmac.new(secret.encode(), f"{now}.{body}".encode(), hashlib.sha256).hexdigest()
            out.writelines(f"t={now},v1={mac}\t{body}\n" for _ in range(copies))
    return len(stripe_ids) * copies


WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
WRK_PCT = re.compile(r"^\s+(50|90|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
WRK_STATUS = re.compile(r"^STATUS (.*)$", re.MULTILINE)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, script: str, seconds: int, connections: int) -> dict[str, Any]:
    """wrk with two threads (its own process) against ``url``: rate, latency, statuses."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    rps = WRK_RPS.search(out)
    status = WRK_STATUS.search(out)
    if rps is None:
        raise SystemExit(f"could not read wrk's report:\n{out}")
    pct = {p: round(_ms(v, u), 2) for p, v, u in WRK_PCT.findall(out)}
    return {
        "requests_per_s": float(rps.group(1)),
        "p50_ms": pct.get("50"),
        "p99_ms": pct.get("99"),
        "statuses": status.group(1) if status else "",
    }


def seed(dsn: str, accounts: int, payments: int, awaiting: int) -> str:
    """The gating data set, plus ``awaiting`` payments spread over the accounts, waiting for
    their webhook (pi_hook_1...). Returns an admin key."""
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Client-side binding: the seed is several statements.
        psycopg.ClientCursor(conn).execute(
            SEED.read_text(), {"accounts": accounts, "payments": payments}
        )
        admin = keys.create(conn, account="bench_ops", is_admin=True).key
        conn.execute(
            "SELECT * FROM tollgate.set_action_price('report.generate', 0.50, 'USD', NULL)"
        )
        for i in range(1, accounts + 1, 100):  # 1% of the accounts hold credits
            conn.execute(
                "SELECT api.create_transaction_v1(%s, %s, 'credits', 100000, 'USD', NULL)",
                (admin, f"acct_{i}"),
            )
            conn.execute(
                "SELECT api.move_transaction_v1(%s, %s, 'credits', 'settled')", (admin, f"acct_{i}")
            )
        with conn.transaction():  # written as Stripe created them, triggers off (as above)
            conn.execute("ALTER TABLE tollgate.payment_intents DISABLE TRIGGER USER")
            conn.execute(
                "INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency,"
                " status, purpose)"
                " SELECT a.id, 'pi_hook_' || g, 1000, 'USD', 'requires_payment_method', 'credits'"
                " FROM generate_series(1, %s) g"
                " JOIN tollgate.accounts a ON a.external_id = 'acct_' || (g %% %s + 1)",
                (awaiting, accounts),
            )
            conn.execute("ALTER TABLE tollgate.payment_intents ENABLE TRIGGER USER")
        conn.execute("VACUUM ANALYZE")
    return admin


def serve(stack: ExitStack, dsn: str, secret: str, settings: dict[str, str] | None = None) -> str:
    """`tollgate serve` as README says, one worker per core, with the webhook secret registered
    in the database (PostgreSQL verifies the signatures); its URL. ``dsn``: the operator's
    connection, the service's too unless ``settings`` says otherwise (DATABASE_URL, ...)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        queries.operator_add_webhook_secret(conn, secret=secret, label="bench")
    port = free_port()
    env = os.environ | {
        "ENVIRONMENT": "test",
        "DATABASE_URL": dsn,
        "STRIPE_API_KEY": "sk_test_bench",
        # Every connection opened up front, so the measurements see no pool growth, and as
        # many per worker as wrk has connections, so no request ever waits for one (however
        # the connections fall on the workers): the pooled SELECT 1 route is then a ceiling,
        # not a measure of a pool's queue.
        "DB_POOL_MIN_SIZE": "16",
        "DB_POOL_MAX_SIZE": "16",
    }
    env.update(settings or {})
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", str(os.cpu_count() or 1)),
            *("--log-level", "warning"),
        ],
        cwd=ROOT,
        env=env,
    )
    stack.callback(stop, process)
    wait_for_port(port, timeout=30, process=process)
    return f"http://127.0.0.1:{port}"


def behind_pgbouncer(stack: ExitStack, admin_dsn: str, dsn: str) -> dict[str, str]:
    """A PgBouncer (transaction pooling, stopped with ``stack``) in front of the server, and
    the settings of a `tollgate serve` deployed behind it (docs/OPERATIONS.md)."""
    password = secrets.token_urlsafe(18)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        found = conn.execute("SELECT FROM pg_roles WHERE rolname = %s", [POOLED_LOGIN]).fetchone()
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.SQL("ALTER" if found else "CREATE"),
                sql.Identifier(POOLED_LOGIN),
                sql.Literal(password),
            )
        )
        conn.execute(sql.SQL("GRANT tollgate_app TO {}").format(sql.Identifier(POOLED_LOGIN)))
        admin, admin_password = conn.info.user, conn.info.password
    bouncer = PgBouncer(
        admin_dsn,
        users={admin: admin_password or os.environ.get("PGPASSWORD", ""), POOLED_LOGIN: password},
        admin=admin,
        pool_size=POOLED_SERVERS,
    )
    stack.callback(bouncer.stop)
    return {
        "DATABASE_URL": bouncer.dsn(str(conninfo_to_dict(dsn)["dbname"]), POOLED_LOGIN, password),
        "DATABASE_ROLE": "",
        "DATABASE_LISTEN_URL": dsn,
    }


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=20)


def applied_once(dsn: str, prefix: str, timeout: float = 120.0) -> dict[str, Any]:
    """How the events of one run ended, once every stored one is applied (or ``timeout``):
    each must be stored once, applied once and announced once. apply_ms: from the event's
    arrival to its application's commit, by the database's clock (p50, p99, max)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            found = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE state = 'applied'),"
                " (SELECT count(*) FROM tollgate.outbox o WHERE o.topic = 'payment.settled'"
                "   AND o.payload ->> 'stripe_id' IN (SELECT stripe_object_id"
                "   FROM tollgate.payment_events WHERE id LIKE %s))"
                " FROM tollgate.payment_events WHERE id LIKE %s",
                (f"evt_{prefix}_%", f"evt_{prefix}_%"),
            ).fetchone()
            assert found is not None
            if found[0] == found[1] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # Applied: when the applier's transaction committed (track_commit_timestamp), else
        # when it started (processed_at), which leaves out the batch's own duration.
        committed = conn.execute("SHOW track_commit_timestamp").fetchone()
        applied_at = (
            "pg_xact_commit_timestamp(xmin)"
            if committed is not None and committed[0] == "on"
            else "processed_at"
        )
        lag = conn.execute(
            sql.SQL(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY ms), max(ms)"
                " FROM (SELECT 1000 * extract(epoch FROM {} - received_at) AS ms"
                "       FROM tollgate.payment_events WHERE id LIKE %s AND state = 'applied') x"
            ).format(sql.SQL(applied_at)),
            (f"evt_{prefix}_%",),
        ).fetchone()
    assert lag is not None
    pct = lag[0] or [None, None]
    return {
        "events_stored": found[0],
        "events_applied": found[1],
        "settled_notices": found[2],
        "apply_ms": {
            "p50": None if pct[0] is None else round(float(pct[0]), 1),
            "p99": None if pct[1] is None else round(float(pct[1]), 1),
            "max": None if lag[1] is None else round(float(lag[1]), 1),
        },
    }


POOL_COUNTERS = ("requests_total", "requests_queued_total", "requests_wait_seconds_total")


def pool_counters(url: str) -> dict[str, float]:
    """The pools' request counters, summed over the workers (GET /metrics)."""
    time.sleep(6)  # every worker publishes its pool's statistics every 5 s
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = dict.fromkeys(POOL_COUNTERS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("tollgate_db_pool_") and name[17:] in found:
            found[name[17:]] = float(value)
    return found


def run(
    admin_dsn: str,
    *,
    accounts: int = 100_000,
    payments: int = 1_000_000,
    seconds: int = 10,
    connections: int = 16,
    batch: int = 1000,
    hooks: int = 60_000,
    storm: int = 12_000,
    only: frozenset[str] = frozenset(WORKLOADS),
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    found: dict[str, Any] = {"workers": os.cpu_count(), "connections": connections}
    with ExitStack() as stack:
        dsn = fresh_database(admin_dsn, "tollgate_bench_http")
        started = time.monotonic()
        # Payments awaiting their webhook: for the distinct run, the storm, and the distinct
        # run through PgBouncer.
        admin_key = seed(dsn, accounts, payments, 2 * hooks + storm)
        found["data"] = (
            f"{accounts} accounts, {payments} payments "
            f"(seeded in {time.monotonic() - started:.0f} s)"
        )
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the seed's writes flushed before measuring
        secret = "whsec_bench_secret_0123456789abcdef"
        url = serve(stack, dsn, secret)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))

        run_wrk(f"{url}/readyz", plain_script(), 3, connections)  # warm-up, not reported
        if "ceilings" in only:
            found["ceiling_noop"] = run_wrk(f"{url}/healthz", plain_script(), seconds, connections)
            before = pool_counters(url)
            select1 = run_wrk(f"{url}/readyz", plain_script(), seconds, connections)
            after = pool_counters(url)
            select1["pool"] = {
                "requests": round(after["requests_total"] - before["requests_total"]),
                "queued": round(after["requests_queued_total"] - before["requests_queued_total"]),
                "wait_s": round(
                    after["requests_wait_seconds_total"] - before["requests_wait_seconds_total"],
                    3,
                ),
            }
            found["ceiling_select1"] = select1
        if "authorize" in only:
            with profile.phase(dsn, "authorize"):
                found["authorize"] = run_wrk(
                    url, authorize_script(admin_key, accounts), seconds, connections
                )
        if "usage" in only:
            with profile.phase(dsn, "usage"):
                usage = run_wrk(url, usage_script(admin_key, accounts, batch), seconds, 4)
            found["usage"] = usage | {"events_per_s": round(usage["requests_per_s"] * batch)}

        ids = [f"pi_hook_{n}" for n in range(1, 2 * hooks + storm + 1)]
        if "webhooks" in only:
            distinct_file = tmp / "distinct.tsv"
            signed_events(distinct_file, secret, ids[:hooks], "hook", 1)
            with profile.phase(dsn, "webhook ingest"):
                hook = run_wrk(url, webhook_script(distinct_file), seconds, connections)
                hook_outcome = applied_once(dsn, "hook")
            found["webhooks"] = hook | hook_outcome | {"distinct_available": hooks}
        if "storm" in only:
            storm_file = tmp / "storm.tsv"
            signed_events(storm_file, secret, ids[hooks : hooks + storm], "storm", 5)
            stormed = run_wrk(url, webhook_script(storm_file), seconds, connections)
            found["webhook_storm"] = stormed | applied_once(dsn, "storm") | {"copies": 5}
        if "pgbouncer" in only:
            settings = behind_pgbouncer(stack, admin_dsn, dsn)
            pooled = serve(stack, dsn, secret, settings)
            run_wrk(f"{pooled}/readyz", plain_script(), 3, connections)  # warm-up
            auth = run_wrk(pooled, authorize_script(admin_key, accounts), seconds, connections)
            pooled_file = tmp / "pooled.tsv"
            signed_events(pooled_file, secret, ids[hooks + storm :], "pooled", 1)
            hook = run_wrk(pooled, webhook_script(pooled_file), seconds, connections)
            found["pgbouncer"] = {
                "pool_mode": "transaction",
                "server_connections": POOLED_SERVERS,
                "authorize": auth,
                "webhooks": hook | applied_once(dsn, "pooled") | {"distinct_available": hooks},
            }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help=f"comma-separated, of: {', '.join(WORKLOADS)} (default: all)",
    )
    args = parser.parse_args()
    only = frozenset(w.strip() for w in args.only.split(",") if w.strip())
    if not only <= set(WORKLOADS):
        parser.error(f"--only: unknown {', '.join(sorted(only - set(WORKLOADS)))}")
    with ExitStack() as stack:
        report = run(
            server_dsn(stack),
            accounts=args.accounts,
            payments=args.payments,
            seconds=args.seconds,
            only=only,
        )
    save("http", report)


if __name__ == "__main__":
    main()
