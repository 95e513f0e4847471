"""Request ids, the request log, and how `tollgate serve` logs.

Every HTTP request gets an id: the caller's ``X-Request-Id`` when it is a sane one (1 to 128
characters of ``A-Z a-z 0-9 . _ : / + = @ -``), else a new one. It is answered in the
``X-Request-Id`` header of every response and in every error body (``error.request_id``), and
it names the request's line in the log: one line per request (logger ``tollgate.access``) with
the route template, method, status, duration, the key's account and key id when the request
was authenticated, the error code answered, and a Stripe webhook's outcome. With
``tollgate serve`` each line is a JSON object (``LOG_FORMAT=text`` for plain text).

The middleware is plain ASGI (no BaseHTTPMiddleware: no extra task or body copy per request),
and it also times each request for the Prometheus histograms of api/metrics.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import queries
from db.errors import DomainError

if TYPE_CHECKING:
    from api.metrics import Metrics

log = logging.getLogger("tollgate.access")

REQUEST_ID_HEADER = "X-Request-Id"
_HEADER = REQUEST_ID_HEADER.lower().encode()
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# The one route whose requests are Stripe's webhooks (api/routes/webhooks.py).
WEBHOOK_ROUTE = "/v1/webhooks/stripe"
# Routes whose bearer key is an API key (the request log names its account and key id).
_KEYED = ("/v1/", "/mcp")


@dataclass(slots=True)
class RequestContext:
    """What the request log learns while a request runs."""

    request_id: str
    error: str | None = None  # the error code answered, if any
    webhook_outcome: str | None = None  # applied, duplicate, pending, stale, rejected, ignored
    stripe_event_id: str | None = None


_CURRENT: ContextVar[RequestContext | None] = ContextVar("tollgate_request", default=None)


def current() -> RequestContext | None:
    """The request being answered, if any (set by RequestLog for every HTTP request)."""
    return _CURRENT.get()


def current_request_id() -> str | None:
    ctx = _CURRENT.get()
    return ctx.request_id if ctx is not None else None


def note_webhook(outcome: str, event_id: str) -> None:
    """For the request log: what a Stripe webhook did."""
    ctx = _CURRENT.get()
    if ctx is not None:
        ctx.webhook_outcome, ctx.stripe_event_id = outcome, event_id


def request_id_from(header: bytes | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if header is not None:
        try:
            given = header.decode("ascii")
        except UnicodeDecodeError:
            given = ""
        if _SANE_ID.fullmatch(given):
            return given
    return os.urandom(16).hex()


# ---------------------------------------------------------------------------------------------
# Who a key is, for the log
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    account_id: str
    key_id: str


class Identities:
    """The account and key id behind a bearer key, for the request log only (never for a
    decision: every stored function authenticates the key itself). Looked up once per key and
    process (api.whoami_v1), after the answer was sent, and remembered by the key's SHA-256,
    never the key. A key's account and id never change; a revoked key's requests answer 401,
    which is not looked up."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._known: OrderedDict[bytes, KeyIdentity | None] = OrderedDict()
        self._pending: dict[bytes, asyncio.Task[KeyIdentity | None]] = {}

    async def lookup(self, pool: Any, key: str) -> KeyIdentity | None:
        digest = hashlib.sha256(key.encode()).digest()
        if digest in self._known:
            self._known.move_to_end(digest)
            return self._known[digest]
        task = self._pending.get(digest)
        if task is None:  # one lookup per key, however many requests wait for it
            task = asyncio.ensure_future(self._fetch(pool, key, digest))
            self._pending[digest] = task
            task.add_done_callback(lambda _: self._pending.pop(digest, None))
        return await asyncio.shield(task)

    async def _fetch(self, pool: Any, key: str, digest: bytes) -> KeyIdentity | None:
        try:
            async with pool.connection(timeout=1.0) as conn:
                found = await queries.whoami(conn, api_key=key)
            identity: KeyIdentity | None = KeyIdentity(found.account_id, str(found.key_id))
        except DomainError as exc:
            if exc.kind != "unauthorized":
                return None  # the database is busy or down: try again with the next request
            identity = None  # no such key (remembered: keys are random, never made up later)
        except Exception:  # the log never fails a request
            return None
        self._known[digest] = identity
        if len(self._known) > self._size:
            self._known.popitem(last=False)
        return identity


def bearer_key(header: bytes | None) -> str | None:
    if not header:
        return None
    scheme, _, key = header.decode("latin-1").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 200:
        return None
    return key


# ---------------------------------------------------------------------------------------------
# The middleware
# ---------------------------------------------------------------------------------------------


class RequestLog:
    """Pure ASGI middleware: a request id for every request (header, error bodies), one log
    line per request, and its duration in the metrics."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics | None = None, identities: Identities | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.identities = identities or Identities()
        self._paths: dict[Any, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = authorization = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                given = value
            elif name == b"authorization":
                authorization = value
        ctx = RequestContext(request_id_from(given))
        # Not reset when the request ends: Starlette's outermost handler, which answers an
        # unhandled exception with 500 after this middleware has returned, reads it there. Each
        # request runs in a task of its own, so it goes no further.
        _CURRENT.set(ctx)
        own_header = (_HEADER, ctx.request_id.encode())
        status = 0
        ended = 0.0

        async def send_with_id(message: Message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(k.lower() == _HEADER for k, _ in headers):
                    headers.append(own_header)
                    message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            if not status:  # Starlette's outermost handler answers 500 internal_error
                status, ctx.error = 500, ctx.error or "internal_error"
            self._record(scope, ctx, status, (ended or time.perf_counter()) - started, None)
            raise
        seconds = (ended or time.perf_counter()) - started
        identity = None
        # Only for answers the database gave to an accepted key (a success, or a 402, 403, 404
        # or 409 of a matched route; a made-up key is a 401): a request with any made-up key
        # must not buy a database round trip, as one to no route or with a bad limit would.
        accepted = status < 400 or status in (402, 403, 404, 409)
        if (
            authorization
            and accepted
            and scope.get("route") is not None
            and log.isEnabledFor(logging.INFO)
        ):
            identity = await self._identity(scope, authorization)
        self._record(scope, ctx, status, seconds, identity)

    def _template(self, scope: Scope) -> str | None:
        """The matched route's path template (``/v1/holds/{hold_id}``), None for no route.
        FastAPI names its own routes in the scope; a plain Starlette route (/mcp, /metrics)
        only its endpoint, found among the app's routes."""
        path = getattr(scope.get("route"), "path", None)
        if path is None and "endpoint" in scope:
            if self._paths is None:
                routes = getattr(scope.get("app"), "routes", ())
                self._paths = {
                    r.endpoint: r.path for r in routes if isinstance(r, Route | APIRoute)
                }
            path = self._paths.get(scope["endpoint"])
        return path

    async def _identity(self, scope: Scope, authorization: bytes) -> KeyIdentity | None:
        path: str = scope.get("path", "")
        key = bearer_key(authorization)
        pool = getattr(getattr(scope.get("app"), "state", None), "pool", None)
        if key is None or pool is None or not path.startswith(_KEYED) or path == WEBHOOK_ROUTE:
            return None
        return await self.identities.lookup(pool, key)

    def _record(
        self,
        scope: Scope,
        ctx: RequestContext,
        status: int,
        seconds: float,
        identity: KeyIdentity | None,
    ) -> None:
        route = self._template(scope)
        method: str = scope.get("method", "")
        if self.metrics is not None:
            webhook = None
            if route == WEBHOOK_ROUTE:
                webhook = ctx.webhook_outcome or ctx.error or "error"
            self.metrics.observe(method, route, status, seconds, webhook)
        if not log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": method,
            "route": route,
            "path": scope.get("path"),
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
        }
        if identity is not None:
            fields["account_id"], fields["key_id"] = identity.account_id, identity.key_id
        if ctx.error is not None:
            fields["error"] = ctx.error
        if ctx.webhook_outcome is not None:
            fields["webhook_outcome"] = ctx.webhook_outcome
            fields["stripe_event_id"] = ctx.stripe_event_id
        log.info("request", extra={"fields": fields})


# ---------------------------------------------------------------------------------------------
# Logging set-up (tollgate serve)
# ---------------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the record's fields (see
    RequestLog), the request id of the request being answered, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if "request_id" not in out and (rid := current_request_id()) is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Plain text, the record's fields as key=value after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += "".join(f" {k}={_text_value(v)}" for k, v in fields.items() if v is not None)
        return text


_PLAIN = re.compile(r"[\w.:/@+=,{}\-]*")


def _text_value(value: object) -> str:
    """A field's value as it can stand in a text log line: as is when it is plain, else
    JSON-quoted, so a request's path can neither start a line of its own nor fake a field."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


LogFormat = Literal["json", "text"]
FORMATTERS: dict[str, Callable[[], logging.Formatter]] = {
    "json": JsonFormatter,
    "text": TextFormatter,
}


def logging_config(level: str, fmt: LogFormat) -> dict[str, Any]:
    """A logging.config.dictConfig for `tollgate serve` (uvicorn applies it in every worker):
    everything to standard error in one format, uvicorn's messages included."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tollgate": {"()": f"{__name__}.{FORMATTERS[fmt].__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "tollgate",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
    }


# ---------------------------------------------------------------------------------------------
# Metrics across worker processes (tollgate serve --workers N)
# ---------------------------------------------------------------------------------------------

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(workers: int) -> Callable[[], None]:
    """Before the workers start: with several, their metrics are kept in files in
    PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode), so every scrape reports
    the sum of all of them. A folder given in the environment is emptied of the previous run's
    files; without one, a temporary folder is made (and removed by the returned function).
    Must run before prometheus_client is imported in this process (api.metrics imports it)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return lambda: None
    if workers <= 1:
        return lambda: None
    made = tempfile.mkdtemp(prefix="tollgate-metrics-")
    os.environ[MULTIPROC_ENV] = made
    return lambda: shutil.rmtree(made, ignore_errors=True)
