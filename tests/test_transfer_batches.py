"""Batches of transfers (POST /v1/transfers/batch, api.transfer_batch_v1): all or none over
HTTP, and opposite batches from real concurrent connections, which must all complete."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.conftest import Api
from tests.helpers import in_parallel, ledger_problems
from tests.test_ledger import balance, fund


def batch(http: httpx.Client, key: str, transfers: list[dict[str, Any]]) -> httpx.Response:
    return http.post(
        "/v1/transfers/batch",
        json={"transfers": [t | {"currency": "USD"} for t in transfers]},
        headers={"Idempotency-Key": key},
    )


def test_a_batch_is_made_whole_or_not_at_all(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    new_key("bob")
    new_key("cat")
    with api.client(new_key("alice")) as alice, api.client(new_key("ops", admin=True)) as admin:
        fund(admin, "alice", "100.00")
        sent = batch(
            alice,
            "b1",
            [
                {"to_account_id": "bob", "amount": "30.25"},
                {"to_account_id": "cat", "amount_minor": 500},
            ],
        )
        assert sent.status_code == 201, sent.text
        made = sent.json()["transfers"]
        assert [(t["to_account_id"], t["amount"], t["amount_minor"]) for t in made] == [
            ("bob", "30.25", 3025),
            ("cat", "5.00", 500),
        ]
        assert len({t["posting_id"] for t in made}) == 2, "a posting per transfer"

        again = batch(
            alice,
            "b1",
            [
                {"to_account_id": "bob", "amount": "30.25"},
                {"to_account_id": "cat", "amount_minor": 500},
            ],
        )
        assert again.status_code == 201, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json() == sent.json()

        other = batch(alice, "b1", [{"to_account_id": "bob", "amount": "1"}])
        assert other.status_code == 409, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"

        # The second transfer overdraws: neither is made, and the error names it.
        refused = batch(
            alice,
            "b2",
            [{"to_account_id": "bob", "amount": "10"}, {"to_account_id": "cat", "amount": "60"}],
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "insufficient_funds"
        assert refused.json()["error"]["message"].startswith("transfer 2: ")
        assert balance(admin, "alice") == "64.75"
        assert balance(admin, "bob") == "30.25"

        # Another account's money needs an admin key.
        scoped = batch(
            alice, "b3", [{"from_account_id": "bob", "to_account_id": "cat", "amount": "1"}]
        )
        assert scoped.status_code == 404, scoped.text
        assert scoped.json()["error"]["message"] == "transfer 1: account bob not found"
        moved = batch(
            admin, "b3", [{"from_account_id": "bob", "to_account_id": "cat", "amount": "1"}]
        )
        assert moved.status_code == 201, moved.text

        unkeyed = alice.post("/v1/transfers/batch", json={"transfers": []})
        assert unkeyed.status_code == 400, unkeyed.text
        empty = batch(alice, "b4", [])
        assert empty.status_code == 422, empty.text
    assert ledger_problems(db) == []


def test_opposite_batches_from_concurrent_connections_complete(
    db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Each batch moves money both ways between the same accounts, in an order of its own: the
    wallets are locked once, in id order, so none waits for another in a cycle (a deadlock
    would fail a batch with 40P01)."""
    ledger_admin = "tg_batch_admin_key_0123456789abcdef"
    db.execute("SELECT api.create_api_key_v1('batch_ops', %s, true, NULL)", (ledger_admin,))
    names = [f"cc_{i}" for i in range(6)]
    for name in names:
        db.execute(
            "SELECT api.create_api_key_v1(%s, %s, false, NULL)", (name, f"tg_{name}_key_000")
        )
        db.execute(
            "SELECT api.create_transaction_v1(%s, %s, 'fund', 1000, 'USD', NULL)",
            (ledger_admin, name),
        )
        db.execute(
            "SELECT api.move_transaction_v1(%s, %s, 'fund', 'settled')", (ledger_admin, name)
        )

    def run(i: int) -> int:
        order = names if i % 2 == 0 else names[::-1]
        pairs = [(a, b) for a in order for b in order if a != b]
        items = [(a, b, 1, None, "USD") for a, b in pairs]
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            for round_ in range(5):
                conn.execute(
                    "SELECT * FROM api.transfer_batch_v1(%s,"
                    " (SELECT array_agg(ROW(f, t, a, m, c)::api.transfer_item_v1)"
                    "  FROM unnest(%s::text[], %s::text[], %s::numeric[], %s::bigint[], %s::text[])"
                    "  AS x (f, t, a, m, c)), %s)",
                    (
                        ledger_admin,
                        [p[0] for p in items],
                        [p[1] for p in items],
                        [p[2] for p in items],
                        [p[3] for p in items],
                        [p[4] for p in items],
                        f"cc-{i}-{round_}",
                    ),
                )
        return i

    assert sorted(in_parallel(8, run)) == list(range(8))
    count = db.execute(
        "SELECT count(*) FROM tollgate.ledger_postings WHERE idempotency_key LIKE 'cc-%%'"
    ).fetchone()
    assert count == (8 * 5 * 30,)
    balances = db.execute(
        "SELECT la.balance FROM tollgate.ledger_accounts la JOIN tollgate.accounts a"
        " ON a.id = la.account_uuid WHERE a.external_id = ANY(%s)",
        (names,),
    ).fetchall()
    assert balances == [(100000,)] * 6, "every account sent and received as much"
    assert ledger_problems(db) == []
