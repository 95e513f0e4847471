"""Process-level faults against `tollgate serve` running as its own process: PostgreSQL restarted
in the middle of a webhook stream, and the API killed with SIGKILL under load."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api import stripe_emulator
from db import keys
from db.embedded import EmbeddedServer
from tests.conftest import Emulator, register_webhook_secret
from tests.helpers import ledger_problems, sign, wait_applied

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    url: str
    webhook_secret: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def serve(dsn: str, emulator: Emulator, tmp: Path, *, workers: int = 1, **extra: str) -> Served:
    """`tollgate serve` in its own process group (its workers die with it); ``extra``: more
    environment (settings)."""
    port = stripe_emulator.free_port()
    secret = register_webhook_secret(dsn)
    env = os.environ | {
        "ENVIRONMENT": "test",
        "DATABASE_URL": dsn,
        "STRIPE_API_KEY": "sk_test_faults",
        "STRIPE_API_BASE": emulator.base,
        "DB_POOL_TIMEOUT": "1",
        **extra,
    }
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", str(workers), "--log-level", "warning"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stripe_emulator.wait_for_port(port, timeout=30, process=process)
    return Served(f"http://127.0.0.1:{port}", secret, process, log)


def kill(served: Served, sig: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.killpg(served.process.pid, sig)
    except ProcessLookupError:
        pass
    served.process.wait(timeout=20)


@pytest.fixture
def servers(emulator: Emulator, tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        if served.process.poll() is None:
            kill(served, signal.SIGTERM)


def seed_payments(
    db: psycopg.Connection[Any], key: str, n: int, currency: str = "USD"
) -> list[str]:
    """n payments recorded as Stripe created them (no Stripe call needed), their pi_ ids."""
    ids = [f"pi_fault_{i}_{uuid.uuid4().hex[:8]}" for i in range(n)]
    for i, stripe_id in enumerate(ids):
        db.execute(
            "SELECT api.finish_payment_v1(%s, (SELECT payment_id FROM api.begin_payment_v1("
            " %s, %s, NULL, 1000, %s, 'credits', NULL, NULL)), %s,"
            " 'requires_payment_method', NULL)",
            (key, key, f"seed-{i}", currency, stripe_id),
        )
    return ids


def succeeded(event_id: str, stripe_id: str) -> bytes:
    obj = {"object": "payment_intent", "id": stripe_id, "status": "succeeded"}
    body = {"id": event_id, "type": "payment_intent.succeeded", "created": int(time.time())}
    return json.dumps(body | {"data": {"object": obj}}).encode()


def post_event(http: httpx.Client, served: Served, payload: bytes) -> int | str:
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign(payload, served.webhook_secret),
    }
    try:
        return http.post(
            f"{served.url}/v1/webhooks/stripe", content=payload, headers=headers
        ).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__


@pytest.mark.restarts_postgres
def test_postgres_restarting_mid_webhook_stream_loses_and_doubles_nothing(
    restartable: EmbeddedServer,
    db_dsn: str,
    db: psycopg.Connection[Any],
    emulator: Emulator,
    servers: list[Served],
    tmp_path: Path,
) -> None:
    key = keys.create(db, account="stream").key
    stripe_ids = seed_payments(db, key, 200)
    db.close()
    served = serve(db_dsn, emulator, tmp_path)
    servers.append(served)

    events = {
        f"evt_stream_{i}": succeeded(f"evt_stream_{i}", pi) for i, pi in enumerate(stripe_ids)
    }
    work: queue.Queue[str] = queue.Queue()
    for event_id in events:
        work.put(event_id)
    answers: dict[str, list[int | str]] = {event_id: [] for event_id in events}
    done = threading.Event()

    def sender() -> None:
        with httpx.Client(timeout=30) as http:
            while True:
                try:
                    event_id = work.get_nowait()
                except queue.Empty:
                    return
                answers[event_id].append(post_event(http, served, events[event_id]))
                time.sleep(0.01)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    while work.qsize() > 150:
        time.sleep(0.01)
    restartable.pg_ctl("-w", "-m", "fast", "restart")
    for thread in threads:
        thread.join(timeout=120)
    done.set()

    first = [statuses[0] for statuses in answers.values()]
    assert set(first) <= {200, 503}, f"only applied or 'retry later': {set(first)}\n{served.tail()}"
    assert first.count(503) > 0, "the restart happened mid-stream: some deliveries were refused"

    # Stripe redelivers whatever did not get a 2xx, until it does.
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=30) as http:
        for event_id, statuses in answers.items():
            while statuses[-1] != 200:
                assert time.monotonic() < deadline, f"{event_id}: {statuses}\n{served.tail()}"
                time.sleep(0.1)
                statuses.append(post_event(http, served, events[event_id]))
            # and a duplicate of each, as Stripe may also send one
            statuses.append(post_event(http, served, events[event_id]))
            assert statuses[-1] == 200

    with psycopg.connect(db_dsn, autocommit=True) as check:
        wait_applied(check)
        applied = check.execute(
            "SELECT state::text, count(*) FROM tollgate.payment_events GROUP BY 1"
        ).fetchall()
        assert applied == [("applied", len(events))], "each event stored and applied once"
        statuses_now = check.execute(
            "SELECT status::text, count(*) FROM tollgate.payment_intents GROUP BY 1"
        ).fetchall()
        assert statuses_now == [("succeeded", len(events))]
        settled = check.execute(
            "SELECT count(*), count(DISTINCT payload ->> 'payment_id') FROM tollgate.outbox"
            " WHERE topic = 'payment.settled'"
        ).fetchone()
        assert settled == (len(events), len(events)), "one announcement per payment"
        assert check.execute("SELECT * FROM tollgate.verify_audit_chain()").fetchall() == []
        assert ledger_problems(check) == []


def test_sigkill_under_load_leaves_no_half_written_rows(
    db_dsn: str,
    db: psycopg.Connection[Any],
    emulator: Emulator,
    servers: list[Served],
    tmp_path: Path,
) -> None:
    """Transfers, usage, transactions, holds, payments and webhooks in flight when every API
    process is killed with SIGKILL. Afterwards each row is whole (postings balance, settled
    transactions have their posting, applied events their payment, claims their payment, the
    audit chain is sealed), and retrying every transfer with its key moves each amount once."""
    ops = keys.create(db, account="ops", is_admin=True).key
    agents = [keys.create(db, account=f"agent_{n}").key for n in range(4)]
    db.execute("SELECT api.set_allow_negative_v1(%s, 'ops', 'USD', true)", (ops,))
    db.execute("SELECT api.set_metric_price_v1(%s, 'tokens', 0.001, 'USD')", (ops,))
    db.execute("SELECT api.set_action_price_v1(%s, 'report.generate', 0.05, 'USD', NULL)", (ops,))
    for n in range(4):
        db.execute(
            "SELECT api.transfer_v1(%s, 'ops', %s, 100, 'USD', %s)", (ops, f"agent_{n}", f"f{n}")
        )
    stripe_ids = seed_payments(db, agents[0], 400)
    served = serve(db_dsn, emulator, tmp_path, workers=2)
    servers.append(served)

    stop = threading.Event()
    transfers: dict[str, int | str] = {}  # idempotency key -> first answer
    answers: list[int | str] = []

    def call(
        http: httpx.Client, method: str, path: str, key: str, **kw: Any
    ) -> httpx.Response | None:
        try:
            r = http.request(
                method,
                f"{served.url}{path}",
                headers={"Authorization": f"Bearer {key}"} | kw.pop("headers", {}),
                **kw,
            )
        except httpx.TransportError:
            answers.append("lost")
            return None
        answers.append(r.status_code)
        return r

    def transferring(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            i = 0
            while not stop.is_set():
                key = f"t-{n}-{i}"
                r = call(
                    http,
                    "POST",
                    "/v1/transfers",
                    ops,
                    json={"to_account_id": f"agent_{n}", "amount": "1.00", "currency": "USD"},
                    headers={"Idempotency-Key": key},
                )
                transfers[key] = r.status_code if r is not None else "lost"
                i += 1

    def using(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            i = 0
            while not stop.is_set():
                now = "2026-11-20T12:00:00Z"
                events = [
                    {"id": f"u-{i}-{j}", "metric": "tokens", "quantity": 7, "occurred_at": now}
                    for j in range(50)
                ]
                call(http, "POST", "/v1/usage", agents[n], json={"events": events})
                r = call(
                    http, "POST", "/v1/authorize", agents[n], json={"action": "report.generate"}
                )
                if r is not None and r.status_code == 200 and r.json().get("hold_id"):
                    call(
                        http,
                        "POST",
                        f"/v1/holds/{r.json()['hold_id']}/capture",
                        agents[n],
                        json={"amount": "0.03"},
                    )
                i += 1

    def settling() -> None:
        with httpx.Client(timeout=10) as http:
            i = 0
            while not stop.is_set():
                call(
                    http,
                    "POST",
                    "/v1/transactions",
                    ops,
                    json={
                        "account_id": "agent_3",
                        "reference": f"o-{i}",
                        "amount": "2.50",
                        "currency": "USD",
                    },
                )
                call(http, "POST", f"/v1/transactions/o-{i}/settle?account_id=agent_3", ops)
                i += 1

    def webhooks() -> None:
        with httpx.Client(timeout=10) as http:
            for i, stripe_id in enumerate(stripe_ids):
                if stop.is_set():
                    return
                answers.append(post_event(http, served, succeeded(f"evt_kill_{i}", stripe_id)))

    def paying() -> None:
        with httpx.Client(timeout=20) as http:
            i = 0
            while not stop.is_set():
                call(
                    http,
                    "POST",
                    "/v1/payments",
                    agents[1],
                    json={"amount_minor": 500, "currency": "usd", "purpose": "credits"},
                    headers={"Idempotency-Key": f"p-{i}"},
                )
                i += 1

    threads = [threading.Thread(target=transferring, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=using, args=(n,)) for n in range(2, 4)]
    threads += [threading.Thread(target=target) for target in (settling, webhooks, paying)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while sum(1 for a in answers if a in (200, 201)) < 500:
        assert time.monotonic() < deadline, (
            f"the load never got going: {answers[-5:]}\n{served.tail()}"
        )
        time.sleep(0.05)
    kill(served)  # SIGKILL to the whole group: the supervisor and both workers
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert "lost" in answers, "requests were in flight when the processes died"

    check = db
    problems = {
        "ledger": check.execute("SELECT count(*) FROM tollgate.ledger_discrepancies()").fetchone(),
        "audit": check.execute("SELECT count(*) FROM tollgate.verify_audit_chain()").fetchone(),
        "settled without posting": check.execute(
            "SELECT count(*) FROM tollgate.transactions WHERE status::text = 'settled'"
            " AND settlement_posting_id IS NULL"
        ).fetchone(),
        "claim without payment": check.execute(
            "SELECT count(*) FROM tollgate.idempotency_keys k WHERE NOT EXISTS"
            " (SELECT 1 FROM tollgate.payment_intents p WHERE p.id = k.payment_id)"
        ).fetchone(),
        "succeeded without its event": check.execute(
            "SELECT count(*) FROM tollgate.payment_intents p WHERE status::text = 'succeeded'"
            " AND NOT EXISTS (SELECT 1 FROM tollgate.payment_events e"
            "  WHERE e.stripe_object_id = p.stripe_id AND e.state::text = 'applied')"
        ).fetchone(),
        "applied event, payment not moved": check.execute(
            "SELECT count(*) FROM tollgate.payment_events e JOIN tollgate.payment_intents p"
            " ON p.stripe_id = e.stripe_object_id WHERE e.state::text = 'applied'"
            " AND p.status::text <> 'succeeded'"
        ).fetchone(),
    }
    assert {name: found[0] for name, found in problems.items() if found} == {
        name: 0 for name in problems
    }

    # Clients retry what they did not see answered; every transfer lands exactly once.
    restarted = serve(db_dsn, emulator, tmp_path, workers=2)
    servers.append(restarted)
    with httpx.Client(timeout=10) as http:
        for key, first in transfers.items():
            n = key.split("-")[1]
            r = http.post(
                f"{restarted.url}/v1/transfers",
                json={"to_account_id": f"agent_{n}", "amount": "1.00", "currency": "USD"},
                headers={"Authorization": f"Bearer {ops}", "Idempotency-Key": key},
            )
            assert r.status_code in (200, 201), (key, first, r.text)
    moved = check.execute(
        "SELECT count(*) FROM tollgate.ledger_postings WHERE idempotency_key LIKE 't-%'"
    ).fetchone()
    assert moved == (len(transfers),), "one posting per transfer key, none lost, none doubled"
    assert check.execute("SELECT count(*) FROM tollgate.ledger_discrepancies()").fetchone() == (0,)


def processing_then_succeeded(stripe_id: str, n: int, created: int) -> list[tuple[str, bytes]]:
    """A payment's two events, as Stripe sends them: processing, then succeeded a second later."""
    sent = []
    for step, (status, at) in enumerate((("processing", created), ("succeeded", created + 1))):
        event_id = f"evt_crash_{n}_{step}"
        obj = {"object": "payment_intent", "id": stripe_id, "status": status}
        body = {"id": event_id, "type": f"payment_intent.{status}", "created": at}
        sent.append((event_id, json.dumps(body | {"data": {"object": obj}}).encode()))
    return sent


@pytest.fixture
def started_appliers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every applier process a test starts; those still running are killed after it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def start_applier(dsn: str, log: Path) -> subprocess.Popen[bytes]:
    """`tollgate apply-events` in its own process group, in small batches so that a kill finds
    one in flight."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "api.cli", "apply-events"),
                *("--batch", "25", "--sweep", "0.2"),
            ],
            cwd=ROOT,
            env=os.environ | {"DATABASE_URL": dsn},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def applier_sessions(
    db: psycopg.Connection[Any],
    appliers: list[subprocess.Popen[bytes]],
    *,
    active: bool,
    seconds: float,
) -> bool:
    """Whether, within ``seconds``, an applier's session shows in pg_stat_activity (``active``:
    running a statement, which for an applier is applying a batch)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in appliers), "an applier exited by itself"
        found = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tollgate-applier'"
            " AND (NOT %s OR state = 'active')",
            (active,),
        ).fetchone()
        if found and found[0] > 0:
            return True
        time.sleep(0.002 if active else 0.05)
    return False


def test_appliers_killed_mid_batch_lose_and_double_nothing(
    db_dsn: str,
    db: psycopg.Connection[Any],
    emulator: Emulator,
    servers: list[Served],
    started_appliers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    """Webhooks keep arriving (each stored, answered 200) while the processes applying them,
    two `tollgate apply-events`, are killed with SIGKILL again and again, mostly in the middle
    of a batch, and started again. Afterwards every stored event is applied exactly once and
    in order: each payment went processing -> succeeded, once each, with one announcement
    and one settlement of its credits; early events were applied when their payment
    appeared; nothing is left received or pending; the audit chain and the ledger verify."""
    key = keys.create(db, account="crash").key
    stripe_ids = seed_payments(db, key, 120)
    early_ids = [f"pi_crash_early_{i}_{uuid.uuid4().hex[:6]}" for i in range(20)]
    # Only the processes killed below apply events.
    served = serve(db_dsn, emulator, tmp_path, APPLY_STRIPE_EVENTS="false")
    servers.append(served)

    created = int(time.time()) - 30
    events = [
        e for n, pi in enumerate(stripe_ids) for e in processing_then_succeeded(pi, n, created)
    ]
    events += [
        (f"evt_crash_early_{i}", succeeded(f"evt_crash_early_{i}", pi))
        for i, pi in enumerate(early_ids)
    ]
    answers: dict[str, list[int | str]] = {event_id: [] for event_id, _ in events}
    sending = threading.Event()
    sending.set()

    def sender() -> None:
        with httpx.Client(timeout=30) as http:
            for i, (event_id, payload) in enumerate(events):
                # As Stripe: until a 2xx; and now and then once more.
                while not answers[event_id] or answers[event_id][-1] != 200:
                    answers[event_id].append(post_event(http, served, payload))
                if i % 7 == 0:
                    answers[event_id].append(post_event(http, served, payload))
                time.sleep(0.004)
        sending.clear()

    log = tmp_path / "appliers.log"
    appliers = [start_applier(db_dsn, log) for _ in range(2)]
    started_appliers.extend(appliers)
    thread = threading.Thread(target=sender)
    thread.start()
    kills = in_flight = 0
    while sending.is_set() or kills < 12:
        # Once they are connected, kill them as soon as one is seen applying a batch (or
        # after a while if none is: between batches is a point in time as good as any).
        assert applier_sessions(db, appliers, active=False, seconds=30), log.read_text()[-2000:]
        in_flight += applier_sessions(db, appliers, active=True, seconds=0.2 + (kills % 4) * 0.3)
        for process in appliers:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        kills += 1
        appliers = [start_applier(db_dsn, log) for _ in range(2)]
        started_appliers.extend(appliers)
    thread.join(timeout=120)
    assert not thread.is_alive(), "the webhooks were all delivered"
    assert {a[-1] for a in answers.values()} == {200}, served.tail()
    assert in_flight > 0, "some kills landed while a batch was being applied"

    # The survivors apply what is left; then the early events' payments are recorded.
    wait_applied(db, timeout=60)
    for process in appliers:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
    pending = db.execute(
        "SELECT count(*) FROM tollgate.payment_events WHERE state::text = 'pending'"
    ).fetchone()
    assert pending == (len(early_ids),), "early events wait for their payments"
    for i, stripe_id in enumerate(early_ids):
        db.execute(
            "SELECT api.finish_payment_v1(%s, (SELECT payment_id FROM api.begin_payment_v1("
            " %s, %s, NULL, 1000, 'USD', 'credits', NULL, NULL)), %s,"
            " 'requires_payment_method', NULL)",
            (key, key, f"early-{i}", stripe_id),
        )

    states = db.execute(
        "SELECT state::text, count(*) FROM tollgate.payment_events GROUP BY 1"
    ).fetchall()
    assert states == [("applied", len(events))], "each event applied, once, in arrival order"
    paid = len(stripe_ids) + len(early_ids)
    statuses = db.execute(
        "SELECT status::text, count(*) FROM tollgate.payment_intents GROUP BY 1"
    ).fetchall()
    assert statuses == [("succeeded", paid)]
    moves = db.execute(
        "SELECT new_value, count(*), count(DISTINCT entity_id) FROM tollgate.audit_log"
        " WHERE entity = 'payment_intent' AND action = 'status_changed' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert moves == [
        ("processing", len(stripe_ids), len(stripe_ids)),
        ("succeeded", paid, paid),
    ], "one audited move per event"
    settled = db.execute(
        "SELECT count(*), count(DISTINCT payload ->> 'payment_id') FROM tollgate.outbox"
        " WHERE topic = 'payment.settled'"
    ).fetchone()
    assert settled == (paid, paid), "one announcement per payment"
    credited = db.execute(
        "SELECT count(*) FROM tollgate.transactions WHERE status::text = 'settled'"
    ).fetchone()
    assert credited == (paid,), "each payment's credits settled once"
    assert db.execute("SELECT * FROM tollgate.verify_audit_chain()").fetchall() == []
    assert ledger_problems(db) == []
