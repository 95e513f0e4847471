"""Retention (`tollgate archive`, db/sql/89-retention.sql): final rows older than the horizon
move to the archive tables, committed, by the command; ids stay unique across live and
archive while writers and two retention runs work at once (and for a signed webhook over
HTTP); the audit chain verifies across the archive."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from db import keys, queries
from tests.conftest import Api
from tests.helpers import event, sign, wait_applied

ROOT = Path(__file__).resolve().parent.parent

LIVE_AND_ARCHIVE = {
    "payment_events": ("tollgate.payment_events", "tollgate.payment_events_archive"),
    "usage_events": ("tollgate.usage_events", "tollgate.usage_events_archive"),
    "audit": ("tollgate.audit_log", "tollgate.audit_log_archive"),
    "outbox": ("tollgate.outbox", "tollgate.outbox_archive"),
}


def tollgate(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=os.environ | {"DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )


def stripe_event(event_id: str) -> str:
    """An event of a type Tollgate ignores: final as soon as it is stored."""
    return json.dumps(
        {
            "id": event_id,
            "type": "customer.created",
            "created": int(time.time()),
            "data": {"object": {"object": "customer", "id": "cus_" + event_id[4:]}},
        }
    )


def ingest(conn: psycopg.Connection[Any], event_id: str) -> str:
    row = conn.execute(
        "SELECT outcome FROM api.ingest_stripe_event_v1(%s::jsonb)", (stripe_event(event_id),)
    ).fetchone()
    assert row is not None
    return str(row[0])


def record_usage(conn: psycopg.Connection[Any], key: str, ids: list[str]) -> list[str]:
    rows = conn.execute(
        "SELECT outcome FROM api.record_usage_v2(%s, ARRAY("
        " SELECT ROW(i, NULL, NULL, 'calls', 1, now())::api.usage_event_v1"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS x (i, o) ORDER BY o))",
        (key, ids),
    ).fetchall()
    return [str(r[0]) for r in rows]


def counts(db: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    found = {}
    for kind, (live, archive) in LIVE_AND_ARCHIVE.items():
        row = db.execute(
            f"SELECT (SELECT count(*) FROM {live}), (SELECT count(*) FROM {archive})"
        ).fetchone()
        assert row is not None
        found[kind] = (int(row[0]), int(row[1]))
    return found


def test_the_command_archives_old_final_rows_once(db_dsn: str, db: psycopg.Connection[Any]) -> None:
    key = keys.create(db, account="ret_user").key
    admin = keys.create(db, account="ret_ops", is_admin=True).key
    db.execute("SELECT api.register_consumer_v1('crm', false)")
    db.execute(
        "SELECT * FROM api.create_transaction_v1(%s, 'ret_user', 'c-1', 5, 'USD', NULL)", (admin,)
    )
    db.execute("SELECT * FROM api.move_transaction_v1(%s, 'ret_user', 'c-1', 'settled')", (admin,))
    assert ingest(db, "evt_ret_1") == "ignored"
    assert record_usage(db, key, ["u-1", "u-2"]) == ["accepted", "accepted"]

    kept = tollgate("archive", "--before", "1", dsn=db_dsn)
    assert kept.returncode == 0, kept.stderr
    assert "payment_events: 0 rows archived" in kept.stdout, "a day old: nothing is that old"
    assert all(archived == 0 for _, archived in counts(db).values())

    moved = tollgate("archive", "--before", "0", "--batch", "2", dsn=db_dsn)
    assert moved.returncode == 0, moved.stderr
    after = counts(db)
    assert after["payment_events"] == (0, 1)
    assert after["usage_events"] == (0, 2)
    assert after["audit"][0] == 0 and after["audit"][1] > 3, "every sealed row, in batches of 2"
    assert after["outbox"][1] == 0, "the outbox event waits for crm: it stays"
    assert db.execute("SELECT count(*) FROM tollgate.verify_audit_chain()").fetchone() == (0,)

    assert ingest(db, "evt_ret_1") == "duplicate", "an archived event id is still a duplicate"
    assert record_usage(db, key, ["u-1", "u-3"]) == ["duplicate", "accepted"]

    again = tollgate("archive", "--before", "0", "--only", "payment_events", dsn=db_dsn)
    assert again.returncode == 0 and again.stdout.strip() == "payment_events: 0 rows archived"

    refused = tollgate("archive", "--before", "-1", dsn=db_dsn)
    assert refused.returncode == 2 and "--before" in refused.stderr
    assert counts(db)["usage_events"] == (1, 2), "a refused run moves nothing"


def test_retention_beside_writers_keeps_every_id_once(
    db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Webhooks and usage batches re-send ids retention may be moving at that very moment,
    while two retention runs (two connections) move rows as soon as they are final."""
    key = keys.create(db, account="busy").key
    admin = keys.create(db, account="busy_ops", is_admin=True).key
    n, lag = 300, 3
    answers: dict[str, list[str]] = {"events": [], "usage": []}
    writing = threading.Event()
    writing.set()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(db_dsn, autocommit=True) as conn:
                for i in range(n):
                    answers["events"].append(ingest(conn, f"evt_busy_{i}"))
                    answers["usage"] += record_usage(conn, key, [f"u-{i}"])
                    if i >= lag:  # again, an id that may be on its way to the archive now
                        answers["events"].append(ingest(conn, f"evt_busy_{i - lag}"))
                        answers["usage"] += record_usage(conn, key, [f"u-{i - lag}"])
                    conn.execute(
                        "SELECT * FROM api.create_transaction_v1(%s, 'busy', %s, 1, 'USD', NULL)",
                        (admin, f"t-{i}"),
                    )
        except BaseException as exc:
            failures.append(exc)
        finally:
            writing.clear()

    def retention() -> None:
        try:
            with psycopg.connect(db_dsn, autocommit=True) as conn:
                while writing.is_set():
                    for kind in queries.ARCHIVE_KINDS:
                        queries.archive_batch(conn, kind=kind, older_than=dt.timedelta(0), batch=25)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=f) for f in (writer, retention, retention)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert failures == []

    assert answers["events"].count("ignored") == n, "every new event: stored"
    assert answers["events"].count("duplicate") == n - lag, "every re-sent event: duplicate"
    assert answers["usage"].count("duplicate") == n - lag, "every re-sent usage event: duplicate"
    assert answers["usage"].count("accepted") == n

    moved = sum(counts(db)[kind][1] for kind in LIVE_AND_ARCHIVE)
    assert moved > 0, "retention ran while the writer wrote"
    for kind, (live, archive) in LIVE_AND_ARCHIVE.items():
        key_cols = "account_uuid, id" if kind == "usage_events" else "id"
        both = db.execute(
            f"SELECT count(*) FROM {live} JOIN {archive} USING ({key_cols})"
        ).fetchone()
        assert both == (0,), f"{kind}: a row both live and archived"
    row = db.execute(
        "SELECT (SELECT count(*) FROM tollgate.payment_events) + (SELECT count(*) FROM"
        " tollgate.payment_events_archive), (SELECT count(*) FROM tollgate.usage_events)"
        " + (SELECT count(*) FROM tollgate.usage_events_archive)"
    ).fetchone()
    assert row == (n, n), "each event stored once, live or archived"
    assert db.execute("SELECT count(*) FROM tollgate.verify_audit_chain()").fetchone() == (0,)


def waiting_for_a_lock(db: psycopg.Connection[Any], pid: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row is not None and row[0] == "Lock":
            return True
        time.sleep(0.01)
    return False


def test_an_id_resent_while_its_batch_commits_is_a_duplicate(
    db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Retention moves an event and a usage event in an open transaction; the same ids sent
    again on another connection wait for it, then are answered duplicate (not stored again)."""
    key = keys.create(db, account="race").key
    assert ingest(db, "evt_race") == "ignored"
    assert record_usage(db, key, ["u-race"]) == ["accepted"]
    answers: dict[str, list[str]] = {}

    with psycopg.connect(db_dsn) as mover, psycopg.connect(db_dsn, autocommit=True) as sender:
        for kind, send in (
            ("payment_events", lambda: [ingest(sender, "evt_race")]),
            ("usage_events", lambda: record_usage(sender, key, ["u-race"])),
        ):
            assert (
                queries.archive_batch(mover, kind=kind, older_than=dt.timedelta(0), batch=10) == 1
            )
            t = threading.Thread(target=lambda k=kind, f=send: answers.__setitem__(k, f()))  # type: ignore[misc]
            t.start()
            assert waiting_for_a_lock(db, sender.info.backend_pid), f"{kind}: the sender waits"
            mover.commit()
            t.join(timeout=30)
            assert answers[kind] == ["duplicate"], kind
    assert counts(db)["payment_events"] == (0, 1)
    assert counts(db)["usage_events"] == (0, 1)


def test_a_webhook_for_an_archived_event_answers_duplicate(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """Stripe retries for days and `tollgate reconcile stripe` rebuilds events it made before:
    an event archived since is answered as any duplicate is, with its payment, over HTTP."""
    key = new_key("hook_user")
    with api.client(key) as http:
        created = http.post(
            "/v1/payments",
            json={"amount_minor": 2500, "currency": "eur", "purpose": "agent.run"},
            headers={"Idempotency-Key": "p-archived"},
        )
    assert created.status_code == 201, created.text
    payment = created.json()
    payload = event("evt_archived_1", payment["stripe_id"], "succeeded")
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign(payload, api.webhook_secret),
    }
    with httpx.Client(base_url=api.url, timeout=30) as http:
        first = http.post("/v1/webhooks/stripe", content=payload, headers=headers)
        assert first.status_code == 200 and first.json()["outcome"] == "received"
        assert wait_applied(db, "evt_archived_1") == {"evt_archived_1": "applied"}
        assert (
            queries.archive_batch(db, kind="payment_events", older_than=dt.timedelta(0), batch=10)
            == 1
        )
        again = http.post("/v1/webhooks/stripe", content=payload, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == {
        "outcome": "duplicate",
        "event_id": "evt_archived_1",
        "payment_id": payment["id"],
        "payment_status": "succeeded",
    }
    assert counts(db)["payment_events"] == (0, 1), "stored once, archived"


def settle_uncommitted(writer: psycopg.Connection[Any], admin: str, account: str, ref: str) -> None:
    writer.execute("SET ROLE tollgate_app")
    writer.execute(
        "SELECT * FROM api.create_transaction_v1(%s, %s, %s, 1, 'USD', NULL)", (admin, account, ref)
    )
    writer.execute(
        "SELECT * FROM api.move_transaction_v1(%s, %s, %s, 'settled')", (admin, account, ref)
    )


def claimed(listener: psycopg.Connection[Any], consumer: str) -> list[int]:
    rows = listener.execute(
        "SELECT outbox_id FROM api.claim_deliveries_v2(%s, 100, interval '60 s', 5)", (consumer,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def test_an_event_a_consumer_catching_up_is_owed_stays(
    db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """A settlement fanned out before a consumer's registration committed, its own commit after
    it: the consumer is owed the event though no delivery names it yet. Retention run before the
    consumer's claim leaves it, whether the registration has committed or is still in flight
    (the batch waits for it); the claim then hands the event out."""
    admin = keys.create(db, account="owed_ops", is_admin=True).key
    keys.create(db, account="owed_user")
    with (
        psycopg.connect(db_dsn) as writer,
        psycopg.connect(db_dsn, autocommit=True) as listener,
        psycopg.connect(db_dsn) as mover,
    ):
        listener.execute("SET ROLE tollgate_listener")
        settle_uncommitted(writer, admin, "owed_user", "owed-1")
        listener.execute("SELECT * FROM api.register_consumer_v1('late', false)")
        writer.commit()
        assert (
            queries.archive_batch(mover, kind="outbox", older_than=dt.timedelta(0), batch=1000) == 0
        )
        mover.commit()
        first = db.execute("SELECT max(id) FROM tollgate.outbox").fetchone()
        assert first is not None and first[0] is not None, "the event stays in the outbox"
        assert claimed(listener, "late") == [first[0]], "the claim still finds it"

        listener.autocommit = False
        settle_uncommitted(writer, admin, "owed_user", "owed-2")
        listener.execute("SELECT * FROM api.register_consumer_v1('later', false)")
        writer.commit()
        moved: list[int] = []
        t = threading.Thread(
            target=lambda: moved.append(
                queries.archive_batch(mover, kind="outbox", older_than=dt.timedelta(0), batch=1000)
            )
        )
        t.start()
        assert waiting_for_a_lock(db, mover.info.backend_pid), "the batch waits"
        listener.commit()
        t.join(timeout=30)
        mover.commit()
        assert moved == [0]
        second = db.execute("SELECT max(id) FROM tollgate.outbox").fetchone()
        assert second is not None and second[0] is not None and second[0] > first[0]
        assert second[0] in claimed(listener, "later")
        listener.commit()
