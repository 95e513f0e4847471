"""Risk reviews over HTTP: rules set by admins, flagged transactions held, decisions recorded."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import Api
from tests.helpers import row_counts


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
