"""Liveness, readiness, and what callers get while the database is down."""

from __future__ import annotations

import httpx

from api.stripe_emulator import free_port
from tests.conftest import Api, Emulator, ServerThread, make_settings
from tests.helpers import event, sign


def test_healthz_and_readyz(api: Api) -> None:
    with api.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready"}


def test_unknown_routes_answer_json_404(api: Api) -> None:
    with api.client() as http:
        r = http.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_database_down_gives_503_with_retry_after(emulator: Emulator) -> None:
    # Nothing listens on this port: the pool never gets a connection.
    dead = f"host=127.0.0.1 port={free_port()} dbname=tollgate user=postgres connect_timeout=1"
    settings = make_settings(dead, emulator.base, db_pool_timeout=0.5, db_pool_min_size=1)
    secret = "whsec_" + "0" * 32  # never checked: the database is down
    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        auth = {"Authorization": "Bearer tg_any_key_at_all"}
        payload = event("evt_while_down", "pi_x", "succeeded")
        responses = {
            "readyz": http.get("/readyz"),
            "create": http.post(
                "/v1/payments",
                json={"amount_minor": 100, "currency": "usd"},
                headers=auth | {"Idempotency-Key": "down"},
            ),
            "read": http.get("/v1/accounts/a/can-continue", headers=auth),
            "webhook": http.post(
                "/v1/webhooks/stripe",
                content=payload,
                headers={
                    "Stripe-Signature": sign(payload, secret),
                    "Content-Type": "application/json",
                },
            ),
        }
        assert http.get("/healthz").status_code == 200, "liveness does not depend on the database"
    for name, r in responses.items():
        assert r.status_code == 503, f"{name}: {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "database_unavailable", name
        assert r.headers.get("retry-after"), name
