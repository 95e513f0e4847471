"""Rows that must see each other, written by transactions committing at the same time.

An early Stripe event and the payment it belongs to; a payment's webhook and a transaction
being linked to that payment. Without the locks they share, each side could commit without
seeing the other: an event pending forever, a transaction never settled. Two real
connections, the second blocked on the first.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.helpers import in_parallel, ledger_problems, sign

KEY = "tg_race_key_for_tests_0123456789"
SECRET = "whsec_race_secret_for_tests_0123456789"


def app_conn(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn)
    conn.execute("SET ROLE tollgate_app")
    return conn


def record_payment(conn: psycopg.Connection[Any], stripe_id: str) -> None:
    claim = conn.execute(
        "SELECT payment_id FROM api.begin_payment_v1(%s, %s, NULL, 500, 'USD', NULL, NULL, NULL)",
        (KEY, stripe_id),
    ).fetchone()
    assert claim is not None
    conn.execute(
        "SELECT api.finish_payment_v1(%s, %s, %s, 'requires_payment_method', NULL)",
        (KEY, claim[0], stripe_id),
    )


def ingest(conn: psycopg.Connection[Any], stripe_id: str) -> str:
    """Deliver a signed payment_intent.succeeded as the service does (the webhook function
    stores it), then apply it as the applier does (api.apply_stripe_events_v1), in the
    connection's transaction; the event's state afterwards, as that transaction sees it."""
    event = {
        "id": f"evt_{stripe_id}",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {"object": {"object": "payment_intent", "id": stripe_id, "status": "succeeded"}},
    }
    payload = json.dumps(event)
    found = conn.execute(
        "SELECT outcome FROM api.ingest_stripe_webhook_v1(%s, %s)",
        (payload, sign(payload.encode(), SECRET)),
    ).fetchone()
    assert found is not None and found[0] == "received", found
    conn.execute("SELECT api.apply_stripe_events_v1(10, false)")
    conn.execute("RESET ROLE")  # the service's role reads no table; the test does
    state = conn.execute(
        "SELECT state::text FROM tollgate.payment_events WHERE id = %s", (event["id"],)
    ).fetchone()
    conn.execute("SET ROLE tollgate_app")
    assert state is not None
    return str(state[0])


def wait_until_blocked(db: psycopg.Connection[Any], pid: int, timeout: float = 10) -> None:
    """Return once backend ``pid`` waits for a lock; fail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.01)
    pytest.fail(f"backend {pid} never waited for the other transaction")


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    return thread, result


@pytest.fixture
def keyed(db: psycopg.Connection[Any]) -> None:
    db.execute("SELECT api.create_api_key_v1('race_account', %s, false, NULL)", (KEY,))
    db.execute("SELECT tollgate.add_stripe_webhook_secret(%s, NULL)", (SECRET,))


def final_state(db: psycopg.Connection[Any], stripe_id: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT p.status::text, e.state::text FROM tollgate.payment_intents p"
        " JOIN tollgate.payment_events e ON e.stripe_object_id = p.stripe_id"
        " WHERE p.stripe_id = %s",
        (stripe_id,),
    ).fetchone()


def test_event_arriving_while_the_payment_commits(
    db_dsn: str, db: psycopg.Connection[Any], keyed: None
) -> None:
    with app_conn(db_dsn) as creator, app_conn(db_dsn) as webhook:
        record_payment(creator, "pi_race_one")  # inside a transaction, not committed yet
        thread, outcome = in_background(lambda: (ingest(webhook, "pi_race_one"), webhook.commit()))
        wait_until_blocked(db, webhook.info.backend_pid)
        creator.commit()
        thread.join(timeout=10)
    assert outcome and outcome[0][0] == "applied", "the event waited for the payment, then applied"
    assert final_state(db, "pi_race_one") == ("succeeded", "applied")


def test_payment_committing_while_its_early_event_commits(
    db_dsn: str, db: psycopg.Connection[Any], keyed: None
) -> None:
    with app_conn(db_dsn) as creator, app_conn(db_dsn) as webhook:
        assert ingest(webhook, "pi_race_two") == "pending"  # not committed yet
        thread, done = in_background(
            lambda: (record_payment(creator, "pi_race_two"), creator.commit())
        )
        wait_until_blocked(db, creator.info.backend_pid)
        webhook.commit()
        thread.join(timeout=10)
    assert done, "recording the payment finished"
    assert final_state(db, "pi_race_two") == ("succeeded", "applied")


def link_transaction(conn: psycopg.Connection[Any], stripe_id: str) -> str:
    found = conn.execute(
        "SELECT status FROM api.create_transaction_v1(%s, NULL, %s, 5.00, 'USD', %s)",
        (KEY, f"order-{stripe_id}", stripe_id),
    ).fetchone()
    assert found is not None
    return str(found[0])


def transaction_status(db: psycopg.Connection[Any], stripe_id: str) -> Any:
    return db.execute(
        "SELECT status::text FROM tollgate.transactions WHERE reference = %s",
        (f"order-{stripe_id}",),
    ).fetchone()


def test_linking_a_transaction_while_the_payment_succeeds(
    db_dsn: str, db: psycopg.Connection[Any], keyed: None
) -> None:
    with app_conn(db_dsn) as setup:
        record_payment(setup, "pi_link_one")
        setup.commit()
    with app_conn(db_dsn) as webhook, app_conn(db_dsn) as linker:
        assert ingest(webhook, "pi_link_one") == "applied"  # succeeded, not committed yet
        thread, status = in_background(
            lambda: (link_transaction(linker, "pi_link_one"), linker.commit())
        )
        wait_until_blocked(db, linker.info.backend_pid)
        webhook.commit()
        thread.join(timeout=10)
    assert status and status[0][0] == "settled", "the link waited and saw the success"
    assert transaction_status(db, "pi_link_one") == ("settled",)
    assert ledger_problems(db) == []


def test_the_payment_succeeding_while_a_transaction_is_linked(
    db_dsn: str, db: psycopg.Connection[Any], keyed: None
) -> None:
    with app_conn(db_dsn) as setup:
        record_payment(setup, "pi_link_two")
        setup.commit()
    with app_conn(db_dsn) as webhook, app_conn(db_dsn) as linker:
        assert link_transaction(linker, "pi_link_two") == "pending"  # not committed yet
        thread, done = in_background(lambda: (ingest(webhook, "pi_link_two"), webhook.commit()))
        wait_until_blocked(db, webhook.info.backend_pid)
        linker.commit()
        thread.join(timeout=10)
    assert done and done[0][0] == "applied"
    assert transaction_status(db, "pi_link_two") == ("settled",), "the webhook settled the new link"
    assert ledger_problems(db) == []


def test_audit_chain_under_writers_of_one_account(db_dsn: str, db: psycopg.Connection[Any]) -> None:
    """Settlements (a posting's audit row, then its wallets) racing authorize and capture (the
    wallet, then the hold's audit row) on one account: with the chain's head locked at each
    audit insert these deadlocked; sealed at COMMIT in account order, none may."""
    db.autocommit = True
    db.execute("SELECT api.create_api_key_v1('ops', 'ops-race-key', true, NULL)")
    db.execute("SELECT api.create_api_key_v1('busy', 'busy-race-key', false, NULL)")
    db.execute("SELECT api.set_action_price_v1('ops-race-key', 'act', 0.01, 'USD', NULL)")
    db.execute("SELECT api.create_transaction_v1('busy-race-key', NULL, 'seed', 100, 'USD', NULL)")
    db.execute("SELECT api.move_transaction_v1('ops-race-key', 'busy', 'seed', 'settled')")
    rounds = 40

    def settle(conn: psycopg.Connection[Any], i: int) -> None:
        conn.execute(
            "SELECT api.create_transaction_v1('busy-race-key', NULL, %s, 1, 'USD', NULL)",
            (f"s{i}",),
        )
        conn.execute(
            "SELECT api.move_transaction_v1('ops-race-key', 'busy', %s, 'settled')", (f"s{i}",)
        )

    def spend(conn: psycopg.Connection[Any], i: int) -> None:
        hold = conn.execute(
            "SELECT hold_id FROM api.authorize_v1('busy-race-key', NULL, 'act', NULL, NULL, NULL,"
            " NULL)"
        ).fetchone()
        assert hold is not None and hold[0] is not None
        conn.execute("SELECT api.capture_hold_v1('busy-race-key', %s, NULL)", (hold[0],))

    def worker(n: int) -> list[str]:
        failures = []
        with app_conn(db_dsn) as conn:
            conn.commit()
            for i in range(rounds):
                try:
                    (settle if n == 0 else spend)(conn, i)
                    conn.commit()  # each call its own transaction, as over HTTP
                except psycopg.Error as exc:
                    conn.rollback()
                    failures.append(f"{type(exc).__name__}: {exc}")
        return failures

    results = in_parallel(3, worker)
    assert results == [[], [], []]
    assert db.execute("SELECT * FROM tollgate.verify_audit_chain()").fetchall() == []
    sealed = db.execute(
        "SELECT count(*), max(s.seq) FROM tollgate.audit_seals s"
        " JOIN tollgate.accounts a ON a.id = s.account_uuid WHERE a.external_id = 'busy'"
    ).fetchone()
    assert sealed is not None and sealed[0] == sealed[1] > 3 * rounds, "one unbroken sequence"
    assert ledger_problems(db) == []


def test_velocity_counts_concurrent_inserts(db_dsn: str, db: psycopg.Connection[Any]) -> None:
    """Ten transactions at once against "more than 3 an hour": each counts the others."""
    db.autocommit = True
    db.execute("SELECT api.create_api_key_v1('ops', 'ops-race-key', true, NULL)")
    db.execute("SELECT api.create_api_key_v1('fast', 'fast-race-key', false, NULL)")
    db.execute("SELECT api.set_risk_rule_v1('ops-race-key', 'fast', 'EUR', NULL, 3, 3600, NULL)")

    def record(i: int) -> None:
        with app_conn(db_dsn) as conn:
            conn.execute(
                "SELECT api.create_transaction_v1('fast-race-key', NULL, %s, 1, 'EUR', NULL)",
                (f"v{i}",),
            )
            conn.commit()

    in_parallel(10, record)
    flagged = db.execute(
        "SELECT count(*) FROM tollgate.review_v1"
        " WHERE account_id = 'fast' AND 'velocity' = ANY (rules)"
    ).fetchone()
    assert flagged == (7,), "all but the first three"
