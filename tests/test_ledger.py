"""Transfers and the ledger's invariants: over HTTP, under concurrency, and by property."""

from __future__ import annotations

import random
import secrets
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api
from tests.helpers import in_parallel, ledger_problems, row_counts

ADMIN_KEY = "tg_ledger_admin_key_0123456789abcdef"


def fund(http: httpx.Client, account: str, amount: str, currency: str = "USD") -> None:
    reference = f"fund-{secrets.token_hex(4)}"
    created = http.post(
        "/v1/transactions",
        json={
            "account_id": account,
            "reference": reference,
            "amount": amount,
            "currency": currency,
        },
    )
    assert created.status_code == 201, created.text
    settled = http.post(f"/v1/transactions/{reference}/settle", params={"account_id": account})
    assert settled.status_code == 200, settled.text


def balance(http: httpx.Client, account: str) -> str:
    rows = http.get(f"/v1/accounts/{account}/balances").json()["balances"]
    return str(rows[0]["balance"]) if rows else "0"


def transfer(http: httpx.Client, key: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(
        "/v1/transfers", json=body | {"currency": "USD"}, headers={"Idempotency-Key": key}
    )


def test_transfer_between_accounts(api: Api, new_key: Any, db: psycopg.Connection[Any]) -> None:
    new_key("bob")
    with api.client(new_key("alice")) as alice, api.client(new_key("ops", admin=True)) as admin:
        fund(admin, "alice", "100.00")
        sent = transfer(alice, "t1", {"to_account_id": "bob", "amount": "30.25"})
        assert sent.status_code == 201, sent.text
        assert {k: sent.json()[k] for k in ("from_account_id", "to_account_id", "amount")} == {
            "from_account_id": "alice",
            "to_account_id": "bob",
            "amount": "30.25",
        }
        again = transfer(alice, "t1", {"to_account_id": "bob", "amount": "30.25"})
        assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
        assert again.json()["posting_id"] == sent.json()["posting_id"]
        other = transfer(alice, "t1", {"to_account_id": "bob", "amount": "30.26"})
        assert (
            other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
        )
        assert (balance(admin, "alice"), balance(admin, "bob")) == ("69.75", "30.25")
    assert ledger_problems(db) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"to_account_id": "bob", "amount": "100.01"}, 409, "insufficient_funds"),
        ({"to_account_id": "alice", "amount": "1"}, 422, "transfer_to_self"),
        ({"to_account_id": "nobody", "amount": "1"}, 404, "not_found"),
        ({"to_account_id": "bob", "amount": "1.001"}, 422, "invalid_amount"),
        ({"to_account_id": "bob", "amount": "-1"}, 422, "invalid_amount"),
        ({"from_account_id": "bob", "to_account_id": "alice", "amount": "1"}, 404, "not_found"),
    ],
)
def test_refused_transfers_write_nothing(
    api: Api,
    new_key: Any,
    db: psycopg.Connection[Any],
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    new_key("bob")
    with api.client(new_key("alice")) as alice, api.client(new_key("ops", admin=True)) as admin:
        fund(admin, "alice", "100.00")
        before = row_counts(db)
        r = transfer(alice, "refused", body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert row_counts(db) == before


def test_a_transfer_is_spending_bound_by_the_senders_caps(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    new_key("bob")
    with api.client(new_key("alice")) as alice, api.client(new_key("ops", admin=True)) as admin:
        fund(admin, "alice", "50.00")
        cap = admin.put(
            "/v1/accounts/alice/spend-caps",
            json={"period": "day", "currency": "USD", "hard_limit": "1.00"},
        )
        assert cap.status_code == 200, cap.text
        before = row_counts(db)
        everything = transfer(alice, "all", {"to_account_id": "bob", "amount": "50.00"})
        assert everything.status_code == 402, everything.text
        assert everything.json()["error"]["code"] == "spend_cap_exceeded"
        assert row_counts(db) == before, "a refused transfer writes nothing"
        assert (
            transfer(alice, "most", {"to_account_id": "bob", "amount": "0.90"}).status_code == 201
        )
        over = transfer(alice, "more", {"to_account_id": "bob", "amount": "0.11"})
        assert over.status_code == 402 and over.json()["error"]["code"] == "spend_cap_exceeded"
        by_admin = transfer(
            admin,
            "ops-move",
            {"from_account_id": "alice", "to_account_id": "bob", "amount": "0.11"},
        )
        assert by_admin.status_code == 402, "an admin key moving alice's money meets her cap too"
        assert (
            transfer(alice, "rest", {"to_account_id": "bob", "amount": "0.10"}).status_code == 201
        )
        assert balance(admin, "alice") == "49.00"
    notices = db.execute(
        "SELECT count(*) FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'"
    ).fetchone()
    assert notices == (1,), "crossing 80% of the cap with transfers was announced once"
    assert ledger_problems(db) == []


def test_a_refused_transfer_says_nothing_about_the_receiver(api: Api, new_key: Any) -> None:
    new_key("bob")
    with api.client(new_key("empty")) as empty:
        to_missing = transfer(empty, "a", {"to_account_id": "nobody", "amount": "1"})
        to_existing = transfer(empty, "b", {"to_account_id": "bob", "amount": "1"})
    assert to_missing.status_code == to_existing.status_code == 409, to_missing.text
    # Every error body carries its own request id; everything else must be the same.
    missing, existing = to_missing.json()["error"], to_existing.json()["error"]
    assert missing.pop("request_id") != existing.pop("request_id")
    assert missing == existing
    assert to_missing.json()["error"]["code"] == "insufficient_funds"


def test_a_transfer_needs_an_idempotency_key(api: Api, new_key: Any) -> None:
    with api.client(new_key("alice")) as alice:
        r = alice.post(
            "/v1/transfers", json={"to_account_id": "x", "amount": "1", "currency": "USD"}
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "idempotency_key_required"


def test_concurrent_opposite_transfers_keep_every_invariant(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    accounts = [f"acct_{i}" for i in range(8)]
    for name in accounts:
        new_key(name)
    admin_key = new_key("ops", admin=True)
    with api.client(admin_key) as admin:
        for name in accounts:
            fund(admin, name, "100.00")

    def worker(n: int) -> list[int]:
        rng = random.Random(n)
        statuses = []
        with api.client(admin_key) as http:
            for i in range(20):
                # Pairs in both directions at once: n even sends a->b, n odd b->a.
                a, b = accounts[(n // 2) % 4], accounts[4 + (i % 4)]
                src, dst = (a, b) if n % 2 == 0 else (b, a)
                amount = f"{rng.randint(1, 4000) / 100:.2f}"
                r = transfer(
                    http,
                    f"w{n}-{i}",
                    {"from_account_id": src, "to_account_id": dst, "amount": amount},
                )
                statuses.append(r.status_code)
                if r.status_code == 409:
                    assert r.json()["error"]["code"] == "insufficient_funds"
        return statuses

    results = [s for batch in in_parallel(20, worker) for s in batch]
    assert set(results) <= {201, 409}, f"unexpected statuses: {sorted(set(results))}"
    assert results.count(201) > 100, "most transfers went through"
    assert ledger_problems(db) == [], (
        "balances equal their entries; every posting and currency sums to zero"
    )
    total = db.execute(
        "SELECT sum(la.balance), min(la.balance) FROM tollgate.ledger_accounts la"
        " JOIN tollgate.accounts a ON a.id = la.account_uuid WHERE a.external_id LIKE 'acct_%'"
    ).fetchone()
    assert total == (80000, total[1]) and total[1] >= 0, (
        "money moved, none created, no wallet below zero"
    )


# ---------------------------------------------------------------------------------------------
# Property: any sequence of transfers keeps the ledger sound and matches a simple model
# ---------------------------------------------------------------------------------------------

transfers = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 5000)), min_size=1, max_size=25
)


@pytest.fixture
def ledger_admin(db: psycopg.Connection[Any]) -> str:
    db.execute("SELECT api.create_api_key_v1('prop_ops', %s, true, NULL)", (ADMIN_KEY,))
    return ADMIN_KEY


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    funding=st.lists(st.integers(0, 10_000), min_size=4, max_size=4),
    overdraft=st.lists(st.booleans(), min_size=4, max_size=4),
    moves=transfers,
)
def test_random_transfers_match_a_model_and_keep_the_ledger_sound(
    db: psycopg.Connection[Any],
    ledger_admin: str,
    funding: list[int],
    overdraft: list[bool],
    moves: list[Any],
) -> None:
    run = secrets.token_hex(4)
    names = [f"p{run}_{i}" for i in range(4)]
    model = dict(zip(names, funding, strict=True))
    for name, cents, may_go_negative in zip(names, funding, overdraft, strict=True):
        db.execute(
            "SELECT api.create_api_key_v1(%s, %s, false, NULL)", (name, f"tg_{name}_key_000000")
        )
        if cents:
            db.execute(
                "SELECT api.create_transaction_v1(%s, %s, 'fund', %s, 'USD', NULL)",
                (ledger_admin, name, Decimal(cents) / 100),
            )
            db.execute(
                "SELECT api.move_transaction_v1(%s, %s, 'fund', 'settled')", (ledger_admin, name)
            )
        if may_go_negative:
            db.execute(
                "SELECT api.set_allow_negative_v1(%s, %s, 'USD', true)", (ledger_admin, name)
            )

    for n, (src, dst, cents) in enumerate(moves):
        a, b = names[src], names[dst]
        expected_ok = a != b and (overdraft[src] or model[a] >= cents)
        try:
            db.execute(
                "SELECT api.transfer_v1(%s, %s, %s, %s, 'USD', %s)",
                (ledger_admin, a, b, Decimal(cents) / 100, f"m{n}"),
            )
            done = True
        except psycopg.errors.CheckViolation:
            done = False
        assert done == expected_ok, f"transfer {a} -> {b} of {cents} with {model}"
        if done:
            model[a] -= cents
            model[b] += cents

    found = dict(
        db.execute(
            "SELECT a.external_id, la.balance FROM tollgate.ledger_accounts la"
            " JOIN tollgate.accounts a ON a.id = la.account_uuid WHERE a.external_id = ANY(%s)",
            (names,),
        ).fetchall()
    )
    assert {n: found.get(n, 0) for n in names} == model
    assert ledger_problems(db) == []


# ---------------------------------------------------------------------------------------------
# What only a real COMMIT shows (pgTAP files roll back, so deferred checks never run there)
# ---------------------------------------------------------------------------------------------


def test_an_unbalanced_posting_is_refused_at_commit(
    db: psycopg.Connection[Any], new_key: Any
) -> None:
    new_key("solo")
    before = row_counts(db)
    with pytest.raises(psycopg.Error) as refused, db.transaction():
        posting = db.execute(
            "INSERT INTO tollgate.ledger_postings (account_uuid, kind)"
            " SELECT id, 'transfer' FROM tollgate.accounts WHERE external_id = 'solo' RETURNING id"
        ).fetchone()
        assert posting is not None
        db.execute(
            "INSERT INTO tollgate.ledger_entries (posting_id, ledger_account_id, amount)"
            " SELECT %s, tollgate.ledger_account(id, 'main', 'USD'), 500"
            " FROM tollgate.accounts WHERE external_id = 'solo'",
            (posting[0],),
        )
    assert refused.value.sqlstate == "TG040"
    assert row_counts(db) == before, "the whole transaction was rolled back"


def test_a_committed_posting_takes_no_more_entries(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    new_key("bob")
    with api.client(new_key("alice")) as alice, api.client(new_key("ops", admin=True)) as admin:
        fund(admin, "alice", "100.00")
        posting = transfer(alice, "once", {"to_account_id": "bob", "amount": "10"}).json()[
            "posting_id"
        ]
    # Copy the transfer's two (balanced) entries into the same posting, later: money from nowhere.
    with pytest.raises(psycopg.Error) as refused:
        db.execute(
            "INSERT INTO tollgate.ledger_entries (posting_id, ledger_account_id, amount)"
            " SELECT posting_id, ledger_account_id, amount FROM tollgate.ledger_entries"
            " WHERE posting_id = %s",
            (posting,),
        )
    assert refused.value.sqlstate == "TG012"
    assert refused.value.diag.constraint_name == "ledger_entries_posting_open"
    assert ledger_problems(db) == []
