"""Observability: a request id on every answer and in every error body, one JSON log line per
request from `tollgate serve`, and GET /metrics (latency histograms, pool statistics, the
database's gauges), which answers even while the database is down."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from api import stripe_emulator
from api.main import create_app
from api.observability import JsonFormatter
from db import keys
from tests.conftest import Api, Emulator, ServerThread, make_settings, register_webhook_secret
from tests.helpers import event, sign, wait_applied

ROOT = Path(__file__).resolve().parent.parent
HEX_ID = r"[0-9a-f]{32}"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A scrape's samples by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return scrape.get((name, frozenset(labels.items())))


def scrape(
    http: httpx.Client, **headers: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = http.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(r.text)


def post_webhook(http: httpx.Client, payload: bytes, secret: str) -> httpx.Response:
    headers = {"Stripe-Signature": sign(payload, secret), "Content-Type": "application/json"}
    return http.post("/v1/webhooks/stripe", content=payload, headers=headers)


# ---------------------------------------------------------------------------------------------
# Request ids
# ---------------------------------------------------------------------------------------------


def test_every_answer_carries_a_request_id_and_every_error_body_the_same(
    api: Api, new_key: Any
) -> None:
    key, admin = new_key("rid_user"), new_key("rid_ops", admin=True)
    with api.client(admin) as http:
        price = {"price": "1.00", "currency": "USD"}
        assert http.put("/v1/actions/report.generate", json=price).is_success
    with api.client(key) as http:
        ok = http.get("/healthz")
        assert ok.status_code == 200
        assert len(ok.headers["x-request-id"]) == 32
        assert ok.headers["x-request-id"] != http.get("/healthz").headers["x-request-id"]

        given = http.get("/v1/me", headers={"X-Request-Id": "trace-7f3a:span.2/b+c=@d"})
        assert given.status_code == 200
        assert given.headers["x-request-id"] == "trace-7f3a:span.2/b+c=@d", "a sane id is kept"
        for insane in (b"has spaces", b"x" * 129, b'quote"d', "é".encode(), b""):
            r = http.get("/healthz", headers={"X-Request-Id": insane})
            assert len(r.headers["x-request-id"]) == 32, insane

        errors = {
            "unknown route": http.get("/v2/nothing"),
            "validation": http.post("/v1/transactions", json={"reference": "r"}),
            "malformed json": http.post(
                "/v1/transactions", content=b"{", headers={"Content-Type": "application/json"}
            ),
            "database rule": http.get("/v1/payments/pi_not_there"),
            "not an admin": http.put(
                "/v1/actions/report.generate", json={"price": "1.00", "currency": "USD"}
            ),
            "given id": http.get("/v1/holds/nope", headers={"X-Request-Id": "caller-42"}),
        }
        errors["no key"] = httpx.get(f"{api.url}/v1/me")
        errors["bad key"] = httpx.get(f"{api.url}/v1/me", headers={"Authorization": "Bearer tg_x"})
        # authorize's 402 is a body of its own (how to pay), with the same error object.
        errors["payment required"] = http.post("/v1/authorize", json={"action": "report.generate"})
    assert errors["payment required"].status_code == 402
    for name, r in errors.items():
        assert r.status_code >= 400, name
        rid = r.headers.get("x-request-id")
        assert rid and r.json()["error"]["request_id"] == rid, f"{name}: {r.status_code} {r.text}"
        assert r.headers.get_list("x-request-id") == [rid], f"{name}: one header"
    assert errors["given id"].json()["error"]["request_id"] == "caller-42"


class Lines(logging.Handler):
    """Log lines as `tollgate serve` writes them, formatted when they are logged."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_an_unhandled_exception_answers_500_with_the_request_id(
    db_dsn: str, emulator: Emulator
) -> None:
    """The 500 of a defect is answered outside the middleware (by Starlette's outermost
    handler): it carries the id all the same, and so do its log lines."""
    app = create_app(make_settings(db_dsn, emulator.base))

    @app.get("/v1/defect")
    async def defect() -> None:
        raise RuntimeError("a defect")

    port = stripe_emulator.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    logger, captured = logging.getLogger("tollgate"), Lines()
    level = logger.level
    logger.addHandler(captured)
    logger.setLevel(logging.INFO)
    try:
        thread.start()
        stripe_emulator.wait_for_port(port)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/defect", headers={"X-Request-Id": "d-1"})
        wait_for(lambda: len(captured.lines) >= 2 or None, "the request's two log lines")
    finally:
        logger.removeHandler(captured)
        logger.setLevel(level)
        server.should_exit = True
        thread.join(timeout=15)
    assert r.status_code == 500 and r.headers.get_list("x-request-id") == ["d-1"]
    assert r.json()["error"] == {
        "code": "internal_error",
        "message": "an unexpected error occurred",
        "request_id": "d-1",
    }
    by_logger = {line["logger"]: line for line in captured.lines}
    access, unhandled = by_logger["tollgate.access"], by_logger["tollgate.api"]
    assert (access["request_id"], access["status"], access["error"]) == (
        "d-1",
        500,
        "internal_error",
    )
    assert access["route"] == "/v1/defect"
    assert unhandled["request_id"] == "d-1" and unhandled["level"] == "error"
    assert "RuntimeError: a defect" in unhandled["exception"]


def test_the_client_raises_errors_with_their_request_id(api: Api, new_key: Any) -> None:
    from tollgate import Client, NotFound

    with Client(api.url, api_key=new_key("rid_client")) as client:
        with pytest.raises(NotFound) as raised:
            client.get_payment("pi_missing")
    assert raised.value.request_id and len(raised.value.request_id) == 32
    assert raised.value.body["error"]["request_id"] == raised.value.request_id


# ---------------------------------------------------------------------------------------------
# The request log of `tollgate serve`
# ---------------------------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def lines(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def serve(emulator: Emulator, tmp_path: Path) -> Iterator[Any]:
    """`tollgate serve` as its own process, its standard error in a file."""
    started: list[Served] = []

    def start(dsn: str, *, workers: int = 1, **env: str) -> Served:
        port = stripe_emulator.free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "PROMETHEUS"))}
        log = tmp_path / f"serve-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1"),
                    *("--port", str(port), "--workers", str(workers)),
                ],
                cwd=ROOT,
                env=clean
                | {
                    "ENVIRONMENT": "test",
                    "DATABASE_URL": dsn,
                    "STRIPE_API_KEY": "sk_test_obs",
                    "STRIPE_API_BASE": emulator.base,
                    "DB_POOL_MIN_SIZE": "1",
                }
                | env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        served = Served(f"http://127.0.0.1:{port}", process, log)
        started.append(served)
        stripe_emulator.wait_for_port(port, timeout=60, process=process)
        return served

    yield start
    for served in started:
        served.stop()


def wait_for(find: Any, what: str, seconds: float = 30) -> Any:
    """Poll until ``find()`` returns something (a bounded wait, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while (found := find()) is None:
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)
    return found


def test_serve_logs_one_json_line_per_request(
    serve: Any, db_dsn: str, db: psycopg.Connection[Any]
) -> None:
    made = keys.create(db, account="log_user")
    secret = register_webhook_secret(db_dsn)
    served = serve(db_dsn)
    payload = event("evt_logged_1", "pi_never_recorded", "succeeded")
    with httpx.Client(base_url=served.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {made.key}"}
        assert http.get("/v1/me", headers=auth | {"X-Request-Id": "log-me"}).status_code == 200
        assert http.get("/v1/payments/pi_nope", headers=auth).status_code == 404
        assert http.get("/v1/me", headers={"Authorization": "Bearer tg_wrong"}).status_code == 401
        hook = post_webhook(http, payload, secret)
        assert hook.json()["outcome"] == "received"
        refused = post_webhook(http, payload, "whsec_" + "1" * 32)
        assert refused.status_code == 400
    wanted = {
        "log-me",
        http_id(hook),
        http_id(refused),
    }

    def lines() -> dict[str, dict[str, Any]] | None:
        parsed = [json.loads(line) for line in served.lines()]
        by_id = {p["request_id"]: p for p in parsed if p.get("logger") == "tollgate.access"}
        return by_id if len(by_id) >= 5 and wanted <= set(by_id) else None

    found = wait_for(lines, "five request lines")
    every = [json.loads(line) for line in served.lines()]  # uvicorn's lines are JSON too
    assert any(p["logger"].startswith("uvicorn") for p in every)
    assert all({"time", "level", "logger", "message"} <= set(p) for p in every)

    me = found["log-me"]
    assert me == {
        "time": me["time"],
        "level": "info",
        "logger": "tollgate.access",
        "message": "request",
        "request_id": "log-me",
        "method": "GET",
        "route": "/v1/me",
        "path": "/v1/me",
        "status": 200,
        "duration_ms": me["duration_ms"],
        "account_id": "log_user",
        "key_id": str(made.key_id),
    }
    assert isinstance(me["duration_ms"], float) and me["duration_ms"] > 0
    by_status = {p["status"]: p for p in found.values()}
    assert by_status[404]["route"] == "/v1/payments/{ref}"
    assert by_status[404]["error"] == "not_found" and by_status[404]["account_id"] == "log_user"
    assert by_status[401]["error"] == "invalid_api_key" and "account_id" not in by_status[401]
    applied = found[http_id(hook)]
    assert applied["route"] == "/v1/webhooks/stripe" and applied["status"] == 200
    assert applied["webhook_outcome"] == "received"
    assert applied["stripe_event_id"] == "evt_logged_1"
    assert found[http_id(refused)]["error"] == "invalid_signature"
    assert "webhook_outcome" not in found[http_id(refused)]


def http_id(r: httpx.Response) -> str:
    rid = r.headers["x-request-id"]
    assert r.status_code < 400 or r.json()["error"]["request_id"] == rid
    return rid


def test_serve_log_level_and_text_format(serve: Any, db_dsn: str) -> None:
    quiet = serve(db_dsn, LOG_LEVEL="warning")
    text = serve(db_dsn, LOG_FORMAT="text")
    for served in (quiet, text):
        with httpx.Client(base_url=served.url, timeout=30) as http:
            assert http.get("/healthz", headers={"X-Request-Id": "fmt-1"}).status_code == 200
    wait_for(lambda: any("request_id=fmt-1" in line for line in text.lines()) or None, "text")
    line = next(line for line in text.lines() if "request_id=fmt-1" in line)
    assert " INFO tollgate.access request request_id=fmt-1 method=GET route=/healthz" in line
    # The same request was answered by the quiet one; at warning no request line is written.
    assert [line for line in quiet.lines() if "fmt-1" in line] == []


# ---------------------------------------------------------------------------------------------
# GET /metrics
# ---------------------------------------------------------------------------------------------


def test_metrics_report_latency_pool_and_the_databases_gauges(
    api: Api, db: psycopg.Connection[Any], new_key: Any
) -> None:
    admin, user = new_key("metrics_ops", admin=True), new_key("metrics_user")
    with api.client() as http:
        before = scrape(http)
        assert value(before, "tollgate_db_up") == 1
        assert value(before, "tollgate_stripe_events_pending") == 0
        assert value(before, "tollgate_audit_chain_problems") == 0
        assert value(before, "tollgate_outbox_backlog", consumer="metrics") is None
        assert value(before, "tollgate_db_pool_max") == 20  # make_settings' pool

        # Requests of several routes and statuses; the histograms count each one.
        for _ in range(3):
            assert http.get("/v1/me", headers={"Authorization": f"Bearer {user}"}).is_success
        assert http.get("/v2/nothing").status_code == 404
        pending = post_webhook(
            http, event("evt_metrics_1", "pi_unseen", "succeeded"), api.webhook_secret
        )
        assert pending.json()["outcome"] == "received"
        assert wait_applied(db, "evt_metrics_1") == {"evt_metrics_1": "pending"}
        assert post_webhook(http, b"{}", "whsec_" + "2" * 32).status_code == 400

        # A consumer with a dead letter and a backlog; an active hold.
        db.execute("SELECT api.register_consumer_v1('metrics', false)")
        for ref in ("m-1", "m-2"):
            admin_h = {"Authorization": f"Bearer {admin}"}
            created = http.post(
                "/v1/transactions",
                json={
                    "account_id": "metrics_user",
                    "reference": ref,
                    "amount": "5.00",
                    "currency": "USD",
                },
                headers=admin_h,
            )
            assert created.status_code == 201, created.text
            settled = http.post(
                f"/v1/transactions/{ref}/settle",
                params={"account_id": "metrics_user"},
                headers=admin_h,
            )
            assert settled.status_code == 200, settled.text
        dead = db.execute(
            "SELECT api.delivery_failed_v2('metrics', c.lease_token, c.outbox_id, 'boom', 1,"
            " '1 second') FROM api.claim_deliveries_v2('metrics', 1, '1 minute', 1) c"
        ).fetchone()
        assert dead == ("dead",)
        price = http.put(
            "/v1/actions/report.generate",
            json={"price": "0.75", "currency": "USD"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert price.is_success, price.text
        held = http.post(
            "/v1/authorize",
            json={"action": "report.generate"},
            headers={"Authorization": f"Bearer {user}"},
        )
        assert held.json()["via"] == "credits", held.text
        announced = db.execute("SELECT count(*) FROM tollgate.outbox").fetchone()
        assert announced and announced[0] >= 2

        after = scrape(http)

    def count(route: str, method: str, status_class: str) -> float:
        name = "tollgate_http_request_duration_seconds_count"
        got = value(after, name, method=method, route=route, status_class=status_class) or 0
        was = value(before, name, method=method, route=route, status_class=status_class) or 0
        return got - was

    assert count("/v1/me", "GET", "2xx") == 3
    assert count("unmatched", "GET", "4xx") == 1
    assert count("/v1/webhooks/stripe", "POST", "2xx") == 1
    assert count("/v1/webhooks/stripe", "POST", "4xx") == 1
    assert count("/v1/transactions/{reference}/settle", "POST", "2xx") == 2
    assert count("/metrics", "GET", "2xx") == 1, "the first scrape, timed once it was answered"
    bucket = value(
        after,
        "tollgate_http_request_duration_seconds_bucket",
        method="GET",
        route="/v1/me",
        status_class="2xx",
        le="+Inf",
    )
    assert bucket == 3
    assert value(after, "tollgate_stripe_webhooks_total", outcome="received") == 1
    assert value(after, "tollgate_stripe_webhooks_total", outcome="invalid_signature") == 1

    assert value(after, "tollgate_db_up") == 1
    assert value(after, "tollgate_stripe_events_pending") == 1
    assert (value(after, "tollgate_stripe_events_pending_oldest_age_seconds") or -1) >= 0
    assert value(after, "tollgate_stripe_events_received") == 0, "the applier keeps up"
    backlog = value(after, "tollgate_outbox_backlog", consumer="metrics")
    assert backlog == announced[0] - 1, "every event but the dead letter waits"
    assert value(after, "tollgate_outbox_dead_letters", consumer="metrics") == 1
    assert (
        value(after, "tollgate_outbox_oldest_pending_age_seconds", consumer="metrics") or -1
    ) >= 0
    assert value(after, "tollgate_holds_active", currency="USD") == 1
    assert value(after, "tollgate_holds_active_amount_minor", currency="USD") == 75
    assert value(after, "tollgate_audit_chain_problems") == 0

    grew = value(after, "tollgate_db_pool_requests_total") or 0
    assert grew > (value(before, "tollgate_db_pool_requests_total") or 0)
    assert value(after, "tollgate_db_pool_size") is not None

    # A superuser editing the newest audit row around the triggers: the next scrape says so.
    db.execute("ALTER TABLE tollgate.audit_log DISABLE TRIGGER USER")
    db.execute(
        "UPDATE tollgate.audit_log SET note = 'x'"
        " WHERE id = (SELECT max(id) FROM tollgate.audit_log)"
    )
    db.execute("ALTER TABLE tollgate.audit_log ENABLE TRIGGER USER")
    with api.client() as http:
        assert value(scrape(http), "tollgate_audit_chain_problems") == 1


def test_metrics_answer_while_the_database_is_down(emulator: Emulator) -> None:
    port = stripe_emulator.free_port()  # nothing listens there
    dead = f"host=127.0.0.1 port={port} dbname=x user=postgres connect_timeout=1"
    settings = make_settings(dead, emulator.base, db_pool_timeout=0.5, db_pool_min_size=1)
    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        down = scrape(http)
        refused = http.get("/readyz")
    assert value(down, "tollgate_db_up") == 0
    assert value(down, "tollgate_stripe_events_pending") is None, (
        "no figure rather than a wrong one"
    )
    assert value(down, "tollgate_db_pool_max") == 20
    assert refused.status_code == 503
    assert refused.json()["error"]["request_id"] == refused.headers["x-request-id"]


def test_metrics_token(db_dsn: str, emulator: Emulator) -> None:
    token = "m3trics-" + "t" * 24
    settings = make_settings(db_dsn, emulator.base, metrics_token=token)
    with ServerThread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        missing = http.get("/metrics")
        wrong = http.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = scrape(http, Authorization=f"Bearer {token}")
    for r in (missing, wrong):
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_metrics_token"
        assert r.headers["www-authenticate"] == "Bearer"
    assert value(allowed, "tollgate_db_up") == 1


def test_workers_report_one_sum(serve: Any, db_dsn: str) -> None:
    """With several workers, every scrape sums all of them, whichever worker answers it."""
    served = serve(db_dsn, workers=2, DB_POOL_MIN_SIZE="3", LOG_LEVEL="warning")

    def both_up() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        with httpx.Client(base_url=served.url, timeout=30, headers={"Connection": "close"}) as h:
            found = scrape(h)
        return found if value(found, "tollgate_db_pool_min") == 6 else None

    wait_for(both_up, "both workers' pools (3 + 3) in one scrape", seconds=60)
    for _ in range(20):  # new connections, spread over the workers by the kernel
        with httpx.Client(base_url=served.url, timeout=30, headers={"Connection": "close"}) as h:
            assert h.get("/healthz").status_code == 200
    for _ in range(4):
        with httpx.Client(base_url=served.url, timeout=30, headers={"Connection": "close"}) as h:
            found = scrape(h)
        healthz = value(
            found,
            "tollgate_http_request_duration_seconds_count",
            method="GET",
            route="/healthz",
            status_class="2xx",
        )
        assert healthz == 20
        assert value(found, "tollgate_db_pool_min") == 6


def test_a_text_log_line_cannot_be_forged_by_a_path() -> None:
    """A decoded path with a newline, an escape or spaces is quoted in the text format: it
    neither starts a line of its own nor fakes a field."""
    import logging

    from api.observability import TextFormatter

    record = logging.LogRecord("tollgate.access", logging.INFO, __file__, 1, "request", (), None)
    record.fields = {  # type: ignore[attr-defined]
        "path": "/v1/nope/a\nINFO tollgate.access request request_id=forged\x1b[31m",
        "status": 404,
        "route": "/v1/holds/{hold_id}",
    }
    line = TextFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    assert ' path="/v1/nope/a\\nINFO tollgate.access request request_id=forged\\u001b[31m"' in line
    assert line.endswith(" status=404 route=/v1/holds/{hold_id}")
