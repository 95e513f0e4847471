"""Tollgate as MCP tools, served by the same app at /mcp (streamable HTTP, stateless, JSON).

Each tool checks the shape of its arguments with the same models as the HTTP routes and calls
the same code (``api.operations`` or one stored function through ``db.queries``): no rule is
written twice. The caller's API key travels as ``Authorization: Bearer <key>`` on every HTTP
request, as for the REST API; a request without a valid key is answered 401 before MCP sees it.

A refusal is a tool error (``isError: true``) whose ``structuredContent`` is the body the HTTP
API would send: ``{"error": {"code", "message"}, "status": ...}``, and for ``authorize`` the
full 402 body with ``accepts``, the payment requests that would entitle the account, plus
x402's MCP transport data: ``"x402/error": {"code": 402, "message", "data": PaymentRequired}``
and ``_meta["x402/payment-required"]`` (docs/X402.md).

Every tool has a title, a description written for a model (one paragraph: what it does, what
to give, and how to retry it safely) and annotations (MCP's hints: read-only, destructive,
idempotent, open world); the server tells Tollgate's version.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar, cast
from uuid import UUID

import psycopg
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api import __version__, errors, operations, x402
from api.models import (
    AMOUNT_CODES,
    Authorization,
    AuthorizeRequest,
    Balances,
    CaptureRequest,
    HoldOut,
    Payment,
    PaymentCreate,
    PaymentCreated,
    PaymentRequired,
    TransactionPage,
    UsageReceipt,
)
from api.models import Transaction as TransactionOut
from db import queries
from db.errors import DomainError, translate

T = TypeVar("T")
log = logging.getLogger("tollgate.mcp")

INSTRUCTIONS = """Tollgate decides whether this agent may run a paid action, and takes payment.
Before an expensive action call `authorize` with the action's name. If it is refused with
code payment_required, its structured content lists `accepts`: the payments that would
entitle the account (one run of the action, or credits); make one with `create_payment`, have
it confirmed, check `payment_status`, then `authorize` again. A run paid from credits returns
a `hold_id`: call `capture_hold` with the actual cost when done (or `release_hold`).
Amounts, everywhere: `amount` (and `cost`) is a decimal in the currency's units ("12.50" is
12.50 USD; a string is safest, a JSON number is read exactly up to 15 significant digits);
`amount_minor` (and `cost_minor`) is an integer of minor units (1250 is 12.50 USD, 1250 JPY).
Give one of the two, never both. Every answer gives both: `amount` "12.50", `amount_minor` 1250.
Retrying is safe when done the same way: after an error or a timeout, call create_payment again
with the same idempotency_key and arguments (you get the first payment back, never a second
one), and record_usage with the same event ids (what was recorded answers duplicate)."""

# Decimals from a JSON number reach a tool as a float (the MCP SDK parses the JSON): a float
# holds any decimal of at most 15 significant digits exactly enough to give it back, so those
# are read back exactly; longer ones must come as strings.
_FLOAT_DIGITS = 15
McpAmount = str | int | float


def _exact(name: str, value: McpAmount | None) -> str | int | Decimal | None:
    """A tool's decimal argument as the HTTP API would read it, or a refusal."""
    if not isinstance(value, float):
        return value
    if not math.isfinite(value):
        raise _refusal(422, "invalid_amount", f"{name} must be a finite number")
    exact = Decimal(repr(value))
    if len(exact.as_tuple().digits) > _FLOAT_DIGITS:
        raise _refusal(
            422,
            "invalid_request",
            f"{name}: more than {_FLOAT_DIGITS} significant digits; send it as a string",
        )
    return exact


class ToolRefusal(Exception):
    """A refusal to hand back as a structured tool error (``meta``: the result's ``_meta``)."""

    def __init__(self, body: dict[str, Any], text: str, meta: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.body = body
        self.meta = meta


def _refusal(status: int, code: str, message: str) -> ToolRefusal:
    return ToolRefusal({"error": {"code": code, "message": message}, "status": status}, message)


def _domain(exc: DomainError) -> ToolRefusal:
    status = 400 if exc.code in errors.BAD_REQUEST_CODES else errors.STATUS[exc.kind]
    return _refusal(status, exc.code, exc.message)


def _invalid(exc: ValidationError) -> ToolRefusal:
    found = exc.errors(include_url=False)
    first = next((e for e in found if e["type"] in AMOUNT_CODES), found[0])
    code = first["type"] if first["type"] in AMOUNT_CODES else "invalid_request"
    field = ".".join(str(p) for p in first.get("loc", ())) or "arguments"
    return _refusal(422, code, f"{field}: {first.get('msg')}")


def _error_result(refusal: ToolRefusal) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(refusal.body))],
        structured_content=refusal.body,
        is_error=True,
        _meta=refusal.meta,
    )


class UsageIn(BaseModel):
    """One usage event, as POST /v1/usage takes it (checked by the same model there)."""

    id: str = Field(description="unique per account; a retried event is a duplicate")
    metric: str = Field(description="e.g. tokens")
    quantity: str = Field(description="a decimal, e.g. 1200")
    occurred_at: str = Field(description="ISO 8601 with a time zone")
    agent_id: str | None = None
    account_id: str | None = Field(default=None, description="admin keys only")


def _tool(
    title: str,
    description: str,
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
) -> dict[str, Any]:
    """A tool's title, description (one paragraph, however it is wrapped here) and annotations,
    as keyword arguments of ``MCPServer.tool``. Hints, per the MCP specification: read-only
    tools change nothing; a destructive one may change what is there rather than only add
    (here: it spends credits, for good); an idempotent one, called again with the same
    arguments, does nothing more; an open-world one reaches beyond Tollgate (Stripe)."""
    return {
        "title": title,
        "description": " ".join(description.split()),
        "annotations": ToolAnnotations(
            title=title,
            read_only_hint=read_only,
            destructive_hint=destructive,
            idempotent_hint=idempotent or read_only,
            open_world_hint=open_world,
        ),
    }


def build(app_state: Any) -> MCPServer:
    """The MCP server; tools reach the pool, Stripe and settings through ``app_state`` (the
    FastAPI app's state, filled in by its lifespan)."""
    server: MCPServer = MCPServer(
        "tollgate",
        title="Tollgate",
        version=__version__,
        instructions=INSTRUCTIONS,
        warn_on_duplicate_tools=True,
        log_level="WARNING",  # the SDK's own chatter; the app's log level governs the rest
    )

    async def call(ctx: Context, work: Callable[[str], Awaitable[T]]) -> T:
        """Run a tool's work with the caller's key; a refusal becomes an error result. (The SDK
        hands a returned CallToolResult through as it is, whatever the annotation: errors are
        not checked against the output schema.)"""
        try:
            return await work(_bearer(ctx.headers))
        except ToolRefusal as exc:
            refusal = exc
        except DomainError as exc:
            refusal = _domain(exc)
        except ValidationError as exc:
            refusal = _invalid(exc)
        except psycopg.Error as exc:
            translated = translate(exc)
            if isinstance(translated, DomainError):
                refusal = _domain(translated)
            else:
                log.exception("database error in an MCP tool", exc_info=exc)
                refusal = _refusal(500, "internal_error", "an unexpected database error occurred")
        except Exception as exc:
            log.exception("unhandled error in an MCP tool", exc_info=exc)
            refusal = _refusal(500, "internal_error", "an unexpected error occurred")
        return cast(T, _error_result(refusal))

    @server.tool(
        **_tool(
            "Authorize a paid action",
            """May the account run this paid action now? Allowed by a current subscription, an
            unused paid run of the action, or a hold on the account's credits: then it returns a
            hold_id; when the work is done call capture_hold with the actual cost (or
            release_hold). Refused with code payment_required and `accepts`, the payments that
            would entitle the account (make one with create_payment), or with code
            spend_cap_exceeded. Each allowed call places a new hold or uses a paid run, so call
            it once per run. Give `cost` or `cost_minor` (with `currency`), not both, only when
            this run costs other than the action's price.""",
        )
    )
    async def authorize(
        ctx: Context,
        action: Annotated[str, Field(description="the paid action, e.g. report.generate")],
        cost: Annotated[
            McpAmount | None,
            Field(description='this run\'s cost as a decimal ("0.50"), if not the price'),
        ] = None,
        cost_minor: Annotated[
            int | None,
            Field(description="or the cost in minor units (50 is 0.50 USD); needs currency"),
        ] = None,
        currency: Annotated[str | None, Field(description="ISO 4217 code of the cost")] = None,
        agent_id: Annotated[str | None, Field(description="which agent runs it")] = None,
        account_id: Annotated[str | None, Field(description="admin keys only")] = None,
        hold_seconds: Annotated[
            int | None, Field(description="how long a hold lasts: 1 to 86400 seconds, default 900")
        ] = None,
    ) -> Authorization:

        async def work(key: str) -> Authorization:
            ask = AuthorizeRequest.model_validate(
                {
                    "action": action,
                    "cost": _exact("cost", cost),
                    "cost_minor": cost_minor,
                    "currency": currency,
                    "agent_id": agent_id,
                    "account_id": account_id,
                    "hold_seconds": hold_seconds,
                }
            )
            answer = await operations.authorize(app_state.pool, api_key=key, ask=ask)
            if isinstance(answer, PaymentRequired):
                # x402's MCP transport next to Tollgate's body: its x402/error wrapper in the
                # structured content (and so in the text), PaymentRequired in _meta.
                required = x402.wire(x402.for_authorization(answer, x402.MCP_AUTHORIZE_URL))
                wrapper = {"code": 402, "message": answer.error.message, "data": required}
                body = answer.model_dump(mode="json") | {"status": 402, "x402/error": wrapper}
                raise ToolRefusal(body, json.dumps(body), {x402.MCP_REQUIRED_META: required})
            return answer

        return await call(ctx, work)

    @server.tool(
        **_tool(
            "Create a payment",
            """Create a Stripe PaymentIntent for the account, exactly once per idempotency_key.
            Use a new key for each new payment. If the call fails or times out, retry it with
            the same idempotency_key and the same arguments: you get the first payment back,
            never a second one (the same key with other arguments is refused with
            idempotency_key_reused). Give `amount` (a decimal, "12.50") or `amount_minor`
            (1250), not both. Confirm the payment with its client_secret; payment_status then
            shows it succeed.""",
            idempotent=True,
            open_world=True,
        )
    )
    async def create_payment(
        ctx: Context,
        currency: Annotated[str, Field(description="ISO 4217 code, e.g. usd")],
        idempotency_key: Annotated[
            str,
            Field(description="unique per payment (e.g. a UUID); the same one when retrying it"),
        ],
        amount: Annotated[
            McpAmount | None,
            Field(description='a decimal in the currency\'s units: "12.50" is 12.50 USD'),
        ] = None,
        amount_minor: Annotated[
            int | None, Field(description="or whole minor units: 1250 is 12.50 USD")
        ] = None,
        purpose: Annotated[
            str | None, Field(description="the action it pays for, or credits")
        ] = None,
        payment_method: Annotated[str | None, Field(description="a Stripe pm_... id")] = None,
        description: str | None = None,
        account_id: Annotated[str | None, Field(description="admin keys only")] = None,
    ) -> PaymentCreated:

        async def work(key: str) -> PaymentCreated:
            given = {"amount": _exact("amount", amount), "amount_minor": amount_minor}
            ask = PaymentCreate.model_validate(
                {k: v for k, v in given.items() if v is not None}
                | {
                    "currency": currency,
                    "purpose": purpose,
                    "description": description,
                    "payment_method": payment_method,
                    "account_id": account_id,
                }
            )
            if not 1 <= len(idempotency_key) <= 255:
                raise _refusal(422, "invalid_idempotency_key", "1 to 255 characters")
            settings = app_state.settings
            paid = await operations.create_payment(
                app_state.pool,
                app_state.stripe,
                api_key=key,
                ask=ask,
                idempotency_key=idempotency_key,
                wait=settings.stripe_timeout + 2,
            )
            return paid.payment

        return await call(ctx, work)

    @server.tool(
        **_tool(
            "Payment status",
            """A payment by Tollgate's id or Stripe's (pi_...), with its status as Stripe's
            webhooks reported it: succeeded once Stripe says so. Changes nothing.""",
            read_only=True,
        )
    )
    async def payment_status(
        ctx: Context,
        payment_id: Annotated[str, Field(description="Tollgate's payment id or Stripe's pi_...")],
    ) -> Payment:

        async def work(key: str) -> Payment:
            if not payment_id.replace("_", "").replace("-", "").isalnum() or len(payment_id) > 255:
                raise _refusal(422, "invalid_request", "payment_id: a uuid or a pi_... id")
            return await operations.get_payment(app_state.pool, api_key=key, ref=payment_id)

        return await call(ctx, work)

    @server.tool(
        **_tool(
            "Record usage",
            """Record metered usage events (up to 1000); each is answered accepted, duplicate or
            rejected with a reason, and priced metrics are paid from credits with them. Give
            each event an id unique for the account, and keep it when retrying: an event
            already recorded answers duplicate and is not charged again.""",
            destructive=True,
            idempotent=True,
        )
    )
    async def record_usage(
        ctx: Context, events: Annotated[list[UsageIn], Field(min_length=1, max_length=1000)]
    ) -> UsageReceipt:

        async def work(key: str) -> UsageReceipt:
            raw = [e.model_dump(exclude_none=True) for e in events]
            return await operations.record_usage(app_state.pool, api_key=key, events=raw)

        return await call(ctx, work)

    @server.tool(
        **_tool(
            "Get balances",
            """The account's balances, one per currency: `main` is its credits (what active
            holds reserve is still in it until captured), `debt` what it owes after a refund of
            credits it had spent. Changes nothing.""",
            read_only=True,
        )
    )
    async def get_balance(
        ctx: Context,
        account_id: Annotated[str | None, Field(description="default: the key's own")] = None,
    ) -> Balances:

        async def work(key: str) -> Balances:
            return await operations.balances(app_state.pool, api_key=key, account=account_id)

        return await call(ctx, work)

    @server.tool(
        **_tool(
            "List transactions",
            """The account's transactions (money expected or received: credit top-ups among
            them), newest first, `limit` at a time; pass next_before as `before` for the next
            page. Changes nothing.""",
            read_only=True,
        )
    )
    async def list_transactions(
        ctx: Context,
        account_id: Annotated[str | None, Field(description="default: the key's own")] = None,
        status: Literal["pending", "settled", "failed", "reversed"] | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 20,
        before: Annotated[
            UUID | None, Field(description="next_before of the previous page")
        ] = None,
    ) -> TransactionPage:

        async def work(key: str) -> TransactionPage:
            async with app_state.pool.connection() as conn:
                found = await queries.list_transactions(
                    conn, api_key=key, account=account_id, status=status, limit=limit, before=before
                )
            return TransactionPage(
                transactions=[
                    TransactionOut.model_validate(t, from_attributes=True) for t in found
                ],
                next_before=found[-1].id if len(found) == limit else None,
            )

        return await call(ctx, work)

    @server.tool(
        **_tool(
            "Capture a hold",
            """Spend from a hold that authorize placed on credits: the actual cost, and the rest
            of the hold is freed. Give `amount` or `amount_minor` (not both), or neither to take
            the whole hold. Retrying with the same amount returns the captured hold and spends
            nothing more.""",
            destructive=True,
            idempotent=True,
        )
    )
    async def capture_hold(
        ctx: Context,
        hold_id: UUID,
        amount: Annotated[
            McpAmount | None,
            Field(description='the actual cost as a decimal ("0.30"); default: all of it'),
        ] = None,
        amount_minor: Annotated[
            int | None, Field(description="or in minor units of the hold's currency (30)")
        ] = None,
    ) -> HoldOut:

        async def work(key: str) -> HoldOut:
            given = {"amount": _exact("amount", amount), "amount_minor": amount_minor}
            ask = CaptureRequest.model_validate({k: v for k, v in given.items() if v is not None})
            return await operations.hold(
                app_state.pool, api_key=key, hold_id=hold_id, to="capture", ask=ask
            )

        return await call(ctx, work)

    @server.tool(
        **_tool(
            "Release a hold",
            """Cancel a hold that authorize placed, when the work was not done: nothing is
            spent and the credits are free again. Releasing it again returns it as it is.""",
            idempotent=True,
        )
    )
    async def release_hold(ctx: Context, hold_id: UUID) -> HoldOut:

        async def work(key: str) -> HoldOut:
            return await operations.hold(app_state.pool, api_key=key, hold_id=hold_id, to="release")

        return await call(ctx, work)

    return server


def _bearer(headers: Any) -> str:
    value = (headers or {}).get("authorization", "") if headers is not None else ""
    scheme, _, key = str(value).partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _refusal(401, "missing_api_key", "send the key as Authorization: Bearer <key>")
    return key.strip()


class KeyedEndpoint:
    """The MCP endpoint behind the same key check as the REST API: no valid key, 401."""

    def __init__(self, app: ASGIApp, app_state: Any) -> None:
        self._app = app
        self._state = app_state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        try:
            key = _bearer(Headers(scope=scope))
            if len(key) > 200:
                raise _refusal(
                    401, "malformed_authorization", "expected Authorization: Bearer <key>"
                )
            async with self._state.pool.connection() as conn:
                await queries.whoami(conn, api_key=key)
        except ToolRefusal as exc:
            response = errors.error_response(
                exc.body["status"],
                exc.body["error"]["code"],
                exc.body["error"]["message"],
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        except DomainError as exc:
            await errors.domain_error_response(exc)(scope, receive, send)
            return
        except psycopg.Error:  # PoolTimeout included
            response = errors.error_response(
                503,
                "database_unavailable",
                "the database is unavailable; retry",
                headers={"Retry-After": errors.RETRY_AFTER_SECONDS},
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)


def endpoint(
    server: MCPServer, app_state: Any
) -> tuple[KeyedEndpoint, StreamableHTTPSessionManager]:
    """The ASGI endpoint for /mcp and the session manager whose ``run()`` the app's lifespan
    must enter. Stateless and JSON: any worker answers any request, nothing is kept between
    them. Requests are authenticated by key, so DNS-rebinding protection (for servers trusting
    their network position) is not needed."""
    server.streamable_http_app(  # builds the session manager; its Starlette app is not used
        json_response=True,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager
    return KeyedEndpoint(StreamableHTTPASGIApp(manager), app_state), manager
