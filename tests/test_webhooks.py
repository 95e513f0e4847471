"""POST /v1/webhooks/stripe: signatures, duplicates, early and stale events, concurrency."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Api
from tests.helpers import event, in_parallel, row_counts, sign

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
    payment = create_payment(api, new_key("user_1"))
    r = deliver(api, event("evt_ok_1", payment["stripe_id"], "succeeded"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "outcome": "applied",
        "event_id": "evt_ok_1",
        "payment_id": payment["id"],
        "payment_status": "succeeded",
    }
    again = deliver(api, event("evt_ok_1", payment["stripe_id"], "succeeded"))
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert row_counts(db)["outbox"] == 1


def test_stale_events_do_not_move_the_status_back(api: Api, new_key: Any) -> None:
    payment = create_payment(api, new_key("user_1"))
    now = int(time.time())
    assert (
        deliver(api, event("evt_new", payment["stripe_id"], "succeeded", now)).json()["outcome"]
        == "applied"
    )
    old = deliver(api, event("evt_old", payment["stripe_id"], "processing", now - 5))
    assert old.status_code == 200
    assert old.json()["outcome"] == "stale" and old.json()["payment_status"] == "succeeded"


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
    assert early.status_code == 200 and early.json()["outcome"] == "pending"
    db.execute(
        "INSERT INTO tollgate.payment_intents (account_id, stripe_id, amount, currency, status) "
        "SELECT account_id, 'pi_not_yet_recorded', 100, 'EUR', 'requires_payment_method' "
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
    assert outcomes == ["applied"] + ["duplicate"] * 19
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
