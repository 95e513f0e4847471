"""Gating benchmark: POST /v1/authorize and POST /v1/usage through `tollgate serve`.

    python -m bench.gating [--accounts 100000] [--payments 1000000] [--seconds 20]

Seeds a fresh database with the accounts and payments (half the accounts hold a paid
entitlement for the action, 1% hold credits, the rest are refused with 402), starts
`tollgate serve` with one worker per core, and drives it with wrk from a separate process.
For scale, the same run measures the stack's own ceilings: a no-op route (/healthz) and a
route doing one pooled `SELECT 1` (/readyz). Needs wrk (Debian/Ubuntu: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

from api.stripe_emulator import free_port, wait_for_port
from bench.ledger import RESULTS, fresh_database
from db import keys
from db.embedded import EmbeddedServer
from db.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent

SEED = Path(__file__).with_name("seed_gating.sql")

LUA_COMMON = """
counts = {}
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  counts = {}
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
local tag = tostring(math.random(1, 1000000000))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
request = function()
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


WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
WRK_PCT = re.compile(r"^\s+(50|90|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
WRK_STATUS = re.compile(r"^STATUS (.*)$", re.MULTILINE)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, script: str, seconds: int, connections: int) -> dict[str, Any]:
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


def seed(dsn: str, accounts: int, payments: int) -> str:
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
        conn.execute("VACUUM ANALYZE")
    return admin


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")

    with ExitStack() as stack:
        admin_dsn = os.environ.get("DATABASE_URL")
        if not admin_dsn:
            server = EmbeddedServer(
                Path(tempfile.mkdtemp(prefix="tollgate-bench-")) / "data", temporary=True
            )
            stack.callback(server.stop)
            admin_dsn = server.dsn()
        dsn = fresh_database(admin_dsn, "tollgate_bench_gating")
        started = time.monotonic()
        admin_key = seed(dsn, args.accounts, args.payments)
        seeded = time.monotonic() - started

        port = free_port()
        env = os.environ | {
            "ENVIRONMENT": "test",
            "DATABASE_URL": dsn,
            "STRIPE_API_KEY": "sk_test_bench",
            "STRIPE_WEBHOOK_SECRET": "whsec_bench",
            # Every connection opened up front, so the measurements see no pool growth.
            "DB_POOL_MIN_SIZE": "8",
            "DB_POOL_MAX_SIZE": "8",
        }
        workers = str(os.cpu_count() or 1)
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                workers,
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        stack.callback(lambda: (serve.terminate(), serve.wait(timeout=20)))
        wait_for_port(port, timeout=30, process=serve)
        url = f"http://127.0.0.1:{port}"

        run_wrk(f"{url}/readyz", plain_script(), 3, args.connections)  # warm-up, not reported
        noop = run_wrk(f"{url}/healthz", plain_script(), args.seconds, args.connections)
        select1 = run_wrk(f"{url}/readyz", plain_script(), args.seconds, args.connections)
        auth = run_wrk(
            url, authorize_script(admin_key, args.accounts), args.seconds, args.connections
        )
        usage = run_wrk(url, usage_script(admin_key, args.accounts, args.batch), args.seconds, 4)

    report = {
        "data": f"{args.accounts} accounts, {args.payments} payments (seeded in {seeded:.0f} s)",
        "workers": workers,
        "connections": args.connections,
        "ceiling_noop_rps": noop["requests_per_s"],
        "ceiling_select1_rps": select1["requests_per_s"],
        "ceiling_select1_p99_ms": select1["p99_ms"],
        "authorize_rps": auth["requests_per_s"],
        "authorize_p50_ms": auth["p50_ms"],
        "authorize_p99_ms": auth["p99_ms"],
        "authorize_statuses": auth["statuses"],
        "authorize_vs_select1": round(auth["requests_per_s"] / select1["requests_per_s"], 3),
        "usage_events_per_s": round(usage["requests_per_s"] * args.batch),
        "usage_batch_p50_ms": usage["p50_ms"],
        "usage_statuses": usage["statuses"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gating.json").write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(k) for k in report)
    for k, v in report.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
