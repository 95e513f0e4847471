"""`tollgate listen` as a real process: nothing lost across kill -9 and database restarts,
no double delivery between processes of one consumer, retries, dead letters and replay."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from db import handlers
from db.embedded import EmbeddedServer
from tests.conftest import Emulator, ServerThread, make_settings, register_webhook_secret
from tests.helpers import event as stripe_event
from tests.helpers import sign, wait_applied

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "listener_account"


class Listeners:
    """Starts listener processes and makes sure none outlives the test."""

    def __init__(self, dsn: str, tmp: Path) -> None:
        self.dsn, self.tmp = dsn, tmp
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, consumer: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"listen-{consumer}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "listen",
                "--consumer",
                consumer,
                "--from-start",
                "--poll",
                "0.5",
                *args,
            ],
            cwd=ROOT,
            env=os.environ | {"DATABASE_URL": self.dsn} | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def recorder(
        self, consumer: str, record: Path, *args: str, **env: str
    ) -> subprocess.Popen[bytes]:
        return self.start(
            consumer,
            "--handler",
            "tests.listener_handlers:record",
            *args,
            TOLLGATE_TEST_RECORD=str(record),
            **env,
        )

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.tmp.glob("listen-*.log")))

    def stop_all(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


@pytest.fixture
def listeners(db_dsn: str, tmp_path: Path) -> Iterator[Listeners]:
    started = Listeners(db_dsn, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def produce(dsn: str, n: int, tag: str | None = None) -> list[str]:
    """Commit n settled transactions; each writes one transaction.settled outbox event."""
    tag = tag or secrets.token_hex(4)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tollgate.accounts (external_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (ACCOUNT,),
        )
        with conn.transaction():
            conn.execute(
                "INSERT INTO tollgate.transactions (account_uuid, reference, amount, currency)"
                " SELECT a.id, %s || '-' || g, 100, 'USD' FROM tollgate.accounts a,"
                " generate_series(1, %s) g WHERE a.external_id = %s",
                (tag, n, ACCOUNT),
            )
            conn.execute(
                "UPDATE tollgate.transactions SET status = 'settled' WHERE reference LIKE %s",
                (f"{tag}-%",),
            )
        rows = conn.execute(
            "SELECT event_id::text FROM tollgate.outbox"
            " WHERE payload ->> 'reference' LIKE %s ORDER BY id",
            (f"{tag}-%",),
        ).fetchall()
    return [r[0] for r in rows]


def records(path: Path, outcome: str = "handled") -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [x for x in lines if x["outcome"] == outcome]


def wait_until(
    check: Callable[[], bool], what: str, listeners: Listeners | None = None, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if (
            listeners
            and listeners.processes
            and all(p.poll() is not None for p in listeners.processes)
        ):
            pytest.fail(f"every listener exited while waiting for {what}:\n{listeners.logs()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            listeners.logs() if listeners else ""
        )
        time.sleep(0.05)


def handled(path: Path) -> set[str]:
    return {r["id"] for r in records(path)}


def test_every_event_reaches_the_handler_once(
    listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    record = tmp_path / "seen.jsonl"
    listeners.recorder("billing", record)
    sent = produce(db_dsn, 30)
    wait_until(lambda: handled(record) >= set(sent), "30 events", listeners)
    assert sorted(r["id"] for r in records(record)) == sorted(sent), "each exactly once"

    def states() -> list[tuple[Any, ...]]:
        with psycopg.connect(db_dsn) as db:
            return db.execute(
                "SELECT status::text, count(*) FROM tollgate.outbox_deliveries"
                " WHERE consumer = 'billing' GROUP BY 1"
            ).fetchall()

    # The handler runs before the outcome is recorded: wait for that transaction.
    wait_until(lambda: states() == [("delivered", 30)], "30 deliveries recorded", listeners)


def test_kill_9_mid_flow_loses_nothing(listeners: Listeners, db_dsn: str, tmp_path: Path) -> None:
    record = tmp_path / "seen.jsonl"
    slow = {"TOLLGATE_TEST_DELAY": "0.01"}
    options = ("--batch", "10", "--lease", "1", "--handler-timeout", "0.5")
    first = listeners.recorder("fulfil", record, *options, **slow)
    sent = [e for _ in range(4) for e in produce(db_dsn, 50)]
    wait_until(lambda: len(records(record)) >= 30, "some deliveries", listeners)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    before_restart = len(records(record))
    assert before_restart < len(sent), "killed while events were still flowing"
    sent += produce(db_dsn, 50)
    listeners.recorder("fulfil", record, *options, **slow)
    wait_until(
        lambda: handled(record) >= set(sent),
        "every event after the restart",
        listeners,
        timeout=120,
    )
    seen = [r["id"] for r in records(record)]
    assert set(seen) == set(sent), "none lost, none invented"
    duplicates = len(seen) - len(set(seen))
    assert duplicates <= 10, "at most the batch in flight when killed is handled twice"


@pytest.mark.restarts_postgres
def test_restarting_postgres_while_listening(
    restartable: EmbeddedServer, listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    record = tmp_path / "seen.jsonl"
    process = listeners.recorder("notify", record)
    sent = produce(db_dsn, 20)
    wait_until(lambda: handled(record) >= set(sent), "events before the restart", listeners)
    restartable.pg_ctl("-w", "-m", "fast", "restart")
    sent += produce(db_dsn, 20)
    wait_until(lambda: handled(record) >= set(sent), "events after the restart", listeners)
    assert process.poll() is None, "the listener reconnected instead of dying"


def test_two_processes_of_one_consumer_share_without_double_delivery(
    listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    record = tmp_path / "seen.jsonl"
    for _ in range(2):
        listeners.recorder("receipts", record, "--batch", "5", TOLLGATE_TEST_DELAY="0.005")
    wait_until(
        lambda: listeners.logs().count("listening as consumer") == 2, "both to listen", listeners
    )
    sent = [e for _ in range(6) for e in produce(db_dsn, 50)]
    wait_until(lambda: handled(record) >= set(sent), "300 events", listeners)
    seen = records(record)
    assert sorted(r["id"] for r in seen) == sorted(sent), "each event exactly once between them"
    assert len({r["pid"] for r in seen}) == 2, "both processes did some of the work"


def test_consumers_each_see_every_event(listeners: Listeners, db_dsn: str, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    listeners.recorder("crm", a)
    listeners.recorder("warehouse", b)
    sent = produce(db_dsn, 25)
    wait_until(
        lambda: handled(a) >= set(sent) and handled(b) >= set(sent), "both consumers", listeners
    )
    assert len(records(a)) == len(records(b)) == 25


def test_a_failing_handler_retries_then_dead_letters_and_replay_delivers(
    listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    record, fail = tmp_path / "seen.jsonl", tmp_path / "fail"
    fail.touch()
    listeners.recorder(
        "flaky", record, "--max-attempts", "3", "--retry-base", "0.2", TOLLGATE_TEST_FAIL=str(fail)
    )
    sent = produce(db_dsn, 2)

    def dead() -> list[tuple[Any, ...]]:
        with psycopg.connect(db_dsn) as db:
            return db.execute(
                "SELECT o.event_id::text, d.attempts, d.last_error"
                " FROM tollgate.outbox_deliveries d JOIN tollgate.outbox o ON o.id = d.outbox_id"
                " WHERE d.consumer = 'flaky' AND d.status = 'dead'"
            ).fetchall()

    wait_until(lambda: len(dead()) == 2, "two dead letters", listeners)
    assert {(e, n) for e, n, _ in dead()} == {(e, 3) for e in sent}
    assert all("told to fail" in error for _, _, error in dead())
    assert records(record) == []
    for event in sent:
        tries = sorted(x["at"] for x in records(record, "failed") if x["id"] == event)
        assert len(tries) == 3
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert gaps[0] >= 0.2 and gaps[1] >= 0.4, f"backoff 0.2 s, then doubled: {gaps}"

    env = os.environ | {"DATABASE_URL": db_dsn}
    listed = subprocess.run(
        [sys.executable, "-m", "api.cli", "outbox", "dead", "--consumer", "flaky"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert all(e in listed.stdout for e in sent)
    fail.unlink()
    replayed = subprocess.run(
        [sys.executable, "-m", "api.cli", "outbox", "replay", "--consumer", "flaky"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "2 deliveries" in replayed.stdout
    wait_until(lambda: handled(record) == set(sent), "the replayed events", listeners)


def test_webhook_handler_signs_like_stripe(listeners: Listeners, db_dsn: str) -> None:
    secret = "whsec_" + secrets.token_hex(8)
    received: list[tuple[bool, dict[str, Any]]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            header = self.headers.get("Tollgate-Signature", "")
            # Checked as a receiver would, without Tollgate's code ...
            t, v1 = (part.split("=", 1)[1] for part in header.split(","))
            mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            # ... and with the helper Tollgate offers receivers.
            ok = hmac.compare_digest(mac, v1) and handlers.verify(body, header, secret)
            received.append((ok, json.loads(body)))
            self.send_response(204 if ok else 400)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        listeners.start(
            "hooks",
            "--webhook",
            f"http://127.0.0.1:{server.server_port}/events",
            TOLLGATE_WEBHOOK_SECRET=secret,
        )
        sent = produce(db_dsn, 3)
        wait_until(lambda: len(received) >= 3, "three webhooks", listeners)
    finally:
        server.shutdown()
    assert all(ok for ok, _ in received), "every signature verifies with the secret"
    assert sorted(body["id"] for _, body in received) == sorted(sent)
    assert {body["type"] for _, body in received} == {"transaction.settled"}
    assert not handlers.verify(b"{}", handlers.sign(b"{}", "wrong secret"), secret)
    assert not handlers.verify(b"{}", "t=1,v1=\u00e9", secret), "a malformed header is refused"
    stale = handlers.sign(b"{}", secret, int(time.time()) - 3600)
    assert not handlers.verify(b"{}", stale, secret), "an old signature is refused"


def test_verify_accepts_any_v1_and_refuses_malformed_headers() -> None:
    """The receivers' helper: a sender rotating its secret sends one v1 per secret, in any
    order, and any of them may be the receiver's; anything malformed is False, not an error."""
    secret, other, body = "whsec_" + secrets.token_hex(16), "whsec_other", b'{"id": 1}'
    now = int(time.time())
    mine = handlers.sign(body, secret, now).split("v1=", 1)[1]
    theirs = handlers.sign(body, other, now).split("v1=", 1)[1]
    assert handlers.verify(body, f"t={now},v1={mine},v1={theirs}", secret), "good one first"
    assert handlers.verify(body, f"t={now},v1={theirs},v1={mine}", secret), "good one last"
    assert not handlers.verify(body, f"t={now},v1={theirs}", secret)
    assert not handlers.verify(body, f"t={now},v1={mine}", other + "x")
    for header in (
        f"t={now},v1=\u00e9",  # not ASCII, with a timestamp that is recent
        f"t={now},v1={mine[:-1]}\u00e9",
        f"t={now},v1=\udce9",  # a lone surrogate
        f"t=\u0661\u0662,v1={mine}",  # digits, but not ASCII ones
        f"t=,v1={mine}",
        f"v1={mine}",
        f"t={now}",
        "",
        ",,,=",
    ):
        assert handlers.verify(body, header, secret) is False, header
    assert handlers.verify(body, None, secret) is False  # type: ignore[arg-type]


def test_stdout_handler_writes_json_lines(
    listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    process = listeners.start("pipe", "--stdout")
    sent = produce(db_dsn, 2)
    log = next(tmp_path.glob("listen-pipe-*.log"))

    def lines() -> list[dict[str, Any]]:
        return [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]

    wait_until(lambda: len(lines()) >= 2, "two JSON lines", listeners)
    assert process.poll() is None
    assert sorted(x["id"] for x in lines()) == sorted(sent)
    assert all(x["account_id"] == ACCOUNT and "reference" in x["data"] for x in lines())


def _delivery_error(dsn: str, consumer: str) -> str:
    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT last_error FROM tollgate.outbox_deliveries WHERE consumer = %s", (consumer,)
        ).fetchone()
    return str(row[0]) if row and row[0] else ""


def test_an_event_whose_handler_kills_the_process_ends_up_dead(
    listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    record, crash = tmp_path / "seen.jsonl", tmp_path / "crash"
    crash.touch()
    options = ("--max-attempts", "2", "--batch", "1", "--lease", "0.5", "--handler-timeout", "0.2")
    produce(db_dsn, 1)
    for _ in range(2):
        process = listeners.recorder("poison", record, *options, TOLLGATE_TEST_CRASH=str(crash))
        assert process.wait(timeout=60) == 3, "the handler killed the listener"
    crash.unlink()
    healthy = listeners.recorder("poison", record, *options)

    def status() -> Any:
        with psycopg.connect(db_dsn) as db:
            return db.execute(
                "SELECT status::text FROM tollgate.outbox_deliveries WHERE consumer = 'poison'"
            ).fetchone()

    wait_until(lambda: status() == ("dead",), "the dead letter", listeners)
    assert healthy.poll() is None, "the listener lives on"
    assert records(record) == [], "dead-lettered, not handed out a third time"


def test_a_hanging_handler_times_out_and_is_retried(
    listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    record, hang = tmp_path / "seen.jsonl", tmp_path / "hang"
    hang.touch()
    listeners.recorder(
        "slowpoke",
        record,
        "--handler-timeout",
        "0.3",
        "--retry-base",
        "0.1",
        TOLLGATE_TEST_HANG=str(hang),
    )
    sent = produce(db_dsn, 1)
    wait_until(
        lambda: "longer than 0.3 s" in _delivery_error(db_dsn, "slowpoke"), "a timeout", listeners
    )
    hang.unlink()
    wait_until(lambda: handled(record) == set(sent), "the retry to succeed", listeners)


def test_a_consumer_name_the_database_refuses_stops_the_listener_with_the_reason(
    listeners: Listeners,
) -> None:
    """A refusal, translated like the service's, is an answer no reconnecting changes."""
    process = listeners.start("Not-A-Consumer-Name")
    assert process.wait(timeout=60) == 2, listeners.logs()
    assert "tollgate listen: consumer names are 1-63 characters" in listeners.logs()


def test_sigterm_stops_between_events_and_hands_the_rest_back(
    listeners: Listeners, db_dsn: str, tmp_path: Path
) -> None:
    record = tmp_path / "seen.jsonl"
    first = listeners.recorder("graceful", record, "--batch", "50", TOLLGATE_TEST_DELAY="0.1")
    sent = produce(db_dsn, 40)
    wait_until(lambda: len(records(record)) >= 3, "a few events", listeners)
    asked = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=10) == 0
    assert time.monotonic() - asked < 2, "it stopped after the event in hand, not the batch"
    assert len(records(record)) < len(sent)
    listeners.recorder("graceful", record, "--batch", "50")
    wait_until(lambda: handled(record) >= set(sent), "the rest, at once", listeners, timeout=20)
    assert max(x["attempt"] for x in records(record)) == 1, "handed back untried, not counted"


def write_event(conn: psycopg.Connection[Any], reference: str) -> None:
    """In the connection's open transaction, fail a new transaction of the account named like
    its reference: one transaction.failed outbox event, and no row shared with other writers."""
    conn.execute(
        "INSERT INTO tollgate.transactions (account_uuid, reference, amount, currency)"
        " SELECT id, %s, 100, 'USD' FROM tollgate.accounts WHERE external_id = %s",
        (reference, reference),
    )
    conn.execute(
        "UPDATE tollgate.transactions SET status = 'failed' WHERE reference = %s", (reference,)
    )


def claim(listener: psycopg.Connection[Any], consumer: str) -> list[str]:
    """The references of the events a claim leases to the consumer."""
    rows = listener.execute(
        "SELECT payload ->> 'reference' FROM api.claim_deliveries_v2(%s, 100, '1 hour', 5)",
        (consumer,),
    ).fetchall()
    return sorted(r[0] for r in rows)


def test_a_consumer_registered_while_writers_are_in_flight_gets_their_events(
    db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Registration takes no lock writers wait on, yet loses none of their events: one written
    before it and committed after it (READ COMMITTED), one written after it by a transaction
    whose snapshot is older (REPEATABLE READ). Neither fan-out saw the new consumer."""
    db.execute(
        "INSERT INTO tollgate.accounts (external_id) VALUES ('early'), ('old-snapshot'), ('after')"
    )
    with (
        psycopg.connect(db_dsn) as early,
        psycopg.connect(db_dsn) as old_snapshot,
        psycopg.connect(db_dsn, autocommit=True) as listener,
    ):
        listener.execute("SET ROLE tollgate_listener")
        listener.execute("SET lock_timeout = '2s'")  # waiting on a writer fails the test
        write_event(early, "early")
        old_snapshot.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        old_snapshot.execute("SELECT count(*) FROM tollgate.outbox_consumers")

        registered = listener.execute(
            "SELECT created FROM api.register_consumer_v1('late', false)"
        ).fetchone()
        assert registered == (True,), "registered while a writer is in flight"
        assert claim(listener, "late") == [], "nothing committed yet"

        write_event(old_snapshot, "old-snapshot")
        early.commit()
        assert claim(listener, "late") == ["early"], "committed after the registration: its event"
        old_snapshot.commit()
        assert claim(listener, "late") == ["old-snapshot"]

    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("SET ROLE tollgate_listener")
        assert claim(listener, "late") == []
        consumers = db.execute(
            "SELECT catching_up FROM tollgate.outbox_consumers WHERE name = 'late'"
        ).fetchone()
        assert consumers == (False,), "catch-up ends once no writer from before is left"
        with db.transaction():
            write_event(db, "after")
        assert claim(listener, "late") == ["after"], "later events are fanned out to it"
        fanned = db.execute(
            "SELECT o.payload ->> 'reference', count(*) FROM tollgate.outbox_deliveries d"
            " JOIN tollgate.outbox o ON o.id = d.outbox_id WHERE d.consumer = 'late'"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert fanned == [("after", 1), ("early", 1), ("old-snapshot", 1)], "once each"


def test_a_listener_idle_after_registering_delays_no_writer(
    db_dsn: str, db: psycopg.Connection[Any], emulator: Emulator, new_key: Any
) -> None:
    """A listener session left idle in the transaction of api.register_consumer_v1 while a
    webhook is ingested and a transaction settled over HTTP. Every connection of the API waits
    at most 2 s for a lock (lock_timeout), so a writer held up by the listener fails."""
    impatient = make_conninfo(db_dsn, options="-c lock_timeout=2s")
    user, admin = new_key("idle_user"), new_key("idle_ops", admin=True)
    settings = make_settings(impatient, emulator.base)
    secret = register_webhook_secret(db_dsn)
    with ServerThread(settings) as url, psycopg.connect(db_dsn) as listener:
        listener.execute("SET ROLE tollgate_listener")
        listener.execute("SELECT * FROM api.register_consumer_v1('idle', false)")
        pid = listener.info.backend_pid
        with httpx.Client(base_url=url, timeout=30) as http:
            paid = http.post(
                "/v1/payments",
                json={"amount_minor": 500, "currency": "usd", "purpose": "credits"},
                headers={"Authorization": f"Bearer {user}", "Idempotency-Key": "idle-1"},
            )
            assert paid.status_code == 201, paid.text
            body = stripe_event("evt_idle_1", paid.json()["stripe_id"], "succeeded")
            ingested = http.post(
                "/v1/webhooks/stripe",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "Stripe-Signature": sign(body, secret),
                },
            )
            assert ingested.status_code == 200 and ingested.json()["outcome"] == "received", (
                ingested.text
            )
            assert wait_applied(db, "evt_idle_1") == {"evt_idle_1": "applied"}
            as_admin = {"Authorization": f"Bearer {admin}"}
            created = http.post(
                "/v1/transactions",
                json={
                    "account_id": "idle_user",
                    "reference": "idle-1",
                    "amount": "5.00",
                    "currency": "USD",
                },
                headers=as_admin,
            )
            assert created.status_code == 201, created.text
            settled = http.post(
                "/v1/transactions/idle-1/settle",
                params={"account_id": "idle_user"},
                headers=as_admin,
            )
            assert settled.status_code == 200 and settled.json()["status"] == "settled", (
                settled.text
            )
        state = db.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        assert state == ("idle in transaction",), "the listener sat in its transaction throughout"
        listener.commit()
    topics = {t for (t,) in db.execute("SELECT topic FROM tollgate.outbox").fetchall()}
    assert {"payment.settled", "transaction.settled"} <= topics, "both wrote outbox events"


def test_notifications_carry_ids_and_the_row_says_the_rest(db_dsn: str) -> None:
    """Anyone may send a NOTIFY statement on any channel: the payload names the outbox row and
    a listener reads it from the table."""
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("LISTEN transaction_settled")
        [event_id] = produce(db_dsn, 1)
        note = next(listener.notifies(timeout=10, stop_after=1))
        payload = json.loads(note.payload)
        assert set(payload) == {"outbox_id", "event_id", "topic", "account_id"}, payload
        row = listener.execute(
            "SELECT event_id::text, topic FROM tollgate.outbox WHERE id = %s",
            (payload["outbox_id"],),
        ).fetchone()
        assert row == (event_id, "transaction.settled")
        assert payload["event_id"] == event_id
