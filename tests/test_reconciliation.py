"""Reconciliation: settlement lines by CSV (CLI) and HTTP, and repairing missed webhooks from
Stripe's own state, against the emulator, with `tollgate reconcile` run as a real process."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import psycopg

from api.stripe_emulator import free_port
from tests.conftest import Api, Emulator
from tests.helpers import row_counts, stripe_client
from tests.test_cli import tollgate

TODAY = dt.datetime.now(dt.UTC).date().isoformat()


def ledger_of_record(db: psycopg.Connection[Any]) -> None:
    """shop: inv-1 10.00 settled, inv-2 20.00 settled, inv-3 5.00 pending, inv-4 7.00 settled."""
    db.execute("SELECT api.create_api_key_v1('ops', 'ops-key', true, NULL)")
    db.execute("SELECT api.create_api_key_v1('shop', 'shop-key', false, NULL)")
    for reference, amount, settle in (
        ("inv-1", "10.00", True),
        ("inv-2", "20.00", True),
        ("inv-3", "5.00", False),
        ("inv-4", "7.00", True),
    ):
        db.execute(
            "SELECT api.create_transaction_v1('shop-key', NULL, %s, %s::numeric, 'USD', NULL)",
            (reference, amount),
        )
        if settle:
            db.execute(
                "SELECT api.move_transaction_v1('ops-key', 'shop', %s, 'settled')", (reference,)
            )


def mismatches(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT status, reference, account_id, amount_minor, note"
        " FROM reporting.reconciliation_mismatches ORDER BY status, reference"
    ).fetchall()


def test_csv_with_each_mismatch_kind(
    db_dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    ledger_of_record(db)
    statement = tmp_path / "bank.csv"
    statement.write_text(
        "reference,amount,currency,date,memo\n"
        f"inv-1,10.00,USD,{TODAY},ok\n"
        f"inv-2,25.00,usd,{TODAY},they charged more\n"
        f"inv-3,5.00,USD,{TODAY},not settled here\n"
        f"ghost-9,3.00,USD,{TODAY},never heard of it\n",
        encoding="utf-8",
    )
    env = os.environ | {"DATABASE_URL": db_dsn}
    done = tollgate("reconcile", "import", str(statement), "--source", "bank", env=env)
    assert done.returncode == 0, done.stderr
    assert "1 matched, 3 mismatched" in done.stderr
    reported = [line.split() for line in done.stdout.splitlines()]
    assert [(words[1], words[3]) for words in reported] == [
        ("3", "amount_mismatch"),
        ("4", "status_mismatch"),
        ("5", "missing_ours"),
    ], "file lines (after the header) and what is wrong with them"

    assert mismatches(db) == [
        ("amount_mismatch", "inv-2", "shop", 2500, "ours: 20.00 USD"),
        ("missing_ours", "ghost-9", None, 300, None),
        ("missing_theirs", "inv-4", "shop", 700, "settled here, on no line of bank"),
        ("status_mismatch", "inv-3", "shop", 500, "ours is pending"),
    ]
    again = tollgate("reconcile", "import", str(statement), "--source", "bank", env=env)
    assert again.returncode == 0, again.stderr
    assert "0 matched, 0 mismatched, 4 imported before" in again.stderr
    assert all(" duplicate " in line for line in again.stdout.splitlines()), again.stdout
    assert len(mismatches(db)) == 4, "an overlapping statement adds nothing"

    matched = db.execute(
        "SELECT l.status::text, t.reference FROM tollgate.reconciliation_lines l"
        " JOIN tollgate.transactions t ON t.id = l.transaction_id WHERE l.status = 'matched'"
    ).fetchall()
    assert matched == [("matched", "inv-1")]


def test_unreadable_files_write_nothing(
    db_dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    ledger_of_record(db)
    before = row_counts(db)
    env = os.environ | {"DATABASE_URL": db_dsn}
    cases = {
        "reference,amount,date\ninv-1,10.00,2026-11-01\n": "lacks currency",
        f"reference,amount,currency,date\ninv-1,1,USD,{TODAY}\ninv-2,ten,USD,{TODAY}\n": "line 3",
        f"reference,amount,currency,date\ninv-1,10.001,USD,{TODAY}\n": "line 2: USD amounts",
        f"reference,amount,currency,date\n\ninv-1,10.00,XYZ,{TODAY}\n": "line 3: unknown currency",
        "reference,amount,currency,date\ninv-1,10.00,USD,21/11/2026\n": "line 2",
        "reference,amount,currency,date\n": "no lines",
        f"reference,amount,currency,date\n ,1.00,USD,{TODAY}\n": "line 2: a reference",
        "reference,amount,currency,date\ninv-1,1.00,USD,1999-12-31\n": "line 2: the date",
        "reference,amount,currency,date\ninv-1,1.00,USD,2999-01-01\n": "line 2: the date",
        f"reference,amount,currency,date,account_id\ninv-1,1.00,USD,{TODAY},nobody\n": "no account",
        f"reference,amount,currency,date\ninv-1,\u0661\u0662,USD,{TODAY}\n": "is not a number",
        f"reference,amount,currency,date\ninv\x00-1,1.00,USD,{TODAY}\n": "control characters",
    }
    for n, (text, named) in enumerate(cases.items()):
        path = tmp_path / f"bad-{n}.csv"
        path.write_text(text, encoding="utf-8")
        done = tollgate("reconcile", "import", str(path), env=env)
        assert done.returncode == 2, (text, done.stdout, done.stderr)
        assert named in done.stderr and "Traceback" not in done.stderr, done.stderr
    missing = tollgate("reconcile", "import", str(tmp_path / "nope.csv"), env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert row_counts(db) == before


def test_lines_over_http(api: Api, new_key: Any, db: psycopg.Connection[Any]) -> None:
    ledger_of_record(db)
    lines = [
        {"reference": "inv-1", "amount": "10.00", "currency": "USD", "date": TODAY},
        {
            "reference": "inv-2",
            "amount": "20.00",
            "currency": "USD",
            "date": TODAY,
            "account_id": "shop",
        },
    ]
    with api.client("shop-key") as shop, api.client(new_key("ops2", admin=True)) as ops:
        refused = shop.post("/v1/reconciliation/lines", json={"source": "payouts", "lines": lines})
        assert refused.status_code == 403
        before = row_counts(db)
        for bad in (
            {"source": "payouts", "lines": []},
            {"source": "Pay Outs", "lines": lines},
            {"source": "payouts", "lines": [lines[0] | {"amount": "10.001"}]},
            {"source": "payouts", "lines": [lines[0] | {"currency": "XYZ"}]},
            {"source": "payouts", "lines": [lines[0] | {"date": "yesterday"}]},
            {"source": "payouts", "lines": [lines[0] | {"extra": 1}]},
        ):
            answer = ops.post("/v1/reconciliation/lines", json=bad)
            assert 400 <= answer.status_code < 500, (bad, answer.text)
        assert row_counts(db) == before

        done = ops.post("/v1/reconciliation/lines", json={"source": "payouts", "lines": lines})
        assert done.status_code == 201, done.text
        body = done.json()
        assert (body["matched"], body["mismatched"]) == (2, 0)
        assert [line["status"] for line in body["lines"]] == ["matched", "matched"]
        old = {"reference": "old-1", "amount": "1.00", "currency": "USD", "date": "2020-01-02"}
        other = ops.post("/v1/reconciliation/lines", json={"source": "archive", "lines": [old]})
        assert other.status_code == 201 and other.json()["mismatched"] == 1
    assert mismatches(db) == [
        ("missing_ours", "old-1", None, 100, None),
        ("missing_theirs", "inv-4", "shop", 700, "settled here, on no line of payouts"),
    ], "a source covers the days its lines are on, not the days between"


def test_stripe_repair_after_missed_webhooks(
    api: Api, new_key: Any, db: psycopg.Connection[Any], db_dsn: str, emulator: Emulator
) -> None:
    # Webhooks go nowhere: whatever happens at Stripe from here on, Tollgate hears nothing.
    emulator.point_webhooks_at(f"http://127.0.0.1:{free_port()}/nowhere", "whsec_lost")
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    payments = []
    with api.client(new_key("agent")) as http:
        for n in range(3):
            made = http.post(
                "/v1/payments",
                json={"amount_minor": 1500 + n, "currency": "usd", "payment_method": card.id},
                headers={"Idempotency-Key": f"repair-{n}"},
            )
            assert made.status_code == 201, made.text
            payments.append(made.json())
    paid, refunded, _untouched = payments
    stripe.v1.payment_intents.confirm(paid["stripe_id"])
    stripe.v1.payment_intents.confirm(refunded["stripe_id"])
    stripe.v1.refunds.create({"payment_intent": refunded["stripe_id"]})
    stripe.v1.payment_intents.create({"amount": 999, "currency": "usd"})  # not Tollgate's

    def statuses() -> list[str]:
        return [
            db.execute(
                "SELECT status::text FROM tollgate.payment_intents WHERE id = %s", (p["id"],)
            ).fetchone()[0]
            for p in payments
        ]

    assert statuses() == ["requires_confirmation"] * 3, "no webhook arrived"

    env = os.environ | {
        "DATABASE_URL": db_dsn,
        "STRIPE_API_KEY": "sk_test_tollgate",
        "STRIPE_API_BASE": emulator.base,
    }
    first = tollgate("reconcile", "stripe", "--since", TODAY, env=env)
    assert first.returncode == 0, first.stderr
    assert statuses() == ["succeeded", "refunded", "requires_confirmation"]
    counts = summary_counts(first.stdout)
    assert counts["repaired"] == 3, "two payments succeeded, one of them refunded since"
    assert counts["already applied"] == 1, "the unconfirmed one: Tollgate has Stripe's state"
    assert counts["not Tollgate's"] >= 1, "the emulator's other intents are left alone"
    assert f"{paid['stripe_id']}: repaired, now succeeded" in first.stderr, "progress names it"
    assert _untouched["stripe_id"] not in first.stderr, "and nothing else"
    actors = db.execute(
        "SELECT new_value, actor FROM tollgate.audit_log WHERE entity = 'payment_intent'"
        " AND action = 'status_changed' ORDER BY id"
    ).fetchall()
    assert actors == [
        ("succeeded", f"stripe:evt_reconcile_{paid['stripe_id']}_succeeded"),
        ("succeeded", f"stripe:evt_reconcile_{refunded['stripe_id']}_succeeded"),
        ("refunded", f"stripe:evt_reconcile_{_charge_of(stripe, refunded['stripe_id'])}_refunded"),
    ]

    before = row_counts(db)
    again = tollgate("reconcile", "stripe", "--since", TODAY, env=env)
    assert again.returncode == 0, again.stderr
    assert "repaired" not in again.stdout + again.stderr, again.stdout
    assert summary_counts(again.stdout)["already applied"] == 4, again.stdout
    assert row_counts(db) == before, "a second run changes nothing"

    future = tollgate("reconcile", "stripe", "--since", "2999-01-01", env=env)
    assert future.returncode == 0 and future.stdout.strip() == "nothing to repair"
    for bad_args, bad_env in (
        (["--since", "last week"], env),
        (["--since", TODAY], {k: v for k, v in env.items() if k != "STRIPE_API_KEY"}),
        (["--since", TODAY], env | {"STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"}),
    ):
        failed = tollgate("reconcile", "stripe", *bad_args, env=bad_env)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr
    assert row_counts(db) == before


def summary_counts(stdout: str) -> dict[str, int]:
    """``3 repaired, 1 already applied, 5 not Tollgate's`` as {outcome: count}."""
    counts = {}
    for part in stdout.strip().split(", "):
        n, _, outcome = part.partition(" ")
        counts[outcome] = int(n)
    return counts | {k: counts.get(k, 0) for k in ("repaired", "already applied")}


def test_stripe_reconcile_after_delivered_webhooks_says_already_applied(
    api: Api, new_key: Any, db: psycopg.Connection[Any], db_dsn: str, emulator: Emulator
) -> None:
    """What the webhooks did (and a refund Tollgate made) is "already applied", never
    "repaired", and writes nothing."""
    stripe = stripe_client(emulator.base)
    with api.client(new_key("agent")) as http:
        made = http.post(
            "/v1/payments",
            json={"amount_minor": 2500, "currency": "usd", "payment_method": "pm_card_visa"},
            headers={"Idempotency-Key": "delivered"},
        )
        assert made.status_code == 201, made.text
    payment, stripe_id = made.json()["id"], made.json()["stripe_id"]
    stripe.v1.payment_intents.confirm(stripe_id)
    status = "SELECT status::text FROM tollgate.payment_intents WHERE stripe_id = %s"
    for _ in range(300):  # the webhook arrives about a second after the confirmation
        if db.execute(status, (stripe_id,)).fetchone() == ("succeeded",):
            break
        time.sleep(0.1)
    assert db.execute(status, (stripe_id,)).fetchone() == ("succeeded",), "the webhook arrived"
    with api.client(new_key("ops", admin=True)) as admin:
        refund = admin.post(
            f"/v1/payments/{payment}/refunds",
            json={"amount_minor": 1000},
            headers={"Idempotency-Key": "part"},
        )
        assert refund.status_code == 201 and refund.json()["status"] == "succeeded", refund.text

    before = row_counts(db)
    env = os.environ | {
        "DATABASE_URL": db_dsn,
        "STRIPE_API_KEY": "sk_test_tollgate",
        "STRIPE_API_BASE": emulator.base,
    }
    done = tollgate("reconcile", "stripe", "--since", TODAY, env=env)
    assert done.returncode == 0, done.stderr
    counts = summary_counts(done.stdout)
    assert counts["already applied"] == 2, "the payment and its partly refunded charge"
    assert counts["repaired"] == 0 and stripe_id not in done.stderr, done.stdout + done.stderr
    assert row_counts(db) == before, "nothing is written for what Tollgate had"
    synthetic = db.execute(
        "SELECT count(*) FROM tollgate.payment_events WHERE id LIKE 'evt_reconcile_%'"
    ).fetchone()
    assert synthetic == (0,)


def _charge_of(stripe: Any, payment_intent: str) -> str:
    charges = stripe.v1.charges.list({"limit": 100}).auto_paging_iter()
    return next(c.id for c in charges if c.payment_intent == payment_intent)


def test_stripe_repair_of_subscriptions_and_partial_refunds(
    api: Api, new_key: Any, db: psycopg.Connection[Any], db_dsn: str, emulator: Emulator
) -> None:
    """Missed customer.subscription.* and partial-refund webhooks are repaired from Stripe's
    state: the subscription entitles, the refunded credits are taken back."""
    emulator.point_webhooks_at(f"http://127.0.0.1:{free_port()}/nowhere", "whsec_lost")
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    with api.client(new_key("ops", admin=True)) as admin:
        admin.put("/v1/actions/copilot.answer", json={"price": "0.05", "currency": "USD"})
    agent = new_key("team_9")
    with api.client(agent) as http:
        bought = http.post(
            "/v1/payments",
            json={
                "amount_minor": 1500,
                "currency": "usd",
                "purpose": "credits",
                "payment_method": card.id,
            },
            headers={"Idempotency-Key": "top-up"},
        )
        assert bought.status_code == 201, bought.text
    stripe_id = bought.json()["stripe_id"]
    stripe.v1.payment_intents.confirm(stripe_id)
    stripe.v1.refunds.create({"payment_intent": stripe_id, "amount": 500})
    customer = stripe.v1.customers.create(
        {"payment_method": card.id, "invoice_settings": {"default_payment_method": card.id}}
    )
    plan = stripe.v1.plans.create(
        {"amount": 2000, "currency": "usd", "interval": "month", "product": {"name": "Pro"}}
    )
    sub = stripe.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"plan": plan.id}],
            "metadata": {"tollgate_account": "team_9"},
        }
    )
    assert sub.status == "active"
    with api.client(agent) as http:
        refused = http.post("/v1/authorize", json={"action": "copilot.answer"})
        assert refused.status_code == 402, "no webhook arrived: no subscription yet"

    env = os.environ | {
        "DATABASE_URL": db_dsn,
        "STRIPE_API_KEY": "sk_test_tollgate",
        "STRIPE_API_BASE": emulator.base,
    }
    first = tollgate("reconcile", "stripe", "--since", TODAY, env=env)
    assert first.returncode == 0, first.stderr
    assert sub.id in first.stderr, "progress names the subscription it repaired"
    found = db.execute(
        "SELECT status::text, current_period_end > now() FROM tollgate.subscriptions"
        " WHERE stripe_id = %s",
        (sub.id,),
    ).fetchone()
    assert found == ("active", True)
    with api.client(agent) as http:
        allowed = http.post("/v1/authorize", json={"action": "copilot.answer"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["via"] == "subscription"
        balances = http.get("/v1/accounts/team_9/balances").json()["balances"]
        assert [(b["name"], b["balance_minor"]) for b in balances] == [("main", 1000)], (
            "15.00 bought, 5.00 of it refunded and taken back"
        )

    before = row_counts(db)
    again = tollgate("reconcile", "stripe", "--since", TODAY, env=env)
    assert again.returncode == 0, again.stderr
    assert "repaired" not in again.stdout and "already applied" in again.stdout, again.stdout
    assert row_counts(db) == before, "a second run changes nothing"
