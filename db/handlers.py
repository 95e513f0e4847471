"""What `tollgate listen` can do with an event: a Python callable, a signed webhook, stdout.

Outbound webhooks are signed like Stripe's, so receivers verify them the same way: the header
`Tollgate-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>`.
Any answer other than 2xx is a failure, and the event is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import re
import sys
import time
from typing import cast

import httpx

from db.listener import Handler, OutboxEvent, event_json

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def load(spec: str) -> Handler:
    """A handler from "package.module:function" (or "package.module.function")."""
    module_name, _, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module_name or not name:
        raise ValueError(f"expected module:function, got {spec!r}")
    handler = getattr(importlib.import_module(module_name), name, None)
    if not callable(handler):
        raise ValueError(f"{spec} is not a callable")
    return cast(Handler, handler)


def stdout(event: OutboxEvent) -> None:
    """One JSON line per event on standard output."""
    sys.stdout.write(event_json(event) + "\n")
    sys.stdout.flush()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(body: bytes, header: str, secret: str, tolerance: int = 300) -> bool:
    """For receivers: is this Tollgate-Signature valid for the body, and recent?

    Any ``v1`` may match (a sender rotating its secret sends one per secret, in any order);
    the first ``t`` is the timestamp. A malformed header of any kind (not text, no timestamp,
    non-ASCII or non-hex signatures) is False, never an exception."""
    if not isinstance(header, str) or not isinstance(body, bytes | bytearray):
        return False
    pairs = [item.split("=", 1) for item in header.split(",") if "=" in item]
    stamps = [value.strip() for name, value in pairs if name.strip() == "t"]
    if not stamps or not _TIMESTAMP.fullmatch(stamps[0]):
        return False
    t = int(stamps[0])
    if abs(time.time() - t) > tolerance:
        return False
    given = [value.strip() for name, value in pairs if name.strip() == "v1"]
    expected = sign(bytes(body), secret, t).split("v1=", 1)[1].encode("ascii")
    # Compared as bytes, each in constant time; a value that is not 64 hex digits cannot match.
    return any(
        hmac.compare_digest(expected, value.encode("ascii"))
        for value in given
        if _SIGNATURE.fullmatch(value)
    )


class Webhook:
    """POST each event as JSON to a URL, signed with the secret."""

    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self.client = httpx.Client(timeout=timeout)

    def __call__(self, event: OutboxEvent) -> None:
        body = event_json(event).encode()
        answer = self.client.post(
            self.url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "Tollgate-Signature": sign(body, self.secret),
                "Tollgate-Event-Id": str(event.id),
            },
        )
        if not 200 <= answer.status_code < 300:
            raise RuntimeError(f"{self.url} answered {answer.status_code}")
