"""Small helpers shared by the HTTP tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
import stripe
from psycopg import sql

T = TypeVar("T")

TABLES = (
    "accounts",
    "api_keys",
    "payment_intents",
    "idempotency_keys",
    "payment_events",
    "outbox",
    "audit_log",
    "transactions",
    "ledger_accounts",
    "ledger_postings",
    "ledger_entries",
    "holds",
    "payment_entitlements",
    "subscriptions",
    "spend_daily",
    "spend_notices",
    "usage_events",
    "usage_carry",
    "audit_heads",
    "risk_rules",
    "reviews",
    "reconciliation_batches",
    "reconciliation_lines",
    "refunds",
    "disputes",
    "payment_takebacks",
)


def row_counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    """How many rows each Tollgate table holds."""
    counts = {}
    for table in TABLES:
        query = sql.SQL("SELECT count(*) FROM tollgate.{}").format(sql.Identifier(table))
        found = db.execute(query).fetchone()
        counts[table] = int(found[0]) if found else 0
    return counts


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for ``payload``, computed as Stripe documents it."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(event_id: str, stripe_id: str, status: str, created: int | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": f"payment_intent.{status}",
            "created": int(time.time()) if created is None else created,
            "data": {"object": {"id": stripe_id, "object": "payment_intent", "status": status}},
        }
    ).encode()


def wait_applied(
    db: psycopg.Connection[Any] | str, *event_ids: str, timeout: float = 15.0
) -> dict[str, str]:
    """Wait until the applier has applied each stored Stripe event (webhooks only store them):
    none of them is ``received`` any more. Returns their states (applied, pending, stale,
    rejected, ignored). With no ids, waits until no stored event at all is received, and
    returns {}. ``db``: an autocommit connection (each look sees the latest commits), or a
    connection string to open one."""
    if isinstance(db, str):
        with psycopg.connect(db, autocommit=True) as conn:
            return wait_applied(conn, *event_ids, timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        if event_ids:
            rows = db.execute(
                "SELECT id, state::text FROM tollgate.payment_events WHERE id = ANY(%s)",
                (list(event_ids),),
            ).fetchall()
            states = {str(r[0]): str(r[1]) for r in rows}
            if len(states) == len(set(event_ids)) and "received" not in states.values():
                return states
        else:
            left = db.execute(
                "SELECT count(*) FROM tollgate.payment_events WHERE state::text = 'received'"
            ).fetchone()
            states = {}
            if left is not None and left[0] == 0:
                return states
        if time.monotonic() > deadline:
            raise AssertionError(f"events not applied within {timeout} s: {states or event_ids}")
        time.sleep(0.02)


def in_parallel(n: int, call: Callable[[int], T]) -> list[T]:
    """Run ``call(i)`` for i < n on n threads released at the same moment."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def stripe_client(emulator_base: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_tollgate", base_addresses={"api": emulator_base})


def stripe_intents_with(client: stripe.StripeClient, payment_id: str) -> list[Any]:
    """The emulator's PaymentIntents created for a Tollgate payment id."""
    listed = client.v1.payment_intents.list({"limit": 100})
    return [
        pi
        for pi in listed.auto_paging_iter()
        if (pi.to_dict().get("metadata") or {}).get("tollgate_payment_id") == payment_id
    ]


def ledger_problems(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Everything tollgate.ledger_discrepancies() finds wrong with the ledger (empty: sound)."""
    return db.execute("SELECT * FROM tollgate.ledger_discrepancies()").fetchall()
