"""`make bench`: every workload in one run, each next to a ceiling measured in the same run.

    python -m bench.run [--seconds 10] [--accounts 100000] [--payments 1000000]
                        [--history 1000000] [--scale 10] [--profile]

One PostgreSQL (DATABASE_URL, or a fresh embedded one) serves every workload in turn:
pgbench's TPC-B and select-only (ceiling D), transfers through api.transfer_v1, `tollgate
serve` under wrk (ceiling H: a no-op route and a pooled SELECT 1 route; authorize, usage,
webhooks, a duplicate-webhook storm; authorize and webhook ingest once more through PgBouncer
in transaction pooling mode, informational rows next to direct), and the outbox through
`tollgate listen`. Writes bench/results/report.json, report.md (the table) and report.png
(each figure against its goal).
``--scale N`` then measures ceilings, transfers and the HTTP workloads again on N times the
data (accounts, payments, ledger history) and adds the growth rows (report-scaleN.*);
``--profile`` adds bench/results/profile.md (bench/profile.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import make_conninfo

from bench import http, ledger, outbox, profile
from bench.ledger import RESULTS


@dataclass(frozen=True)
class Row:
    workload: str
    figure: str  # what was measured, as shown
    ratio: float | None  # against its ceiling, when it has one
    ceiling: str
    goal: str
    met: bool
    score: float  # the figure over its goal (1.0 = just met), for the chart


def rows(r: dict[str, Any]) -> list[Row]:
    h, lg, ob = r["http"], r["ledger"], r["outbox"]
    select1 = h["ceiling_select1"]["requests_per_s"]
    tpcb = r["ceilings_d"]["tpcb"]["tps"]
    hook, storm, auth = h["webhooks"], h["webhook_storm"], h["authorize"]
    hook_ratio = hook["requests_per_s"] / select1
    auth_ratio = auth["requests_per_s"] / select1
    storm_ratio = storm["requests_per_s"] / hook["requests_per_s"]
    hook_once = hook["events_stored"] == hook["events_applied"] == hook["settled_notices"]
    storm_once = storm["events_stored"] == storm["events_applied"] == storm["settled_notices"]
    apply_p99 = hook["apply_ms"]["p99"]
    batch_ratio = lg["batch_transfers_per_s"] / tpcb
    transfer_ratio = lg["transfers_per_s"] / tpcb
    usage = h["usage"]["events_per_s"]
    p50, p99 = ob["commit_to_handler_p50_ms"], ob["commit_to_handler_p99_ms"]
    drain = ob["drain_events_per_s"]
    found = [
        Row(
            "Stripe webhook ingest, distinct events, 16 conns",
            f"{hook['requests_per_s']:,.0f} req/s, p99 {hook['p99_ms']} ms",
            hook_ratio,
            f"SELECT 1 route {select1:,.0f} req/s",
            ">= 0.7x SELECT 1; p99 < 50 ms",
            hook_ratio >= 0.7 and hook["p99_ms"] < 50,
            min(hook_ratio / 0.7, 50 / hook["p99_ms"]),
        ),
        Row(
            "webhook events applied (payment, outbox, audit)",
            f"{hook['events_applied']:,} of {hook['events_stored']:,}, "
            f"{hook['settled_notices']:,} notices; 200 -> applied p99 {apply_p99} ms",
            None,
            "",
            "every event applied exactly once; p99 < 250 ms",
            hook_once and apply_p99 is not None and apply_p99 < 250,
            min(250 / max(apply_p99, 1), 4.0) if hook_once and apply_p99 is not None else 0.0,
        ),
        Row(
            "duplicate-webhook storm (each event 5x)",
            f"{storm['requests_per_s']:,.0f} req/s; applied once: {'yes' if storm_once else 'NO'}",
            storm_ratio,
            f"distinct webhooks {hook['requests_per_s']:,.0f} req/s",
            "same rate as distinct (>= 0.9x); each applied once",
            storm_ratio >= 0.9 and storm_once,
            storm_ratio / 0.9 if storm_once else 0.0,
        ),
        Row(
            "POST /v1/authorize, 1M payments / 100k accounts",
            f"{auth['requests_per_s']:,.0f} req/s, p99 {auth['p99_ms']} ms",
            auth_ratio,
            f"SELECT 1 route {select1:,.0f} req/s",
            ">= 0.5x SELECT 1; p99 < 25 ms",
            auth_ratio >= 0.5 and auth["p99_ms"] < 25,
            min(auth_ratio / 0.5, 25 / auth["p99_ms"]),
        ),
        Row(
            "single transfers via SQL, 20 clients, 50 accounts",
            f"{lg['transfers_per_s']:,.0f} tps; ledger discrepancies after: "
            f"{lg['ledger_discrepancies_after']}",
            transfer_ratio,
            f"pgbench TPC-B {tpcb:,.0f} tps",
            ">= 0.5x TPC-B; every guarantee kept",
            transfer_ratio >= 0.5 and lg["ledger_discrepancies_after"] == 0,
            transfer_ratio / 0.5,
        ),
        Row(
            "batch transfers via SQL, 50 a call, 20 clients",
            f"{lg['batch_transfers_per_s']:,.0f} transfers/s",
            batch_ratio,
            f"pgbench TPC-B {tpcb:,.0f} tps",
            ">= 3x TPC-B in transfers/s",
            batch_ratio >= 3 and lg["ledger_discrepancies_after"] == 0,
            batch_ratio / 3,
        ),
        Row(
            "usage events, batches of 1000",
            f"{usage:,.0f} events/s",
            None,
            "",
            ">= 60,000 events/s",
            usage >= 60_000,
            usage / 60_000,
        ),
        Row(
            "outbox: commit -> listener handler",
            f"p50 {p50} ms, p99 {p99} ms",
            None,
            "",
            "p50 < 5 ms, p99 < 50 ms",
            p50 < 5 and p99 < 50,
            min(5 / p50, 50 / p99),
        ),
        Row(
            "outbox: backlog drain inside the full run, one listener",
            f"{drain:,.0f} events/s",
            None,
            "",
            ">= 10,000 events/s",
            drain >= 10_000,
            drain / 10_000,
        ),
    ]
    return found + pgbouncer_rows(r) + growth_rows(r)


INFORMATIONAL = "informational (no goal)"


def pgbouncer_rows(r: dict[str, Any]) -> list[Row]:
    """Authorize and webhook ingest through PgBouncer (transaction pooling), next to the same
    workloads straight to PostgreSQL in the same run: what the pooler costs or gives."""
    h = r["http"]
    p = h.get("pgbouncer")
    if p is None:
        return []
    found = []
    for name, key in (("authorize", "authorize"), ("Stripe webhook ingest", "webhooks")):
        direct, pooled = h[key], p[key]
        ratio = pooled["requests_per_s"] / direct["requests_per_s"]
        found.append(
            Row(
                f"{name} through PgBouncer (transaction mode, {p['server_connections']} "
                "server conns)",
                f"{pooled['requests_per_s']:,.0f} req/s, p99 {pooled['p99_ms']} ms",
                ratio,
                f"direct: {direct['requests_per_s']:,.0f} req/s, p99 {direct['p99_ms']} ms",
                INFORMATIONAL,
                True,
                ratio,
            )
        )
    hook = p["webhooks"]
    found.append(
        Row(
            "webhook events applied, through PgBouncer",
            f"{hook['events_applied']:,} of {hook['events_stored']:,}, "
            f"{hook['settled_notices']:,} notices; 200 -> applied p99 {hook['apply_ms']['p99']} ms",
            None,
            "",
            INFORMATIONAL,
            hook["events_stored"] == hook["events_applied"] == hook["settled_notices"],
            1.0,
        )
    )
    return found


def growth_rows(r: dict[str, Any]) -> list[Row]:
    """At ``scale`` times the data: each figure over its ceiling, against the same at 1x
    (so a slower machine minute does not read as growth). Goal: within 20%."""
    g = r.get("growth")
    if g is None:
        return []
    n = g["scale"]
    one = {
        "webhook ingest": r["http"]["webhooks"]["requests_per_s"]
        / r["http"]["ceiling_select1"]["requests_per_s"],
        "authorize": r["http"]["authorize"]["requests_per_s"]
        / r["http"]["ceiling_select1"]["requests_per_s"],
        "single transfers": r["ledger"]["transfers_per_s"] / r["ceilings_d"]["tpcb"]["tps"],
    }
    big = {
        "webhook ingest": g["http"]["webhooks"]["requests_per_s"]
        / g["http"]["ceiling_select1"]["requests_per_s"],
        "authorize": g["http"]["authorize"]["requests_per_s"]
        / g["http"]["ceiling_select1"]["requests_per_s"],
        "single transfers": g["ledger"]["transfers_per_s"] / g["ceilings_d"]["tpcb"]["tps"],
    }
    raw = {
        "webhook ingest": (
            r["http"]["webhooks"]["requests_per_s"],
            g["http"]["webhooks"]["requests_per_s"],
            "req/s",
        ),
        "authorize": (
            r["http"]["authorize"]["requests_per_s"],
            g["http"]["authorize"]["requests_per_s"],
            "req/s",
        ),
        "single transfers": (r["ledger"]["transfers_per_s"], g["ledger"]["transfers_per_s"], "tps"),
    }
    found = []
    for name, (at1, atn, unit) in raw.items():
        ratio = big[name] / one[name]
        found.append(
            Row(
                f"growth: {name} at {n}x the data",
                f"{atn:,.0f} {unit} at {n}x, {at1:,.0f} at 1x",
                ratio,
                "its own ratio to its ceiling at 1x",
                ">= 0.8 (within 20%)",
                ratio >= 0.8,
                ratio / 0.8,
            )
        )
    return found


def table(report: dict[str, Any], found: list[Row]) -> str:
    h, d = report["http"], report["ceilings_d"]
    lines = [
        f"Run {report['finished']} on {report['machine']}, {report['elapsed_s']:.0f} s.",
        "",
        "| workload | measured | ceiling (same run) | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in found:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        met = "**no**" if not row.met else ("" if row.goal == INFORMATIONAL else "yes")
        lines.append(
            f"| {row.workload} | {row.figure} | {row.ceiling} | {ratio} | {row.goal} | {met} |"
        )
    lines += [
        "",
        "| ceiling | measured |",
        "| --- | --- |",
        f"| H: no-op route (/healthz) | {h['ceiling_noop']['requests_per_s']:,.0f} req/s, "
        f"p99 {h['ceiling_noop']['p99_ms']} ms |",
        f"| H: one pooled SELECT 1 (/readyz) | {h['ceiling_select1']['requests_per_s']:,.0f} "
        f"req/s, p99 {h['ceiling_select1']['p99_ms']} ms |",
        f"| D: pgbench TPC-B, 20 clients | {d['tpcb']['tps']:,.0f} tps |",
        f"| D: pgbench select-only, 20 clients | {d['select_only']['tps']:,.0f} tps |",
        "",
        f"Data: {h['data']}; ledger: {report['ledger']['history']}. The SELECT 1 route's pool: "
        f"{h['ceiling_select1']['pool']['queued']:,} of "
        f"{h['ceiling_select1']['pool']['requests']:,} requests waited for a connection, "
        f"{h['ceiling_select1']['pool']['wait_s']} s in all.",
    ]
    g = report.get("growth")
    if g is not None:
        lines += [
            "",
            f"At {g['scale']}x: {g['http']['data']}; ledger: {g['ledger']['history']}. "
            f"Ceilings then: SELECT 1 route "
            f"{g['http']['ceiling_select1']['requests_per_s']:,.0f} req/s, TPC-B "
            f"{g['ceilings_d']['tpcb']['tps']:,.0f} tps.",
        ]
    return "\n".join(lines) + "\n"


def chart(found: list[Row], path: Any) -> None:
    """Each workload's figure over its goal: a bar past the line at 1 meets it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = [row for row in found if row.goal != INFORMATIONAL]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [row.workload for row in found][::-1]
    scores = [min(row.score, 4.0) for row in found][::-1]
    colours = ["#2e7d32" if row.met else "#c62828" for row in found][::-1]
    ax.barh(names, scores, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("measured / goal (1 = goal just met; capped at 4)")
    ax.set_title("Tollgate benchmarks against their goals (same run, same machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def measure_all(
    admin_dsn: str, *, seconds: int, accounts: int, payments: int, history: int
) -> dict[str, Any]:
    """Ceilings D, the ledger and the HTTP workloads on one data set."""
    found: dict[str, Any] = {}
    print(f"ceiling D: pgbench TPC-B and select-only ({accounts:,} accounts)", flush=True)
    found["ceilings_d"] = ledger.ceilings(admin_dsn, 20, seconds)
    ledger.quiet(admin_dsn, "tollgate_bench_tpcb")
    print(f"ledger transfers over {history:,} entries of history", flush=True)
    found["ledger"] = ledger.run(admin_dsn, seconds=seconds, history=history)
    ledger.quiet(admin_dsn, "tollgate_bench_ledger")
    print(f"HTTP: seeding {payments:,} payments, then ceilings H and the workloads", flush=True)
    found["http"] = http.run(admin_dsn, accounts=accounts, payments=payments, seconds=seconds)
    ledger.quiet(admin_dsn, "tollgate_bench_http")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="length of each measurement")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=1_000_000, help="ledger entries before")
    parser.add_argument(
        "--scale",
        type=int,
        default=1,
        help="also measure ingest, authorize and transfers at this many times the data",
    )
    parser.add_argument(
        "--profile", action="store_true", help="pg_stat_statements per workload (profile.md)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "seconds_per_measurement": args.seconds,
    }
    with ExitStack() as stack:
        admin_dsn = ledger.server_dsn(stack)
        # Commit times let the report say when each webhook's event was applied.
        ledger.restart_with(
            admin_dsn,
            stack,
            {"track_commit_timestamp": "on"} | (profile.SETTINGS if args.profile else {}),
        )
        if args.profile:
            profile.enable(admin_dsn)
        report |= measure_all(
            admin_dsn,
            seconds=args.seconds,
            accounts=args.accounts,
            payments=args.payments,
            history=args.history,
        )
        print("outbox", flush=True)
        outbox_dsn = make_conninfo(admin_dsn, dbname="tollgate_bench_outbox")
        with profile.phase(outbox_dsn, "outbox"):
            report["outbox"] = outbox.run(admin_dsn)
        ledger.quiet(admin_dsn, "tollgate_bench_outbox")
        if args.scale > 1:
            n = args.scale
            print(f"growth: the same at {n}x the data", flush=True)
            report["growth"] = {"scale": n} | measure_all(
                admin_dsn,
                seconds=args.seconds,
                accounts=args.accounts * n,
                payments=args.payments * n,
                history=args.history * n,
            )
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    found = rows(report)
    report["goals"] = [row.__dict__ for row in found]
    if args.profile:
        report["profile"] = profile.FOUND
    RESULTS.mkdir(exist_ok=True)
    name = "report" if args.scale == 1 else f"report-scale{args.scale}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(report, found)
    (RESULTS / f"{name}.md").write_text(text)
    chart(found, RESULTS / f"{name}.png")
    if args.profile:
        profile.write(RESULTS)
    print()
    print(text)
    print(f"written: {RESULTS}/{name}.json, {name}.md, {name}.png")


if __name__ == "__main__":
    main()
