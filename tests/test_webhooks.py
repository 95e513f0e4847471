"""POST /v1/webhooks/stripe: signatures, duplicates, early and stale events, concurrency."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Api
from tests.helpers import event, in_parallel, row_counts, sign, wait_applied

ROOT = Path(__file__).resolve().parent.parent
PAYMENT = {"amount_minor": 2500, "currency": "eur", "purpose": "agent.run"}


def create_payment(api: Api, key: str, idem: str = "p1") -> dict[str, Any]:
    with api.client(key) as http:
        r = http.post("/v1/payments", json=PAYMENT, headers={"Idempotency-Key": idem})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def deliver(api: Api, payload: bytes, signature: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = (
        signature if signature is not None else sign(payload, api.webhook_secret)
    )
    with httpx.Client(base_url=api.url, timeout=30) as http:
        return http.post("/v1/webhooks/stripe", content=payload, headers=headers)


def test_a_signed_event_moves_the_payment(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("user_1")
    payment = create_payment(api, key)
    r = deliver(api, event("evt_ok_1", payment["stripe_id"], "succeeded"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "outcome": "received",
        "event_id": "evt_ok_1",
        "payment_id": None,
        "payment_status": None,
    }
    assert wait_applied(db, "evt_ok_1") == {"evt_ok_1": "applied"}
    with api.client(key) as http:
        shown = http.get(f"/v1/payments/{payment['id']}").json()
    assert (shown["status"], shown["events_received"]) == ("succeeded", 0)
    again = deliver(api, event("evt_ok_1", payment["stripe_id"], "succeeded"))
    assert again.status_code == 200
    assert again.json() == {
        "outcome": "duplicate",
        "event_id": "evt_ok_1",
        "payment_id": payment["id"],
        "payment_status": "succeeded",
    }
    assert row_counts(db)["outbox"] == 1


def test_a_payment_read_between_storing_and_applying_says_an_event_waits(
    api: Api, new_key: Any, db: psycopg.Connection[Any], db_dsn: str
) -> None:
    """While an event is stored and not applied, the payment shows its last applied status
    and counts the event as received; once applied, the new status and none waiting."""
    key = new_key("user_1")
    payment = create_payment(api, key)
    with psycopg.connect(db_dsn) as holder:  # holds every applier's batch back
        holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('tollgate:stripe-applier', 0))"
        )
        r = deliver(api, event("evt_wait_1", payment["stripe_id"], "succeeded"))
        assert r.status_code == 200 and r.json()["outcome"] == "received", r.text
        with api.client(key) as http:
            waiting = http.get(f"/v1/payments/{payment['stripe_id']}").json()
        assert (waiting["status"], waiting["events_received"]) == ("requires_payment_method", 1)
        holder.rollback()
    assert wait_applied(db, "evt_wait_1") == {"evt_wait_1": "applied"}
    with api.client(key) as http:
        applied = http.get(f"/v1/payments/{payment['stripe_id']}").json()
    assert (applied["status"], applied["events_received"]) == ("succeeded", 0)


def test_stale_events_do_not_move_the_status_back(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("user_1")
    payment = create_payment(api, key)
    now = int(time.time())
    assert (
        deliver(api, event("evt_new", payment["stripe_id"], "succeeded", now)).json()["outcome"]
        == "received"
    )
    assert wait_applied(db, "evt_new") == {"evt_new": "applied"}
    old = deliver(api, event("evt_old", payment["stripe_id"], "processing", now - 5))
    assert old.status_code == 200 and old.json()["outcome"] == "received"
    assert wait_applied(db, "evt_old") == {"evt_old": "stale"}
    with api.client(key) as http:
        assert http.get(f"/v1/payments/{payment['id']}").json()["status"] == "succeeded"


def test_an_event_before_its_payment_is_applied_when_the_payment_appears(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("user_1")
    with api.client(key) as http:
        created = http.post(
            "/v1/payments", json=PAYMENT, headers={"Idempotency-Key": "early"}
        ).json()
    # Stands in for Stripe's event outrunning Tollgate's own commit: an event for an
    # intent Tollgate has not recorded yet is kept, then applied when the row is inserted.
    early = deliver(api, event("evt_early", "pi_not_yet_recorded", "succeeded"))
    assert early.status_code == 200 and early.json()["outcome"] == "received"
    assert wait_applied(db, "evt_early") == {"evt_early": "pending"}
    db.execute(
        "INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status) "
        "SELECT account_uuid, 'pi_not_yet_recorded', 100, 'EUR', 'requires_payment_method' "
        "FROM tollgate.payment_intents WHERE id = %s",
        (created["id"],),
    )
    state = db.execute(
        "SELECT state::text FROM tollgate.payment_events WHERE id = 'evt_early'"
    ).fetchone()
    status = db.execute(
        "SELECT status::text FROM tollgate.payment_intents WHERE stripe_id = 'pi_not_yet_recorded'"
    ).fetchone()
    assert state == ("applied",) and status == ("succeeded",)


BAD_DELIVERIES = [
    ("no signature", lambda p, s: None, 400, "invalid_signature"),
    ("signed with another secret", lambda p, s: sign(p, "whsec_other"), 400, "invalid_signature"),
    (
        "signature older than 300 s",
        lambda p, s: sign(p, s, int(time.time()) - 301),
        400,
        "invalid_signature",
    ),
    (
        "a made-up signature",
        lambda p, s: f"t={int(time.time())},v1={'0' * 64}",
        400,
        "invalid_signature",
    ),
    ("a signature header that is not ASCII", lambda p, s: b"t=1,v1=\xe9", 400, "invalid_signature"),
]


@pytest.mark.parametrize(
    ("case", "signer", "status", "code"), BAD_DELIVERIES, ids=[c[0] for c in BAD_DELIVERIES]
)
def test_bad_signatures_are_refused_and_write_nothing(
    api: Api, db: psycopg.Connection[Any], case: str, signer: Any, status: int, code: str
) -> None:
    payload = event("evt_bad_sig", "pi_x", "succeeded")
    before = row_counts(db)
    headers = {"Content-Type": "application/json"}
    signature = signer(payload, api.webhook_secret)
    if signature is not None:
        headers["Stripe-Signature"] = signature
    with httpx.Client(base_url=api.url) as http:
        r = http.post("/v1/webhooks/stripe", content=payload, headers=headers)
    assert r.status_code == status and r.json()["error"]["code"] == code
    assert row_counts(db) == before


def test_a_tampered_body_is_refused(api: Api, db: psycopg.Connection[Any]) -> None:
    payload = event("evt_tampered", "pi_x", "processing")
    signature = sign(payload, api.webhook_secret)
    tampered = payload.replace(b"processing", b"succeeded")
    before = row_counts(db)
    r = deliver(api, tampered, signature)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    assert row_counts(db) == before


@pytest.mark.parametrize(
    ("case", "payload", "code"),
    [
        ("not JSON", b"{not json", "malformed_json"),
        ("a JSON list", b"[1, 2]", "malformed_json"),
        ("not an event", b'{"hello": "world"}', "invalid_event"),
        (
            "an event id of the wrong form",
            event("notanevent", "pi_x", "succeeded"),
            "invalid_event",
        ),
        ("JSON nested too deep to parse", b"[" * 100_000 + b"]" * 100_000, "malformed_json"),
    ],
)
def test_signed_garbage_is_refused_and_writes_nothing(
    api: Api, db: psycopg.Connection[Any], case: str, payload: bytes, code: str
) -> None:
    before = row_counts(db)
    r = deliver(api, payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert row_counts(db) == before


def test_twenty_parallel_deliveries_apply_once(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    payment = create_payment(api, new_key("user_1"))
    payload = event("evt_storm", payment["stripe_id"], "succeeded")
    signature = sign(payload, api.webhook_secret)
    responses = in_parallel(20, lambda _: deliver(api, payload, signature))
    assert [r.status_code for r in responses] == [200] * 20
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["duplicate"] * 19 + ["received"]
    assert wait_applied(db, "evt_storm") == {"evt_storm": "applied"}
    counts = row_counts(db)
    assert counts["payment_events"] == 1
    assert counts["outbox"] == 1
    audit = db.execute(
        "SELECT count(*) FROM tollgate.audit_log"
        " WHERE entity_id = %s AND action = 'status_changed'",
        (payment["id"],),
    ).fetchone()
    assert audit == (1,)


def test_an_oversized_body_is_refused_before_it_is_read(
    api: Api, db: psycopg.Connection[Any]
) -> None:
    payload = b'{"id": "evt_big", "padding": "' + b"x" * (1 << 20) + b'"}'
    before = row_counts(db)
    r = deliver(api, payload)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert row_counts(db) == before


def app_connection(dsn: str) -> psycopg.Connection[Any]:
    """A connection with only the service's rights, as a compromised service would have."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET ROLE tollgate_app")
    return conn


def test_the_service_role_cannot_create_money(
    api: Api, new_key: Any, db: psycopg.Connection[Any], db_dsn: str
) -> None:
    """The attack of issue 12: with the service's role, record a credits payment with a
    Stripe id nobody created, then have it 'succeed' with an event Stripe never signed.
    Nothing is credited, whichever way the event is sent."""
    key = new_key("forger")
    with app_connection(db_dsn) as app:
        app.execute(
            "SELECT api.finish_payment_v1(%s, (SELECT payment_id FROM api.begin_payment_v1("
            " %s, 'forge-1', NULL, 99999900, 'USD', 'credits', NULL, NULL)),"
            " 'pi_invented_by_the_service', 'requires_payment_method', NULL)",
            (key, key),
        )
        before = row_counts(db)
        payload = event("evt_forged", "pi_invented_by_the_service", "succeeded")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT * FROM api.ingest_stripe_event_v1(%s::jsonb)", (payload.decode(),))
        for signature in (None, "", sign(payload, "whsec_the_forger_made_this_secret_up")):
            with pytest.raises(psycopg.Error) as refused:
                app.execute(
                    "SELECT * FROM api.ingest_stripe_webhook_v1(%s, %s)",
                    (payload.decode(), signature),
                )
            assert refused.value.sqlstate == "TG031"
    for signature in (None, sign(payload, "whsec_the_forger_made_this_secret_up")):
        r = deliver(api, payload, signature) if signature else unsigned(api, payload)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature", r.text
    assert row_counts(db) == before, "no event, no status change, no posting"
    with api.client(key) as http:
        balances = http.get("/v1/accounts/forger/balances").json()["balances"]
        payment = http.get("/v1/payments/pi_invented_by_the_service").json()
    assert [b["balance_minor"] for b in balances] in ([], [0])
    assert payment["status"] == "requires_payment_method"


def unsigned(api: Api, payload: bytes) -> httpx.Response:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        return http.post(
            "/v1/webhooks/stripe", content=payload, headers={"Content-Type": "application/json"}
        )


def test_a_rotated_secret_verifies_after_a_signature_that_does_not(
    api: Api, new_key: Any, db: psycopg.Connection[Any], db_dsn: str
) -> None:
    """Stripe rolls a secret over: for a while it signs with the old and the new one, in any
    order. Both are registered; a signature that matches counts wherever it is in the header,
    and once the old secret is removed its signatures stop verifying."""
    env = os.environ | {"DATABASE_URL": db_dsn}
    new_secret = "whsec_" + secrets.token_hex(16)
    added = tollgate_cli("webhook-secret", "add", "--label", "rolled", env=env, stdin=new_secret)
    assert added.returncode == 0, added.stderr
    listed = tollgate_cli("webhook-secret", "list", env=env)
    assert new_secret[:10] in listed.stdout and new_secret not in listed.stdout
    assert api.webhook_secret not in listed.stdout

    first = create_payment(api, new_key("user_1"))
    payload = event("evt_rotated", first["stripe_id"], "succeeded")
    good = sign(payload, new_secret).split(",")
    header = f"{good[0]},v1={'0' * 64},{good[1]},v0={'1' * 64}"
    r = deliver(api, payload, header)
    assert r.status_code == 200 and r.json()["outcome"] == "received", r.text
    assert wait_applied(db, "evt_rotated") == {"evt_rotated": "applied"}

    old_id = next(
        line.split()[0] for line in listed.stdout.splitlines() if api.webhook_secret[:10] in line
    )
    assert tollgate_cli("webhook-secret", "remove", old_id, env=env).returncode == 0
    before = row_counts(db)
    late = event("evt_old_secret", first["stripe_id"], "succeeded")
    refused = deliver(api, late, sign(late, api.webhook_secret))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_signature"
    assert row_counts(db) == before


def tollgate_cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    extra = ("--secret-file", "-") if stdin is not None else ()
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args, *extra],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
