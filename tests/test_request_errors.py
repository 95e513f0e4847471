"""Requests that miss the API itself, answered so that the caller can fix them: a body that is
not sent as JSON (415), a route that does not exist (404 naming it), a method a route does not
take (405 naming the ones it does), a missing Idempotency-Key (400 naming the routes that need
one). Each writes nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from api.deps import IDEMPOTENT_ROUTES
from tests.conftest import Api
from tests.helpers import row_counts

TRANSACTION = b'{"reference": "order-1", "amount": "12.50", "currency": "USD"}'
NO_SUCH = "00000000-0000-0000-0000-000000000001"
PATH_VALUES = {
    "account_id": "ops",
    "action": "report.generate",
    "currency": "USD",
    "hold_id": NO_SUCH,
    "metric": "tokens",
    "ref": "pi_nothing",
    "review_id": NO_SUCH,
}


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_not_sent_as_json_is_415_and_writes_nothing(
    api: Api, new_key: Any, db: psycopg.Connection[Any], content_type: str | None
) -> None:
    key = new_key("alice")
    before = row_counts(db)
    headers = {"Content-Type": content_type} if content_type else {}
    with api.client(key) as http:
        answer = http.post("/v1/transactions", content=TRANSACTION, headers=headers)
    assert answer.status_code == 415, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in error["message"]
    assert (content_type or "it has none").split(";")[0] in error["message"]
    assert row_counts(db) == before


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/x+json",
    ],
)
def test_json_in_any_of_its_spellings_is_read(api: Api, new_key: Any, content_type: str) -> None:
    with api.client(new_key("alice")) as http:
        answer = http.post(
            "/v1/transactions", content=TRANSACTION, headers={"Content-Type": content_type}
        )
    assert answer.status_code == 201, answer.text


def test_every_body_route_refuses_a_form_and_an_empty_optional_body_needs_no_type(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """Every route that documents a JSON body answers 415 to the same body sent as a form,
    before anything else is looked at; a route whose body is optional takes none at all."""
    admin = new_key("ops", admin=True)
    with api.client(admin) as http:
        schema = http.get("/openapi.json").json()
        body_routes = [
            (method.upper(), path.format_map(PATH_VALUES))
            for path, item in schema["paths"].items()
            for method, operation in item.items()
            if "415" in operation["responses"]
        ]
        assert len(body_routes) >= 14, "the routes that read JSON bodies"
        before = row_counts(db)
        for method, path in body_routes:
            answer = http.request(
                method,
                path,
                content=b"amount=1",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Idempotency-Key": "form-1",
                },
            )
            assert answer.status_code == 415, f"{method} {path}: {answer.text}"
        assert row_counts(db) == before
        # No body and no Content-Type: the whole hold, as documented (404: there is none).
        empty = http.post(f"/v1/holds/{NO_SUCH}/capture")
    assert empty.status_code == 404 and empty.json()["error"]["code"] == "not_found"


def test_routes_that_read_no_body_refuse_one_that_is_not_json(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """A form post or a text body never passes for an empty one: every write route (the raw
    Stripe webhook aside) answers 415 to a non-JSON body, whether or not it reads a body, and a
    whitespace-only body is a body."""
    admin = new_key("ops", admin=True)
    with api.client(admin) as http:
        schema = http.get("/openapi.json").json()
        write_routes = [
            (method.upper(), path.format_map(PATH_VALUES | {"reference": "t-1"}))
            for path, item in schema["paths"].items()
            for method in item
            if method in ("post", "put", "patch", "delete") and path != "/v1/webhooks/stripe"
        ]
        assert ("POST", "/v1/transactions/t-1/settle") in write_routes
        before = row_counts(db)
        for method, path in write_routes:
            for content in (b"a=b", b"   "):
                answer = http.request(
                    method,
                    path,
                    content=content,
                    headers={"Content-Type": "text/plain", "Idempotency-Key": "text-1"},
                )
                assert answer.status_code == 415, f"{method} {path} {content!r}: {answer.text}"
        assert row_counts(db) == before


def test_a_body_too_large_is_413_whether_declared_or_streamed(api: Api, new_key: Any) -> None:
    """Declared by its Content-Length, or a chunked upload: 413, whatever the key. (That the
    streamed body is refused before it is all in memory is api.body.read_capped's loop; this
    test sees only the answer.)"""
    huge = b"[" + b"0," * 40_000 + b"0]"  # 80 KB: past the 64 KiB limit

    def chunks() -> Any:
        for start in range(0, len(huge), 8192):
            yield huge[start : start + 8192]

    with api.client("tg_made_up_key_000000000000") as http:
        declared = http.post(
            "/v1/transactions", content=huge, headers={"Content-Type": "application/json"}
        )
        streamed = http.post(
            "/v1/transactions", content=chunks(), headers={"Content-Type": "application/json"}
        )
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "payload_too_large"


def test_an_unknown_route_is_404_naming_it(api: Api) -> None:
    with api.client() as http:
        answer = http.get("/v1/paymnts/pi_123")
        long = http.post("/v2/" + "x" * 5000)
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error.pop("request_id") == answer.headers["x-request-id"]
    assert error == {
        "code": "not_found",
        "message": "no route GET /v1/paymnts/pi_123: /docs lists every route",
    }
    assert long.status_code == 404
    assert len(long.json()["error"]["message"]) < 300, "a long path is cut short"


def test_a_method_a_route_does_not_take_is_405_naming_those_it_does(api: Api) -> None:
    with api.client() as http:
        answer = http.delete("/v1/transfers")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    error = answer.json()["error"]
    assert error.pop("request_id") == answer.headers["x-request-id"]
    assert error == {
        "code": "method_not_allowed",
        "message": "/v1/transfers does not take DELETE; it takes POST",
    }


def test_a_missing_idempotency_key_names_the_routes_that_need_one(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("alice", admin=True)
    before = row_counts(db)
    with api.client(key) as http:
        answers = [
            http.post("/v1/payments", json={"amount": "5.00", "currency": "usd"}),
            http.post("/v1/payments/pi_x/refunds", json={}),
            http.post(
                "/v1/transfers", json={"to_account_id": "bob", "amount": "1", "currency": "USD"}
            ),
        ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "idempotency_key_required"
        assert all(route in error["message"] for route in IDEMPOTENT_ROUTES), error["message"]
        assert "the same one when retrying" in error["message"]
    assert row_counts(db) == before
