"""Where the database time goes, per workload: `make bench PROFILE=1` (``--profile``).

The benchmark server is started with pg_stat_statements (every statement, nested ones too)
and ``track_functions = all``; each workload runs inside ``phase(dsn, name)``, which resets
both before and reads both after: the statements and the stored functions that took the most
time, with their calls. The figures of a profiled run are a little lower than a plain run's
(the extension times every statement), so the table of goals comes from a plain run and the
profile says what to change. Results: bench/results/profile.md and report.json["profile"].
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

# Filled by phase() when profiling is on: workload -> {"statements": [...], "functions": [...]}.
FOUND: dict[str, dict[str, list[dict[str, Any]]]] = {}
ENABLED = False

SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.max": "5000",
    "track_functions": "all",
}

TOP = 10


def enable(admin_dsn: str) -> None:
    """Turn profiling on for the server at ``admin_dsn``, which must have been started with
    SETTINGS (bench.ledger.restart_with does that for the benchmark's embedded server). A
    server of your own (DATABASE_URL) must have pg_stat_statements preloaded already."""
    global ENABLED
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()
        if preloaded is None or "pg_stat_statements" not in preloaded[0]:
            raise SystemExit(
                "profiling needs pg_stat_statements preloaded on DATABASE_URL's server: "
                "shared_preload_libraries = 'pg_stat_statements' in postgresql.conf, "
                "then restart it (or unset DATABASE_URL to use an embedded server)"
            )
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("ALTER SYSTEM SET track_functions = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    ENABLED = True


@contextmanager
def phase(dsn: str, name: str) -> Iterator[None]:
    """Profile what runs inside the block against the database at ``dsn`` (no-op when off)."""
    if not ENABLED:
        yield
        return
    database = conninfo_to_dict(dsn).get("dbname")
    # The extension lives in the server's "postgres" database; its view covers every database.
    with psycopg.connect(dsn, dbname="postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_reset()")
    except psycopg.OperationalError:  # created inside the block: its counters start at zero
        pass
    yield
    time.sleep(2)  # idle backends flush their function counters within a second or so
    with psycopg.connect(dsn, dbname="postgres", autocommit=True, row_factory=dict_row) as conn:
        statements = conn.execute(
            "SELECT s.toplevel, s.calls, round(s.total_exec_time::numeric, 1) AS total_ms,"
            " round((s.total_exec_time / greatest(s.calls, 1))::numeric, 3) AS mean_ms,"
            " s.rows, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 110) AS query"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = %s"
            " ORDER BY s.total_exec_time DESC LIMIT %s",
            (database, TOP),
        ).fetchall()
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        functions = conn.execute(
            "SELECT f.schemaname || '.' || f.funcname AS function, f.calls,"
            " round(f.self_time::numeric, 1) AS self_ms,"
            " round(f.total_time::numeric, 1) AS total_ms,"
            " round((1000 * f.self_time / greatest(f.calls, 1))::numeric, 1) AS self_us_per_call"
            " FROM pg_stat_user_functions f ORDER BY f.self_time DESC LIMIT %s",
            (TOP,),
        ).fetchall()
    FOUND[name] = {
        "statements": [{k: _plain(v) for k, v in r.items()} for r in statements],
        "functions": [{k: _plain(v) for k, v in r.items()} for r in functions],
    }


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def markdown() -> str:
    lines = ["# Where the database time went, per workload", ""]
    for name, found in FOUND.items():
        lines += [f"## {name}", "", "| function | calls | self ms | total ms | self us/call |"]
        lines.append("| --- | --- | --- | --- | --- |")
        lines += [
            f"| {f['function']} | {f['calls']} | {f['self_ms']} | {f['total_ms']} "
            f"| {f['self_us_per_call']} |"
            for f in found["functions"]
        ]
        lines += ["", "| statement | top level | calls | total ms | mean ms |"]
        lines.append("| --- | --- | --- | --- | --- |")
        lines += [
            f"| `{s['query'].replace('|', '/')}` | {'yes' if s['toplevel'] else 'no'} "
            f"| {s['calls']} | {s['total_ms']} | {s['mean_ms']} |"
            for s in found["statements"]
        ]
        lines.append("")
    return "\n".join(lines)


def write(results: Path) -> None:
    (results / "profile.md").write_text(markdown())
