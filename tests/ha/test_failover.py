"""Failover: the primary of a Patroni cluster dies under load, and Patroni promotes the standby.

etcd and two Patroni nodes (synchronous replication) hold the database; two `tollgate serve`
processes on different ports use it through one multi-host DSN (``target_session_attrs=
read-write``: libpq tries both nodes and keeps the writable one). Threads send payments
(through the Stripe emulator, whose webhooks reach one API node through a relay that
redelivers until a 2xx, as Stripe does), transfers and authorizations with the Python client,
to both API nodes. The primary's node is killed with SIGKILL, Patroni and postmaster both (a
machine lost: nothing restarts PostgreSQL there or hands the leader key over, so the standby
takes over when the key expires, ttl seconds after its last renewal). The stream goes on
until requests succeed again for a few seconds.

Then, on the new primary: every request answered 2xx is there, nothing was applied twice,
the ledger balances and the audit chain verifies. The report (printed, and written to
failover-report.txt in the test's folder) says what the failover cost: the seconds between
the first and the last 503 or lost connection, how many there were, and how many of them the
client's retries turned into successes. Run with `make test-ha` (not part of `make test`).
"""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import tollgate
from db import keys
from db.migrate import migrate
from tests.conftest import Emulator
from tests.ha.cluster import HaCluster, Node, connect, ha_cluster
from tests.helpers import stripe_client, wait_applied
from tests.test_fault_processes import Served, kill, serve

pytestmark = pytest.mark.ha

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".tollgate" / "cache" / "patroni"
DBNAME = "tollgate_ha"
# The stream goes on until this many seconds pass with no failed attempt after the failover.
CALM_SECONDS = 4.0
FAILED = "failed"


@dataclass
class Attempt:
    at: float  # time.monotonic() when it was sent
    status: int | str  # HTTP status, or the transport error's name
    code: str | None = None  # Tollgate's error code
    done: float = 0.0  # time.monotonic() when its answer (or error) came

    @property
    def failed(self) -> bool:
        return isinstance(self.status, str) or self.status >= 500


class Recording(httpx.BaseTransport):
    """The client's transport, keeping every attempt of the current call (its retries too)."""

    def __init__(self, stream: Stream) -> None:
        self.inner = httpx.HTTPTransport()
        self.stream = stream
        self.attempts: list[Attempt] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        at = time.monotonic()
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError as exc:
            self.add(Attempt(at, type(exc).__name__, done=time.monotonic()))
            raise
        response.read()
        code = None
        if response.status_code >= 400:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
        self.add(Attempt(at, response.status_code, code, time.monotonic()))
        return response

    def add(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        with self.stream.lock:
            self.stream.attempts.append(attempt)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Call:
    kind: str  # payment, transfer, authorize, webhook
    node: str
    key: str  # idempotency key (or event id)
    attempts: list[Attempt]
    result: Any = None  # the client's answer, or FAILED
    error: str | None = None  # the client's final error: "503 database_unavailable", ...

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Stream:
    calls: list[Call] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)  # the clients', as they happen
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    crashed: list[str] = field(default_factory=list)  # a thread's unexpected exception

    def record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)


class Relay:
    """Where the emulator sends its webhooks: each one is passed on to an API node and, as
    Stripe does, sent again (every 0.5 s here) until it is answered 2xx."""

    def __init__(self, target: str, stream: Stream) -> None:
        self.target = target
        self.stream = stream
        self.todo: queue.Queue[tuple[bytes, str] | None] = queue.Queue()
        self.pending = 0
        self.delivered: dict[str, int] = {}  # event id -> how many deliveries were 2xx
        self.succeeded: set[str] = set()  # PaymentIntents whose succeeded event was delivered
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with relay.stream.lock:
                    relay.pending += 1
                relay.todo.put((body, self.headers["Stripe-Signature"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        self.threads += [threading.Thread(target=self.deliver, daemon=True) for _ in range(2)]
        for thread in self.threads:
            thread.start()

    def deliver(self) -> None:
        with httpx.Client(timeout=30) as http_client:
            while True:
                item = self.todo.get()
                if item is None:
                    return
                body, signature = item
                sent = httpx.Response(200, content=body).json()
                event_id = sent["id"]
                attempts: list[Attempt] = []
                while True:
                    at = time.monotonic()
                    try:
                        r = http_client.post(
                            self.target,
                            content=body,
                            headers={
                                "Content-Type": "application/json",
                                "Stripe-Signature": signature,
                            },
                        )
                        attempts.append(Attempt(at, r.status_code, done=time.monotonic()))
                        if r.is_success:
                            break
                    except httpx.TransportError as exc:
                        attempts.append(Attempt(at, type(exc).__name__, done=time.monotonic()))
                    time.sleep(0.5)
                with self.stream.lock:
                    self.delivered[event_id] = self.delivered.get(event_id, 0) + 1
                    if sent["type"] == "payment_intent.succeeded":
                        self.succeeded.add(sent["data"]["object"]["id"])
                    self.pending -= 1
                self.stream.record(Call("webhook", "A", event_id, attempts, event_id))

    def wait_drained(self, succeeded: set[str], timeout: float) -> None:
        """Until the emulator has sent the succeeded event of each of these PaymentIntents
        (about a second after the change) and every webhook got its 2xx."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.stream.lock:
                if self.pending == 0 and self.todo.empty() and succeeded <= self.succeeded:
                    return
            time.sleep(0.1)
        missing = succeeded - self.succeeded
        raise AssertionError(f"after {timeout} s: {self.pending} undelivered, {missing} unsent")

    def close(self) -> None:
        self.server.shutdown()
        for _ in range(2):
            self.todo.put(None)


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[HaCluster]:
    with ha_cluster(tmp_path / "ha", CACHE) as ha:
        yield ha


@pytest.fixture
def servers() -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for served in started:
        if served.process.poll() is None:
            kill(served)


def run_client(
    stream: Stream, kind: str, node: str, url: str, api_key: str, step: Callable[..., Any]
) -> None:
    """Call ``step(client, i)`` until the stream stops, recording each call and its attempts."""
    recording = Recording(stream)
    with tollgate.Client(url, api_key, transport=recording) as client:
        i = 0
        while not stream.stop.is_set():
            recording.attempts = []
            key = f"{kind}-{node}-{i}"  # one thread per kind and API node
            call = Call(kind, node, key, recording.attempts)
            try:
                call.result = step(client, key)
            except tollgate.TollgateError as exc:
                call.result, call.error = FAILED, f"{exc.status} {exc.code}"
            except Exception as exc:
                stream.crashed.append(f"{kind} {node}: {exc!r}")
                raise
            stream.record(call)
            i += 1
            time.sleep(0.02)


def test_primary_killed_every_answered_request_survives(
    ha: HaCluster,
    emulator: Emulator,
    servers: list[Served],
    tmp_path: Path,
) -> None:
    cluster = ha
    primary = cluster.wait_healthy()
    standby = next(n for n in cluster.nodes if n is not primary)
    with connect(primary.dsn()) as admin:
        admin.execute(f"CREATE DATABASE {DBNAME}")
    migrate(cluster.dsn(DBNAME))  # as `tollgate migrate` with the DATABASE_URL below
    with connect(cluster.dsn(DBNAME)) as db:
        ops = keys.create(db, account="ops", is_admin=True).key
        agents = {n: keys.create(db, account=f"agent_{n}").key for n in range(4)}
        db.execute("SELECT api.set_allow_negative_v1(%s, 'ops', 'USD', true)", (ops,))
        db.execute(
            "SELECT api.set_action_price_v1(%s, 'report.generate', 0.05, 'USD', NULL)", (ops,)
        )
        for n in agents:  # credits for the authorizations
            db.execute(
                "SELECT api.transfer_v1(%s, 'ops', %s, 100, 'USD', %s)",
                (ops, f"agent_{n}", f"seed-{n}"),
            )

    # Two stateless API nodes on one multi-host DSN; the emulator's webhooks reach node A.
    dsn = cluster.dsn(DBNAME)
    settings = {"DB_POOL_TIMEOUT": "2", "STRIPE_API_KEY": "sk_test_ha"}
    a = serve(dsn, emulator, tmp_path, **settings)
    servers.append(a)
    b = serve(dsn, emulator, tmp_path, **settings)
    servers.append(b)
    nodes = {"A": a, "B": b}
    stream = Stream()
    relay = Relay(f"{a.url}/v1/webhooks/stripe", stream)
    emulator.point_webhooks_at(relay.url, a.webhook_secret)
    sdk = stripe_client(emulator.base)
    card = sdk.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    confirmed: dict[str, str] = {}  # stripe id -> status Stripe answered

    def pay(client: tollgate.Client, key: str) -> Any:
        paid = client.create_payment(
            None,
            "usd",
            amount_minor=500,
            purpose="credits",
            payment_method=card.id,
            idempotency_key=key,
        )
        intent = sdk.v1.payment_intents.confirm(paid.stripe_id)
        with stream.lock:
            confirmed[paid.stripe_id] = intent.status
        return paid

    def transfer(n: int) -> Callable[[tollgate.Client, str], Any]:
        return lambda client, key: client.transfer(f"agent_{n}", "0.10", "USD", idempotency_key=key)

    def authorize(client: tollgate.Client, key: str) -> Any:
        return client.authorize("report.generate")

    workers = [
        ("payment", "A", agents[0], pay),
        ("payment", "B", agents[1], pay),
        ("transfer", "A", ops, transfer(2)),
        ("transfer", "B", ops, transfer(3)),
        ("authorize", "A", agents[2], authorize),
        ("authorize", "B", agents[3], authorize),
    ]
    threads = [
        threading.Thread(target=run_client, args=(stream, kind, node, nodes[node].url, key, step))
        for kind, node, key, step in workers
    ]
    for thread in threads:
        thread.start()

    try:
        deadline = time.monotonic() + 60
        while sum(c.ok for c in stream.snapshot()) < 150:
            assert time.monotonic() < deadline, f"the stream never got going\n{a.tail()}"
            time.sleep(0.1)
        killed_at = time.monotonic()
        primary.kill()
        cluster.wait_for(
            "the standby promoted",
            lambda ms: any(
                m["name"] == standby.name and m["role"] == "leader" and m["state"] == "running"
                for m in ms
            ),
            timeout=90,
        )
        promoted_at = time.monotonic()
        # Until requests succeed again for a while: no failure for CALM_SECONDS, and a few
        # answered since the last one.
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "requests never succeeded again after failover"
            with stream.lock:
                seen = [at for at in stream.attempts if at.at >= killed_at]
            last = max((at.done for at in seen if at.failed), default=None)
            if last is not None and time.monotonic() - last > CALM_SECONDS:
                if sum(1 for at in seen if not at.failed and at.at > last) >= 20:
                    break
            time.sleep(0.2)
    finally:
        stream.stop.set()
        for thread in threads:
            thread.join(timeout=60)
    relay.wait_drained({pi for pi, st in confirmed.items() if st == "succeeded"}, timeout=60)
    relay.close()

    calls = stream.snapshot()
    assert not any(t.is_alive() for t in threads)
    assert stream.crashed == []
    attempts = [at for call in calls for at in call.attempts]
    statuses = Counter(at.status for at in attempts)
    assert not [s for s in statuses if isinstance(s, int) and s >= 500 and s != 503], (
        f"only 503 while the database is away: {statuses}\n{a.tail()}\n{b.tail()}"
    )

    with connect(cluster.dsn(DBNAME)) as db:
        port = db.execute("SELECT inet_server_port()").fetchone()
        assert port == (standby.port,), "the multi-host DSN reaches the new primary"
        wait_applied(db, timeout=60)
        check_everything_answered_is_there(db, calls, confirmed, relay.delivered)
        # A client that gave up retries later with the same key: each lands once.
        retry_failed_transfers(db, calls, nodes, ops)

    report = failover_report(calls, killed_at, promoted_at, primary, standby)
    timeline = [
        (c.kind, c.node, round(at.at - killed_at, 3), round(at.done - killed_at, 3), at.status)
        for c in calls
        for at in c.attempts
    ]
    (tmp_path / "attempts.json").write_text(json.dumps(sorted(timeline, key=lambda t: t[2])))
    (tmp_path / "failover-report.txt").write_text(report)
    print("\n" + report)


def check_everything_answered_is_there(
    db: psycopg.Connection[Any],
    calls: list[Call],
    confirmed: dict[str, str],
    delivered: dict[str, int],
) -> None:
    ok = [c for c in calls if c.ok]
    payments = {c.key: c.result for c in ok if c.kind == "payment"}
    stored = dict(
        db.execute(
            "SELECT k.key, k.payment_id::text FROM tollgate.idempotency_keys k"
            " WHERE k.key = ANY(%s)",
            (list(payments),),
        ).fetchall()
    )
    assert stored == {key: str(p.id) for key, p in payments.items()}, "every 201 payment is there"

    transfers = {c.key: c.result for c in ok if c.kind == "transfer"}
    postings = dict(
        db.execute(
            "SELECT idempotency_key, id::text FROM tollgate.ledger_postings"
            " WHERE idempotency_key = ANY(%s)",
            (list(transfers),),
        ).fetchall()
    )
    assert postings == {key: str(t.posting_id) for key, t in transfers.items()}, (
        "every 2xx transfer is there, as the posting it answered"
    )
    doubled = db.execute(
        "SELECT account_uuid, idempotency_key FROM tollgate.ledger_postings"
        " WHERE idempotency_key IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    assert doubled == []

    held = [c.result.hold_id for c in ok if c.kind == "authorize"]
    assert None not in held, "authorizations were paid from credits: each holds them"
    holds = [str(h) for h in held]
    found = db.execute(
        "SELECT count(*) FROM tollgate.holds WHERE id = ANY(%s::uuid[])", (holds,)
    ).fetchone()
    assert found == (len(holds),), "every 2xx authorization's hold is there"

    # Each Stripe event answered 2xx is stored once and applied once.
    events = dict(
        db.execute(
            "SELECT id, state::text FROM tollgate.payment_events WHERE id = ANY(%s)",
            (list(delivered),),
        ).fetchall()
    )
    assert set(events) == set(delivered), "every event answered 2xx is stored"
    by_stripe_id = {p.stripe_id: p for p in payments.values()}
    succeeded = [pi for pi, status in confirmed.items() if status == "succeeded"]
    statuses = dict(
        db.execute(
            "SELECT stripe_id, status::text FROM tollgate.payment_intents"
            " WHERE stripe_id = ANY(%s)",
            (succeeded,),
        ).fetchall()
    )
    recorded = [pi for pi in succeeded if pi in by_stripe_id]
    assert {pi: statuses.get(pi) for pi in recorded} == {pi: "succeeded" for pi in recorded}
    moves = db.execute(
        "SELECT entity_id FROM tollgate.audit_log WHERE entity = 'payment_intent'"
        " AND action = 'status_changed' AND new_value = 'succeeded'"
        " GROUP BY 1 HAVING count(*) > 1"
    ).fetchall()
    assert moves == [], "no payment succeeded twice"
    settled = db.execute(
        "SELECT count(*), count(DISTINCT payload ->> 'payment_id') FROM tollgate.outbox"
        " WHERE topic = 'payment.settled'"
    ).fetchone()
    assert settled is not None and settled[0] == settled[1] >= len(recorded)
    left = db.execute(
        "SELECT state::text, count(*) FROM tollgate.payment_events"
        " WHERE state::text NOT IN ('applied', 'stale', 'ignored')"
        " OR note LIKE 'not applied:%%' GROUP BY 1"
    ).fetchall()
    # Pending: an intent Stripe created for a payment whose create never committed here (the
    # request failed, and its retry created another).
    assert set(dict(left)) <= {"pending"}, left
    assert db.execute("SELECT * FROM tollgate.ledger_discrepancies()").fetchall() == []
    assert db.execute("SELECT * FROM tollgate.verify_audit_chain()").fetchall() == []


def retry_failed_transfers(
    db: psycopg.Connection[Any], calls: list[Call], nodes: dict[str, Served], ops: str
) -> None:
    keys_sent = {c.key: c for c in calls if c.kind == "transfer"}
    with tollgate.Client(nodes["B"].url, ops) as client:
        for key, call in keys_sent.items():
            if not call.ok:
                n = 2 if call.node == "A" else 3
                client.transfer(f"agent_{n}", "0.10", "USD", idempotency_key=key)
    moved = db.execute(
        "SELECT count(*) FROM tollgate.ledger_postings WHERE idempotency_key = ANY(%s)",
        (list(keys_sent),),
    ).fetchone()
    assert moved == (len(keys_sent),), "one posting per transfer key: none lost, none doubled"
    assert db.execute("SELECT * FROM tollgate.ledger_discrepancies()").fetchall() == []


def failover_report(
    calls: list[Call], killed_at: float, promoted_at: float, primary: Node, standby: Node
) -> str:
    api = [c for c in calls if c.kind != "webhook"]
    attempts = sorted((at for call in api for at in call.attempts), key=lambda at: at.at)
    failed = [at for at in attempts if at.failed]
    first, last = (failed[0].at, max(at.done for at in failed)) if failed else (0.0, 0.0)
    # Nothing can succeed between the kill (plus a second for requests in flight) and the
    # promotion: the first 2xx after that is the service back.
    back = [at.done for at in attempts if not at.failed and at.at > killed_at + 1]
    served = min(back, default=None)
    kinds = Counter(f"{at.status} {at.code}" if at.code else str(at.status) for at in failed)
    touched = [c for c in api if any(at.failed for at in c.attempts)]
    saved = [c for c in touched if c.ok]
    lost = Counter(c.error for c in touched if not c.ok).most_common()
    hooks = [c for c in calls if c.kind == "webhook"]
    redelivered = [c for c in hooks if any(at.failed for at in c.attempts)]
    per_kind = Counter(c.kind for c in api)
    lines = [
        "Tollgate failover (Patroni 2 nodes, synchronous_mode, ttl 20 s, loop_wait 1 s, "
        "retry_timeout 4 s; 2 API nodes, DB_POOL_TIMEOUT 2 s)",
        f"- primary {primary.name} SIGKILLed (Patroni + postmaster) at t=0; {standby.name} "
        f"leader at t={promoted_at - killed_at:.1f} s",
        f"- failed attempts (503 or lost connection): {len(failed)}, from "
        f"t={first - killed_at:.1f} s to t={last - killed_at:.1f} s = "
        f"{last - first:.1f} s of 503s; first 2xx after them at "
        + (f"t={served - killed_at:.1f} s" if served else "(none)"),
        "  by kind: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common()),
        "- Python client calls (retries=3, backoff 0.25 s doubling, honours Retry-After: 2): "
        f"{len(api)} ({', '.join(f'{k} {n}' for k, n in sorted(per_kind.items()))}); "
        f"{len(touched)} met a failure: {len(saved)} succeeded through the client's retries, "
        f"{len(touched) - len(saved)} raised Unavailable",
        "  raised: " + (", ".join(f"{k} x{n}" for k, n in lost) or "none"),
        f"- Stripe webhooks via node A: {len(hooks)}, {len(redelivered)} of them delivered "
        "only after redelivery (the relay resends every 0.5 s until a 2xx, as Stripe retries)",
        "- on the new primary: every 2xx is there (payments, transfers' postings, "
        "authorizations' holds, webhook events); no idempotency key, posting or Stripe event "
        "applied twice; ledger_discrepancies() and verify_audit_chain() empty; transfers the "
        "client gave up on, re-sent with their keys, landed once each",
    ]
    return "\n".join(lines) + "\n"
