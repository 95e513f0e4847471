"""Reading back over HTTP what agents and operators set: prices, spend caps, wallets, holds,
risk rules, keys, payments, an account's events; and the one way every list pages (``limit``,
an opaque ``cursor``, ``next_cursor``). The scoping rules themselves are pgTAP's
(tests/sql/20-accounts-lists.sql); here is the contract: shapes, both forms of every amount,
another account's key refused, and every list walked to its end without a row twice."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from db import queries
from db.listener import OutboxEvent
from tests.conftest import Api
from tollgate import BadRequest, Client, Forbidden, NotFound, models

Json = dict[str, Any]


def walk(http: httpx.Client, path: str, items: str, limit: int, **params: Any) -> list[Json]:
    """Every row of a list, a page of ``limit`` at a time, following next_cursor to the end:
    each full page gives a cursor, the page that is not full ends the list."""
    rows: list[Json] = []
    cursor: str | None = None
    for _ in range(100):
        sent = {**params, "limit": limit} | ({"cursor": cursor} if cursor else {})
        r = http.get(path, params=sent)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page[items]) <= limit
        rows += page[items]
        cursor = page["next_cursor"]
        assert (cursor is None) == (len(page[items]) < limit), page
        if cursor is None:
            return rows
    raise AssertionError(f"{path} never ended")


def identities(rows: list[Json], *fields: str) -> list[tuple[Any, ...]]:
    found = [tuple(row[f] for f in fields) for row in rows]
    assert len(set(found)) == len(found), f"a row came twice: {found}"
    return found


def fund(admin: httpx.Client, account: str, amount: str, reference: str) -> None:
    body = {"account_id": account, "reference": reference, "amount": amount, "currency": "USD"}
    assert admin.post("/v1/transactions", json=body).status_code == 201
    settled = admin.post(f"/v1/transactions/{reference}/settle", params={"account_id": account})
    assert settled.status_code == 200, settled.text


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text


def test_prices_are_read_back_by_any_key_a_page_at_a_time(api: Api, new_key: Any) -> None:
    names = [f"task.{n:02d}" for n in range(7)]
    with api.client(new_key("ops", admin=True)) as admin, api.client(new_key("shop")) as http:
        for n, name in enumerate(names):
            body = {"price_minor": 100 + n, "currency": "USD", "description": f"run {n}"}
            assert admin.put(f"/v1/actions/{name}", json=body).status_code == 200
        for metric, price in (("tokens", "0.00002"), ("calls", "1.5")):
            body = {"unit_price": price, "currency": "USD"}
            assert admin.put(f"/v1/metrics/{metric}", json=body).status_code == 200

        actions = walk(http, "/v1/actions", "actions", 3)
        assert identities(actions, "action") == [(n,) for n in names], "by name, each once"
        assert actions[1] == {
            "action": "task.01",
            "price": "1.01",
            "price_minor": 101,
            "currency": "USD",
            "description": "run 1",
        }
        metrics = walk(http, "/v1/metrics", "metrics", 1)
        assert [(m["metric"], Decimal(m["unit_price"])) for m in metrics] == [
            ("calls", Decimal("1.50")),
            ("tokens", Decimal("0.00002")),
        ]
        assert metrics[1]["unit_price"] == "0.00002", "exactly: a fraction of a cent"

        with api.client("tg_not_a_key") as stranger:
            refused(stranger.get("/v1/actions"), 401, "invalid_api_key")


def test_wallets_and_holds_read_back_within_the_account(api: Api, new_key: Any) -> None:
    ops_key, key, other_key = new_key("ops", admin=True), new_key("shop"), new_key("other")
    with (
        api.client(ops_key) as admin,
        api.client(key) as http,
        api.client(other_key) as other,
    ):
        admin.put("/v1/actions/report.generate", json={"price": "0.50", "currency": "USD"})
        fund(admin, "shop", "5.00", "fund-shop")
        fund(admin, "other", "1.00", "fund-other")
        wallet = {"overdraft_limit": "2.00", "low_balance_minor": 100}
        assert admin.put("/v1/accounts/shop/wallets/usd", json=wallet).status_code == 200
        holds = []
        for agent in ("a1", "a2", "a1", "a3", "a1"):
            r = http.post("/v1/authorize", json={"action": "report.generate", "agent_id": agent})
            assert r.status_code == 200, r.text
            holds.append(r.json()["hold_id"])
        assert (
            http.post(f"/v1/holds/{holds[0]}/capture", json={"amount": "0.30"}).status_code == 200
        )
        assert http.post(f"/v1/holds/{holds[1]}/release").status_code == 200
        assert other.post("/v1/authorize", json={"action": "report.generate"}).status_code == 200

        wallets = http.get("/v1/accounts/shop/wallets").json()
        assert wallets == {
            "wallets": [
                {
                    "account_id": "shop",
                    "currency": "USD",
                    "balance": "4.70",
                    "balance_minor": 470,
                    "held": "1.50",
                    "held_minor": 150,
                    "available": "5.20",
                    "available_minor": 520,
                    "overdraft_limit": "2.00",
                    "overdraft_limit_minor": 200,
                    "allow_negative": True,
                    "low_balance": "1.00",
                    "low_balance_minor": 100,
                    "version": 2,
                }
            ],
            "next_cursor": None,
        }
        refused(other.get("/v1/accounts/shop/wallets"), 404, "not_found")
        assert admin.get("/v1/accounts/shop/wallets").json() == wallets

        listed = walk(http, "/v1/holds", "holds", 2)
        assert [h["id"] for h in listed] == list(reversed(holds)), "newest first, each once"
        first = listed[-1]
        assert (first["status"], first["captured_amount"], first["captured_amount_minor"]) == (
            "captured",
            "0.30",
            30,
        )
        assert (first["amount"], first["amount_minor"], first["agent_id"]) == ("0.50", 50, "a1")
        active = walk(http, "/v1/holds", "holds", 1, status="active", agent_id="a1")
        assert [h["id"] for h in active] == [holds[4], holds[2]]
        assert walk(http, "/v1/holds", "holds", 5, action="image.render") == []
        assert [h["id"] for h in walk(admin, "/v1/holds", "holds", 4, account_id="shop")] == [
            h["id"] for h in listed
        ]
        assert [h["account_id"] for h in other.get("/v1/holds").json()["holds"]] == ["other"]
        refused(other.get("/v1/holds", params={"account_id": "shop"}), 404, "not_found")
        refused(http.get("/v1/holds", params={"status": "gone"}), 422, "invalid_request")

        # A cursor of shop's list means nothing in other's: refused, telling nothing of it.
        cursor = http.get("/v1/holds", params={"limit": 1}).json()["next_cursor"]
        refused(other.get("/v1/holds", params={"cursor": cursor}), 422, "invalid_cursor")


def test_spend_caps_and_risk_rules_read_back(api: Api, new_key: Any) -> None:
    ops_key, key, other_key = new_key("ops", admin=True), new_key("shop"), new_key("other")
    with (
        api.client(ops_key) as admin,
        api.client(key) as http,
        api.client(other_key) as other,
    ):
        set_caps = [
            admin.put("/v1/accounts/shop/spend-caps", json=cap).json()
            for cap in (
                {"agent_id": "bot", "period": "day", "currency": "USD", "hard_limit": "1.00"},
                {"period": "month", "currency": "USD", "hard_limit_minor": 5000, "soft_pct": 50},
                {"period": "day", "currency": "EUR", "hard_limit": "20"},
            )
        ]
        caps = walk(http, "/v1/accounts/shop/spend-caps", "spend_caps", 2)
        assert caps == [set_caps[2], set_caps[1], set_caps[0]], "the account's own first"
        assert caps[1]["hard_limit"] == "50.00" and caps[1]["hard_limit_minor"] == 5000
        assert walk(admin, "/v1/accounts/shop/spend-caps", "spend_caps", 50) == caps
        refused(other.get("/v1/accounts/shop/spend-caps"), 404, "not_found")
        assert other.get("/v1/accounts/other/spend-caps").json()["spend_caps"] == []

        default = {"max_amount": "500.00", "velocity_count": 20, "velocity_seconds": 3600}
        own = {"max_amount_minor": 10000, "first_amount_max": "50.00"}
        set_rules = [
            admin.put("/v1/risk-rules/USD", json=default).json(),
            admin.put("/v1/risk-rules/USD", json=own, params={"account_id": "shop"}).json(),
        ]
        rules = walk(admin, "/v1/risk-rules", "risk_rules", 1)
        assert rules == set_rules, "the default first, then each account's"
        assert rules[1]["max_amount"] == "100.00" and rules[1]["first_amount_max_minor"] == 5000
        assert walk(admin, "/v1/risk-rules", "risk_rules", 9, account_id="shop") == [rules[1]]
        refused(http.get("/v1/risk-rules"), 403, "admin_key_required")
        refused(admin.get("/v1/risk-rules", params={"account_id": "nobody"}), 404, "not_found")


def test_keys_are_read_back_by_prefix_never_the_key(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    ops_key = new_key("ops", admin=True)
    made = [new_key("shop") for _ in range(3)]
    other_key = new_key("other")
    listed_keys = queries.list_api_keys(db, account="shop")
    queries.revoke_api_key(db, key_id=listed_keys[0].key_id)
    with api.client(made[1]) as http, api.client(other_key) as other:
        r = http.get("/v1/accounts/shop/keys", params={"limit": 2})
        keys = walk(http, "/v1/accounts/shop/keys", "keys", 2)
        refused(other.get("/v1/accounts/shop/keys"), 404, "not_found")
    assert identities(keys, "key_id") == [(str(k.key_id),) for k in listed_keys], "oldest first"
    assert [k["key_prefix"] for k in keys] == [k[:11] for k in made]
    assert [k["revoked_at"] is not None for k in keys] == [True, False, False]
    assert set(keys[0]) == {
        "key_id",
        "account_id",
        "key_prefix",
        "is_admin",
        "label",
        "created_at",
        "revoked_at",
    }
    for secret in [*made, ops_key]:
        assert secret not in r.text and secret[11:] not in r.text, "never the key"
    hashes = db.execute("SELECT encode(key_hash, 'hex') FROM tollgate.api_keys").fetchall()
    assert not any(h in r.text for (h,) in hashes), "nor its hash"


def test_payments_are_listed_newest_first_with_both_amounts(api: Api, new_key: Any) -> None:
    ops_key, key, other_key = new_key("ops", admin=True), new_key("shop"), new_key("other")
    created = []
    with (
        api.client(ops_key) as admin,
        api.client(key) as http,
        api.client(other_key) as other,
    ):
        for n, purpose in enumerate(["credits", "report.generate", "credits", "credits"]):
            body = {"amount_minor": 500 + n, "currency": "usd", "purpose": purpose}
            r = http.post("/v1/payments", json=body, headers={"Idempotency-Key": f"pay-{n}"})
            assert r.status_code == 201, r.text
            created.append(r.json())
        r = other.post(
            "/v1/payments",
            json={"amount": "9.00", "currency": "usd"},
            headers={"Idempotency-Key": "x"},
        )
        assert r.status_code == 201

        listed = walk(http, "/v1/payments", "payments", 3)
        assert identities(listed, "id") == [(p["id"],) for p in reversed(created)]
        expected = {k: v for k, v in created[0].items() if k != "client_secret"}
        assert listed[-1] == expected, "each as GET /v1/payments/{id} answers it"
        assert (listed[-1]["amount"], listed[-1]["amount_minor"]) == ("5.00", 500)
        paid_runs = walk(http, "/v1/payments", "payments", 2, purpose="report.generate")
        assert [p["id"] for p in paid_runs] == [created[1]["id"]]
        waiting = walk(http, "/v1/payments", "payments", 10, status="requires_payment_method")
        assert len(waiting) == 4
        assert walk(http, "/v1/payments", "payments", 10, status="succeeded") == []
        assert walk(admin, "/v1/payments", "payments", 2, account_id="shop") == listed
        refused(other.get("/v1/payments", params={"account_id": "shop"}), 404, "not_found")
        assert [p["account_id"] for p in other.get("/v1/payments").json()["payments"]] == ["other"]


def test_an_accounts_events_are_what_listeners_receive(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    ops_key, key, other_key = new_key("ops", admin=True), new_key("shop"), new_key("other")
    with (
        api.client(ops_key) as admin,
        api.client(key) as http,
        api.client(other_key) as other,
    ):
        for n in range(5):
            fund(admin, "shop", "1.00", f"order-{n}")
        fund(admin, "other", "1.00", "order-x")
        reverse = admin.post("/v1/transactions/order-0/reverse", params={"account_id": "shop"})
        assert reverse.status_code == 200, reverse.text
        events = walk(http, "/v1/accounts/shop/events", "events", 2)
        reversed_only = walk(
            http, "/v1/accounts/shop/events", "events", 2, type="transaction.reversed"
        )
        refused(other.get("/v1/accounts/shop/events"), 404, "not_found")
        assert walk(admin, "/v1/accounts/shop/events", "events", 50) == events

    assert [(e["type"], e["data"]["reference"]) for e in events] == [
        ("transaction.reversed", "order-0"),
        *[("transaction.settled", f"order-{n}") for n in reversed(range(5))],
    ], "newest first"
    assert reversed_only == events[:1]
    identities(events, "id")

    queries.register_consumer(db, consumer="reads-test", from_start=True)
    delivered = queries.claim_deliveries(
        db, consumer="reads-test", limit=100, lease=dt.timedelta(minutes=1), max_attempts=3
    )
    sent = [
        OutboxEvent(
            outbox_id=d.outbox_id,
            id=d.id,
            type=d.type,
            account_id=d.account_id,
            data=d.data,
            created=d.created,
            attempt=d.attempt,
        ).to_json()
        for d in reversed(delivered)
        if d.account_id == "shop"
    ]

    def same(event: Json) -> tuple[Any, ...]:
        when = dt.datetime.fromisoformat(event["created"].replace("Z", "+00:00"))
        return (event["id"], event["type"], event["account_id"], event["data"], when)

    assert [same(e) for e in events] == [same(e) for e in sent]
    assert all(set(e) == set(s) - {"attempt"} for e, s in zip(events, sent, strict=True))


def test_transactions_page_with_a_cursor_and_still_with_before(api: Api, new_key: Any) -> None:
    with api.client(new_key("ops", admin=True)) as admin, api.client(new_key("shop")) as http:
        for n in range(5):
            body = {"reference": f"t-{n}", "amount": "1.00", "currency": "USD"}
            assert http.post("/v1/transactions", json=body).status_code == 201
        by_cursor = walk(http, "/v1/transactions", "transactions", 2)
        assert identities(by_cursor, "reference") == [(f"t-{n}",) for n in reversed(range(5))]

        first = http.get("/v1/transactions", params={"limit": 2}).json()
        assert first["next_before"] == first["transactions"][-1]["id"]
        old_way = http.get(
            "/v1/transactions", params={"limit": 2, "before": first["next_before"]}
        ).json()
        new_way = http.get(
            "/v1/transactions", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
        assert old_way == new_way and [t["reference"] for t in new_way["transactions"]] == [
            "t-2",
            "t-1",
        ]
        both = {"cursor": first["next_cursor"], "before": first["next_before"]}
        refused(http.get("/v1/transactions", params=both), 422, "invalid_cursor")
        with api.client(new_key("other")) as other:
            cursor = {"cursor": first["next_cursor"]}
            refused(other.get("/v1/transactions", params=cursor), 422, "invalid_cursor")
        assert walk(admin, "/v1/transactions", "transactions", 3, account_id="shop") == by_cursor


LISTS = [
    "/v1/actions",
    "/v1/metrics",
    "/v1/holds",
    "/v1/payments",
    "/v1/transactions",
    "/v1/risk-rules",
    "/v1/accounts/shop/spend-caps",
    "/v1/accounts/shop/wallets",
    "/v1/accounts/shop/keys",
    "/v1/accounts/shop/events",
]


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "x",  # not base64 of anything
        _cursor("nothing-of-ours"),
        _cursor("payments:not-a-uuid"),
        _cursor("events:12:34"),
        _cursor("wallets:\x00"),
        _cursor("holds:00000000-0000-0000-0000-000000000000"),
    ],
)
def test_every_list_refuses_a_cursor_it_did_not_give(api: Api, new_key: Any, cursor: str) -> None:
    """Whatever the cursor, a list answers 422 invalid_cursor unless it gave it (here, each
    list is asked with cursors made for another list, or for none)."""
    with api.client(new_key("ops", admin=True)) as admin:
        new_key("shop")
        for path in LISTS:
            if path == "/v1/holds" and cursor == LISTS_HOLD_CURSOR:
                continue  # the one list this cursor is the form of: checked below
            refused(admin.get(path, params={"cursor": cursor}), 422, "invalid_cursor")
            refused(admin.get(path, params={"limit": 0}), 422, "invalid_request")
            refused(admin.get(path, params={"limit": 501}), 422, "invalid_request")
        # Well formed for holds, but naming no hold of this list: the database refuses it.
        refused(admin.get("/v1/holds", params={"cursor": LISTS_HOLD_CURSOR}), 422, "invalid_cursor")


LISTS_HOLD_CURSOR = _cursor("holds:00000000-0000-0000-0000-000000000000")


def test_the_client_reads_every_list_typed(api: Api, new_key: Any) -> None:
    ops_key, key = new_key("ops", admin=True), new_key("shop")
    with Client(api.url, ops_key) as ops, Client(api.url, key) as agent:
        ops.set_action_price("report.generate", "0.50", "USD")
        ops.set_metric_price("tokens", "0.001", "USD")
        ops.set_spend_cap("shop", "day", "USD", "3.00")
        ops.set_risk_rule("USD", max_amount="100.00")
        ops.create_transaction("fund", "2.00", "USD", account_id="shop")
        ops.settle_transaction("fund", account_id="shop")
        held = agent.authorize("report.generate", agent_id="bot")
        agent.create_payment(None, "usd", amount_minor=700, purpose="credits")

        assert [a.price_minor for a in agent.list_actions().actions] == [50]
        assert agent.list_metric_prices().metrics[0].unit_price == Decimal("0.001")
        caps = agent.list_spend_caps()
        assert isinstance(caps, models.SpendCapPage) and caps.spend_caps[0].hard_limit == "3.00"
        (wallet,) = agent.list_wallets().wallets
        assert (wallet.balance, wallet.held_minor, wallet.available) == ("2.00", 50, "1.50")
        holds = agent.list_holds(status="active", agent_id="bot")
        assert [h.id for h in holds.holds] == [held.hold_id] and holds.next_cursor is None
        assert agent.list_payments(purpose="credits").payments[0].amount == "7.00"
        assert [e.type for e in agent.list_events().events] == ["transaction.settled"]
        assert [k.key_prefix for k in agent.list_keys().keys] == [key[:11]]
        assert ops.list_risk_rules().risk_rules[0].max_amount_minor == 10000
        with pytest.raises(Forbidden):
            agent.list_risk_rules()
        with pytest.raises(NotFound):
            agent.list_wallets("ops")
        first = agent.list_transactions(limit=1)
        assert first.next_cursor is not None and first.next_before is not None
        assert first.transactions[0].reference.startswith("credits-pi_"), "the credits bought"
        second = agent.list_transactions(limit=1, cursor=first.next_cursor)
        assert [t.reference for t in second.transactions] == ["fund"]
        with pytest.raises(BadRequest) as bad:
            agent.list_holds(cursor=first.next_cursor)
        assert bad.value.code == "invalid_cursor"
