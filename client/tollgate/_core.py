"""What the sync and async clients share: errors, the description of one call, when to retry."""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError

from tollgate import models

T = TypeVar("T")

# Answers that mean nothing was done, so any request may be sent again: no database connection
# could be had, or the transaction was rolled back (503 database_unavailable), or a request with
# the same Idempotency-Key was still running (409 idempotency_in_progress). Any other 503 (a
# connection lost mid-request, Stripe unreachable, a proxy's) is retried only for requests that
# are safe to apply twice.
NOTHING_DONE = {(503, "database_unavailable"), (409, "idempotency_in_progress")}
# The longest Retry-After honoured; a server asking for more is not retried.
MAX_RETRY_AFTER = 60.0

# Read-your-own-writes with a standby (Tollgate's DATABASE_READ_URL): a request that may write
# is answered with the primary's WAL position after it; a GET that sends the newest one back
# reads from the standby only once it has replayed that far.
WRITE_LSN_HEADER = "Tollgate-Write-Lsn"
READ_AFTER_HEADER = "Tollgate-Read-After"


def _lsn(text: str) -> int | None:
    high, slash, low = text.strip().partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16) if slash else None
    except ValueError:
        return None


def later_write(known: str | None, response: httpx.Response) -> str | None:
    """The newer of ``known`` and the write position ``response`` answers, if any."""
    answered = response.headers.get(WRITE_LSN_HEADER)
    new = _lsn(answered) if answered else None
    if new is None:
        return known
    old = _lsn(known) if known else None
    return answered if old is None or new > old else known


class TollgateError(Exception):
    """An error answer from Tollgate: HTTP status, Tollgate's code, its message, the body, and
    the request's id (its X-Request-Id, which names the request in Tollgate's log)."""

    def __init__(
        self, status: int, code: str, message: str, body: Any = None, request_id: str | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.request_id = request_id


class BadRequest(TollgateError):
    """400 or 422: the request's shape or values were refused; nothing was written."""


class Unauthorized(TollgateError):
    """401: no key, or an invalid or revoked one."""


class Forbidden(TollgateError):
    """403: this needs an admin key."""


class NotFound(TollgateError):
    """404: no such thing, or not this key's."""


class Conflict(TollgateError):
    """409: refused by a rule (a transition, a duplicate, insufficient funds, a review)."""


class PaymentRequired(TollgateError):
    """402 from authorize: not entitled. ``required.accepts`` lists the payments that would
    entitle the account (one run of the action, or credits), ready to send."""

    def __init__(
        self, status: int, code: str, message: str, body: Any = None, request_id: str | None = None
    ) -> None:
        super().__init__(status, code, message, body, request_id)
        # Only authorize's refusal carries payment instructions; other 402s (a declined card,
        # a capture past a spend cap) are plain errors.
        self.required: models.PaymentRequired | None = None
        try:
            self.required = models.PaymentRequired.model_validate(body)
        except ValidationError:
            pass


class Unavailable(TollgateError):
    """502, 503 or 504 after the retries, or Tollgate could not be reached."""


ERRORS: dict[int, type[TollgateError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: PaymentRequired,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    422: BadRequest,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One route: how to send it, what it answers, and whether a lost answer may be re-sent
    (GET, PUT, and requests carrying an idempotency key or event ids)."""

    method: str
    path: str
    model: Any
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False
    ok: frozenset[int] = frozenset()  # non-2xx statuses that are answers, not errors


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def result(call: Call[T], response: httpx.Response) -> T:
    """The parsed answer, or the typed error."""
    if response.is_success or response.status_code in call.ok:
        try:
            parsed: T = TypeAdapter(call.model).validate_json(response.content)
        except ValidationError as exc:
            raise TollgateError(
                response.status_code,
                "invalid_response",
                f"the answer is not the expected {call.model!r}: {response.text[:200]!r}",
            ) from exc
        return parsed
    body = body_of(response)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code", "error") if isinstance(error, dict) else "error"
    message = error.get("message", response.text[:200]) if isinstance(error, dict) else ""
    kind = ERRORS.get(response.status_code, TollgateError)
    request_id = response.headers.get("x-request-id")
    raise kind(
        response.status_code, str(code), str(message or response.reason_phrase), body, request_id
    )


def retry_response(call: Call[Any], response: httpx.Response) -> bool:
    """Whether this answer may be followed by sending the same request again."""
    body = body_of(response)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if (response.status_code, code) in NOTHING_DONE:
        return True
    return call.idempotent and response.status_code in (502, 503, 504)


def retry_exception(call: Call[Any], exc: httpx.TransportError) -> bool:
    """A request that never left may be sent again; one whose answer was lost only if sending
    it twice does no harm."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) or call.idempotent


def pause(
    attempt: int, response: httpx.Response | None, base: float, cap: float = 8.0
) -> float | None:
    """Seconds to wait before the next try: exponential backoff from ``base`` (at most ``cap``),
    or longer if the server's Retry-After asks; None when it asks for more than a minute."""
    wait: float = min(cap, base * 2**attempt)
    header: str | None = response.headers.get("Retry-After") if response is not None else None
    if not header:
        return wait
    try:
        asked = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return wait
        if when.tzinfo is None:  # HTTP dates are GMT
            when = when.replace(tzinfo=dt.UTC)
        asked = when.timestamp() - time.time()
    if asked > MAX_RETRY_AFTER:
        return None
    return max(wait, asked)
