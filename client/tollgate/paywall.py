"""A paywall for a seller's own API: ASGI middleware that charges callers through Tollgate.

    from fastapi import FastAPI
    from tollgate.paywall import Paywall

    app = FastAPI()
    app.add_middleware(Paywall, routes={"POST /report": "report.generate"})

For each request to a priced route the paywall asks Tollgate's ``POST /v1/authorize`` whether
the caller may run the action: a subscription, a paid run, or a hold on credits at the action's
price. Allowed: the route runs; when it answers below 400 the hold is captured, otherwise (an
error status or an exception) it is released, so a failed call costs nothing (a card paid
through x402 for it is refunded: that needs the paywall's key to be an admin key). Refused: the
caller gets Tollgate's 402 as it is, its JSON body and x402's ``PAYMENT-REQUIRED`` header (whose
``resource`` names this API's URL).

Who pays: a caller with a Tollgate key sends it as ``Authorization: Bearer <key>``; an x402
agent retries with ``PAYMENT-SIGNATURE`` (a card, or credits naming its key), which the paywall
hands to Tollgate, and the answer's ``PAYMENT-RESPONSE`` goes back with the route's response.
Anything else is authorized with the paywall's own key (``api_key``, else ``TOLLGATE_API_KEY``)
on that key's own account: give it a key of an account that never holds credits, so that a
caller who pays nothing gets the 402. A card payment from a caller without a key buys credits
on another account, ``card_account`` (else ``TOLLGATE_CARD_ACCOUNT``; the paywall's key must be
an admin key): each such payment is held there for its own call, and no unpaid request is
ever authorized on it, so nobody is served from credits another caller's card bought. Without
``card_account``, such card payments are refused (402 ``card_account_not_configured``), and
the 402s keyless callers get offer no card; card payments of callers with a key, and credits
payloads, are booked on the payer's own account.
Tollgate's URL is ``tollgate_url``, else ``TOLLGATE_URL``.

It needs only httpx (this distribution's dependency); any ASGI framework can use it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PAYMENT_SIGNATURE = "payment-signature"
PAYMENT_REQUIRED = "payment-required"
PAYMENT_RESPONSE = "payment-response"

NO_CARD_ACCOUNT = {
    "error": {
        "code": "card_account_not_configured",
        "message": "this API takes no card payment from a caller without a Tollgate key: its "
        "paywall has no card account (Paywall(card_account=...) or TOLLGATE_CARD_ACCOUNT, an "
        "account its admin key acts for that holds nothing else); pay with credits "
        "(tollgate-credits) or send a Tollgate key",
    }
}

log = logging.getLogger("tollgate.paywall")


class Paywall:
    """ASGI middleware: ``routes`` maps ``"METHOD /path"`` (or ``"/path"``, any method) to the
    Tollgate action a call of it runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[str, str],
        tollgate_url: str | None = None,
        api_key: str | None = None,
        card_account: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.app = app
        self.routes = dict(routes)
        self.base_url = (tollgate_url or os.environ.get("TOLLGATE_URL", "")).rstrip("/")
        key = api_key or os.environ.get("TOLLGATE_API_KEY")
        if not self.base_url or not key:
            raise ValueError(
                "Paywall needs tollgate_url and api_key (or TOLLGATE_URL and _API_KEY)"
            )
        self.api_key: str = key
        # Where keyless callers' card payments are booked: never the paywall key's own account.
        self.card_account = card_account or os.environ.get("TOLLGATE_CARD_ACCOUNT") or None
        # A card payment waits (at most the requirement's maxTimeoutSeconds) for Stripe's webhook.
        self.timeout = timeout
        self.transport = transport

    def action_for(self, scope: Scope) -> str | None:
        path = scope.get("path", "")
        return self.routes.get(f"{scope.get('method', 'GET')} {path}") or self.routes.get(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        action = self.action_for(scope) if scope["type"] == "http" else None
        if action is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        caller_key = _bearer(headers.get("authorization"))
        signature = headers.get(PAYMENT_SIGNATURE)
        key = caller_key or self.api_key
        sent = {"Authorization": f"Bearer {key}"}
        ask: dict[str, str] = {"action": action}
        if signature:
            sent["PAYMENT-SIGNATURE"] = signature
            if caller_key is None and self.card_account is not None:
                # A card payment is booked on the card account, which no unpaid request is
                # authorized on (a credits payload is held on its own key's account whatever
                # this says; anything else Tollgate refuses).
                ask["account_id"] = self.card_account
            elif caller_key is None and _credits_key(signature) is None:
                await _json(send, 402, NO_CARD_ACCOUNT)
                return
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, transport=self.transport
        ) as tollgate:
            try:
                answer = await tollgate.post("/v1/authorize", json=ask, headers=sent)
            except httpx.HTTPError as exc:
                log.warning("Tollgate unreachable: %s", exc)
                await _json(
                    send, 503, {"error": {"code": "tollgate_unavailable", "message": str(exc)}}
                )
                return
            if answer.status_code != 200:
                extra: list[tuple[bytes, bytes]] = []
                if answer.status_code == 402 and PAYMENT_REQUIRED in answer.headers:
                    required = _with_resource(
                        answer.headers[PAYMENT_REQUIRED],
                        _url(scope, headers),
                        card=caller_key is not None or self.card_account is not None,
                    )
                    extra.append((b"payment-required", required.encode("latin-1")))
                if "retry-after" in answer.headers:  # nothing was done: the caller may retry
                    extra.append((b"retry-after", answer.headers["retry-after"].encode("latin-1")))
                await _raw(send, answer.status_code, answer.content, extra)
                return
            allowed = answer.json()
            hold_id = allowed.get("hold_id")
            # The hold belongs to whoever paid: the caller's key, the key an x402 credits
            # payload names, or (a card paid through x402, or a subscription) the paywall's.
            owner = caller_key or _credits_key(signature) or self.api_key
            settled = answer.headers.get(PAYMENT_RESPONSE)
            status: list[int] = []
            finished: list[str] = []

            async def finish(to: str) -> None:
                if hold_id and not finished:
                    finished.append(to)
                    await _finish(tollgate, owner, hold_id, to)
                    if to == "release" and settled:
                        await _void_card(tollgate, self.api_key, settled)

            async def send_with_payment(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status.append(message["status"])
                    if settled:
                        message = dict(message)
                        message["headers"] = [
                            *message.get("headers", []),
                            (b"payment-response", settled.encode("latin-1")),
                            (b"access-control-expose-headers", b"PAYMENT-RESPONSE"),
                        ]
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    # Captured (or released) before the caller has the whole answer.
                    await finish("capture" if status and status[0] < 400 else "release")
                await send(message)

            try:
                await self.app(scope, receive, send_with_payment)
            except BaseException:
                await finish("release")
                raise
            await finish("capture" if status and status[0] < 400 else "release")


async def _finish(tollgate: httpx.AsyncClient, key: str, hold_id: str, to: str) -> None:
    """Capture (the whole hold: the action's price) or release; a retried capture of a captured
    hold answers it again and spends nothing more."""
    try:
        done = await tollgate.post(
            f"/v1/holds/{hold_id}/{to}", headers={"Authorization": f"Bearer {key}"}
        )
    except httpx.HTTPError as exc:  # the hold lapses by itself (hold_seconds) if never captured
        log.warning("could not %s hold %s: %s", to, hold_id, exc)
        return
    if done.status_code != 200:
        log.warning("could not %s hold %s: %s %s", to, hold_id, done.status_code, done.text)


async def _void_card(tollgate: httpx.AsyncClient, key: str, settled: str) -> None:
    """A failed call paid by card through x402 keeps nothing: the payment that bought its
    credits is refunded (once: the Idempotency-Key is the PaymentIntent's), and Stripe's refund
    events take the credits back. Refunds need an admin key: the paywall's."""
    answer = _decode(settled)
    if not isinstance(answer, dict) or not str(answer.get("network", "")).startswith("card:"):
        return
    intent = answer.get("transaction")
    if not isinstance(intent, str) or not intent.startswith("pi_"):
        return  # held from credits already on the account: nothing was charged for it
    try:
        done = await tollgate.post(
            f"/v1/payments/{intent}/refunds",
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"x402-void-{intent}"},
        )
    except httpx.HTTPError as exc:
        log.warning("could not refund %s: %s", intent, exc)
        return
    if done.status_code not in (200, 201):
        log.warning("could not refund %s: %s %s", intent, done.status_code, done.text)


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


def _decode(value: str) -> Any:
    if len(value) > 8192:  # Tollgate refuses a longer PAYMENT-SIGNATURE: nothing to read
        return None
    try:
        return json.loads(base64.b64decode(value.encode("latin-1"), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None


def _credits_key(signature: str | None) -> str | None:
    """The Tollgate key a ``tollgate-credits`` payment payload names, if that is what was sent."""
    payload = _decode(signature) if signature else None
    if not isinstance(payload, dict) or not isinstance(payload.get("payload"), dict):
        return None
    accepted = payload.get("accepted")
    if not isinstance(accepted, dict) or (accepted.get("scheme"), accepted.get("network")) != (
        "tollgate-credits",
        "tollgate:credits",
    ):
        return None
    key = payload["payload"].get("apiKey")
    return key if isinstance(key, str) and key else None


def _with_resource(header: str, url: str, *, card: bool = True) -> str:
    """Tollgate's PAYMENT-REQUIRED with ``resource.url`` naming this API's URL, not Tollgate's;
    without its card entry when ``card`` is false (a keyless caller, and no card account)."""
    required = _decode(header)
    if not isinstance(required, dict):
        return header
    resource = required.get("resource")
    required["resource"] = {**(resource if isinstance(resource, dict) else {}), "url": url}
    accepts = required.get("accepts")
    if not card and isinstance(accepts, list):
        required["accepts"] = [
            a for a in accepts if not (isinstance(a, dict) and a.get("scheme") == "auth-capture")
        ]
    return base64.b64encode(json.dumps(required, separators=(",", ":")).encode()).decode()


def _url(scope: Scope, headers: Mapping[str, str]) -> str:
    host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("localhost", 80)))
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}" + (
        f"?{query}" if query else ""
    )


async def _raw(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), *extra]
    exposed = [name.upper() for name, _ in extra if name.startswith(b"payment-")]
    if exposed:
        headers.append((b"access-control-expose-headers", b", ".join(exposed)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, body: Any) -> None:
    await _raw(send, status, json.dumps(body).encode(), [])
