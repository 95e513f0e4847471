"""Risk reviews over HTTP: rules set by admins, flagged transactions held, decisions recorded."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import Api
from tests.helpers import event, row_counts, sign, wait_applied


def test_flag_hold_approve_reject(api: Api, new_key: Any, db: psycopg.Connection[Any]) -> None:
    with api.client(new_key("shop")) as shop, api.client(new_key("ops", admin=True)) as ops:
        own = shop.put("/v1/risk-rules/USD", json={"max_amount": "1.00"})
        assert own.status_code == 403 and own.json()["error"]["code"] == "admin_key_required"
        rule = ops.put(
            "/v1/risk-rules/USD", params={"account_id": "shop"}, json={"max_amount": "100.00"}
        )
        assert rule.status_code == 200, rule.text
        assert rule.json() == {
            "account_id": "shop",
            "currency": "USD",
            "max_amount": "100.00",
            "max_amount_minor": 10000,
            "velocity_count": None,
            "velocity_seconds": None,
            "first_amount_max": None,
            "first_amount_max_minor": None,
        }

        for reference, amount in (("ok-1", "100.00"), ("big-1", "100.01"), ("big-2", "250.00")):
            made = shop.post(
                "/v1/transactions",
                json={"reference": reference, "amount": amount, "currency": "USD"},
            )
            assert made.status_code == 201, made.text

        assert shop.get("/v1/reviews").status_code == 403, "listing reviews takes an admin key"
        listed = ops.get("/v1/reviews")
        assert listed.status_code == 200
        reviews = {r["subject_ref"]: r for r in listed.json()}
        assert sorted(reviews) == ["big-1", "big-2"], "only what is above the threshold"
        assert reviews["big-1"]["rules"] == ["amount_above_threshold"]
        assert reviews["big-1"]["status"] == "open" and reviews["big-1"]["account_id"] == "shop"

        held = ops.post("/v1/transactions/big-1/settle", params={"account_id": "shop"})
        assert held.status_code == 409 and held.json()["error"]["code"] == "under_review"
        assert ops.post("/v1/transactions/ok-1/settle", params={"account_id": "shop"}).is_success

        first = reviews["big-1"]["id"]
        assert shop.post(f"/v1/reviews/{first}/approve").status_code == 403
        approved = ops.post(f"/v1/reviews/{first}/approve", json={"note": "invoice checked"})
        assert approved.status_code == 200, approved.text
        assert (
            approved.json()["status"] == "approved" and approved.json()["note"] == "invoice checked"
        )
        again = ops.post(f"/v1/reviews/{first}/approve", json={"note": "twice"})
        assert again.status_code == 200 and again.json()["note"] == "invoice checked", "idempotent"
        flip = ops.post(f"/v1/reviews/{first}/reject")
        assert flip.status_code == 409, "a decision is final"
        settled = ops.post("/v1/transactions/big-1/settle", params={"account_id": "shop"})
        assert settled.status_code == 200 and settled.json()["status"] == "settled"

        rejected = ops.post(f"/v1/reviews/{reviews['big-2']['id']}/reject")
        assert rejected.status_code == 200 and rejected.json()["note"] is None
        assert shop.get("/v1/transactions/big-2").json()["status"] == "failed"
        assert ops.get("/v1/reviews").json() == [], "nothing open any more"
        decided = ops.get("/v1/reviews", params={"status": "approved"}).json()
        assert [r["subject_ref"] for r in decided] == ["big-1"]

    trail = db.execute(
        "SELECT new_value, note, actor LIKE 'key:%%' FROM tollgate.audit_log"
        " WHERE entity = 'review' AND action = 'decided' ORDER BY id"
    ).fetchall()
    assert trail == [("approved", "invoice checked", True), ("rejected", None, True)]


def test_bad_review_requests_write_nothing(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    with api.client(new_key("ops", admin=True)) as ops:
        before = row_counts(db)
        missing = ops.post("/v1/reviews/00000000-0000-0000-0000-000000000001/approve")
        assert missing.status_code == 404, missing.text
        for bad in (
            ops.post("/v1/reviews/not-a-uuid/approve"),
            ops.post(
                "/v1/reviews/00000000-0000-0000-0000-000000000001/approve", json={"verdict": "yes"}
            ),
            ops.get("/v1/reviews", params={"status": "maybe"}),
            ops.put("/v1/risk-rules/USD", json={"max_amount": "1.001"}),
            ops.put("/v1/risk-rules/USD", json={"velocity_count": 3}),
            ops.put("/v1/risk-rules/USD", json={}),
            ops.put("/v1/risk-rules/USD", json={"max_amount": None}),
            ops.put("/v1/risk-rules/XYZ", json={"max_amount": "1"}),
            ops.put(
                "/v1/risk-rules/USD", params={"account_id": "nobody"}, json={"max_amount": "1"}
            ),
        ):
            assert 400 <= bad.status_code < 500, (bad.request.url, bad.status_code, bad.text)
            assert bad.json()["error"]["code"], bad.text
        assert row_counts(db) == before


def test_a_flagged_top_up_grants_nothing_until_approved(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """The credits a flagged payment buys are held with it; can-continue agrees with authorize."""
    with api.client(new_key("ops", admin=True)) as ops:
        assert ops.put("/v1/risk-rules/USD", json={"max_amount": "5.00"}).is_success
        assert ops.put("/v1/actions/report.generate", json={"price": "1.00", "currency": "USD"})
    with api.client(new_key("risky")) as risky:
        paid = risky.post(
            "/v1/payments",
            json={"amount": "20.00", "currency": "usd", "purpose": "credits"},
            headers={"Idempotency-Key": "top-up"},
        )
        assert paid.status_code == 201, paid.text
        body = event("evt_top_up_ok", paid.json()["stripe_id"], "succeeded")
        applied = risky.post(
            "/v1/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": sign(body, api.webhook_secret)},
        )
        assert applied.status_code == 200 and applied.json()["outcome"] == "received"
        assert wait_applied(api.dsn, "evt_top_up_ok") == {"evt_top_up_ok": "applied"}

        held = risky.get("/v1/accounts/risky/can-continue", params={"purpose": "credits"})
        assert held.status_code == 402
        assert held.json()["status"] == "under_review"
        refused = risky.post("/v1/authorize", json={"action": "report.generate"})
        assert refused.status_code == 402, "the credits cannot pay for a run yet"
        assert risky.get("/v1/accounts/risky/balances").json()["balances"] == []

    with api.client(new_key("ops", admin=True)) as ops:
        reviews = ops.get("/v1/reviews").json()
        assert {r["subject"] for r in reviews} == {"payment", "transaction"}
        payment_review = next(r for r in reviews if r["subject"] == "payment")
        transaction_review = next(r for r in reviews if r["subject"] == "transaction")
        assert ops.post(f"/v1/reviews/{transaction_review['id']}/approve").is_success
        assert risky_balances(api, new_key) == [], "the payment's review still holds them"
        assert ops.post(f"/v1/reviews/{payment_review['id']}/approve").is_success
    with api.client(new_key("risky")) as risky:
        assert risky.get(
            "/v1/accounts/risky/can-continue", params={"purpose": "credits"}
        ).is_success
        allowed = risky.post("/v1/authorize", json={"action": "report.generate"})
        assert allowed.status_code == 200 and allowed.json()["via"] == "credits"


def risky_balances(api: Api, new_key: Any) -> list[Any]:
    with api.client(new_key("risky")) as risky:
        found: list[Any] = risky.get("/v1/accounts/risky/balances").json()["balances"]
        return found
