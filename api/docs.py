"""The API's description: /openapi.json, and /docs to browse it, served whole by Tollgate.

Swagger UI's files come from the package swagger-ui-bundle-v2 (Swagger UI's own dist files,
Apache-2.0), not from a CDN, so /docs works on a machine without internet access. The schema
declares the bearer key (``api.deps.BEARER``), so Swagger UI's Authorize button sends it.
ReDoc is not served: it loads its script and fonts from CDNs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from api.deps import IDEMPOTENT_ROUTES

ASSETS_PATH = "/docs/assets"
# The files the page loads, and nothing else of the bundle (its index.html points elsewhere).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
SWAGGER_UI = Path(str(swagger_ui_path))

DESCRIPTION = """\
Tollgate decides whether an AI agent may run a paid action, and takes the payment: Stripe
payments, prepaid credits with holds, metered usage, spend caps and a double-entry ledger, with
every rule enforced by PostgreSQL.

**Keys.** Every `/v1` route except the Stripe webhook takes `Authorization: Bearer <key>`
(the **Authorize** button). A key acts for its own account; an admin key for any account, named
with `account_id`. Another account's data answers 404, as if it did not exist.

**Amounts.** In a request, `amount` is a decimal in the currency's units (`"12.50"` is 12.50
USD; read exactly, never rounded) and `amount_minor` an integer of minor units (`1250`): give
one of them. Every answer gives both.

**Retries.** ROUTES take an `Idempotency-Key` header: retry with the same key and body, and
the first answer is replayed. Usage events are recorded once per id. Settling, capturing or
releasing the same way again answers the result again.

**Errors** are JSON, `{"error": {"code": "...", "message": "..."}}`, with a stable code (the
README's error table lists them all). A JSON body sent with another `Content-Type` is 415.

Agents may also call the main operations as MCP tools at `/mcp` (streamable HTTP), with the
same keys.
""".replace(
    "ROUTES",
    ", ".join(f"`{r}`" for r in IDEMPOTENT_ROUTES[:-1]) + f" and `{IDEMPOTENT_ROUTES[-1]}`",
)

TAGS = [
    {"name": "gating", "description": "May the agent run this action now? Holds on credits."},
    {"name": "payments", "description": "Stripe payments and refunds, once per key."},
    {"name": "accounts", "description": "Who a key is, balances, usage, caps, wallets."},
    {"name": "transactions", "description": "Money expected for an account, and its lifecycle."},
    {"name": "ledger", "description": "Transfers between accounts' balances."},
    {"name": "usage", "description": "Metered usage, priced per unit."},
    {"name": "catalog", "description": "Admin keys: prices of actions and metrics."},
    {"name": "risk", "description": "Admin keys: review thresholds, and deciding reviews."},
    {"name": "reconciliation", "description": "Admin keys: matching external settlements."},
    {"name": "webhooks", "description": "Stripe's events, verified in PostgreSQL."},
    {"name": "health", "description": "Liveness and readiness, without a key."},
]


# An example refusal per status, for the error responses that have none of their own.
_REFUSALS: dict[str, tuple[str, str]] = {
    "400": ("malformed_json", "the request body is not valid JSON"),
    "401": ("missing_api_key", "send the key as Authorization: Bearer <key>"),
    "402": ("spend_cap_exceeded", "this would pass the day's spend cap of 10.00 USD"),
    "403": ("admin_key_required", "this needs an admin key"),
    "404": ("not_found", "no such payment or account for this key"),
    "409": ("invalid_transition", "this change is not allowed from the current status"),
    "413": ("payload_too_large", "the body is larger than 65536 bytes"),
    "422": ("invalid_request", "currency: String should match pattern '^[A-Za-z]{3}$'"),
    "502": ("stripe_error", "Stripe answered with an error: ..."),
    "503": ("database_unavailable", "the database is unavailable"),
}
# Where a route's own refusal is a better example (by path prefix).
_ROUTE_REFUSALS: dict[str, dict[str, tuple[str, str]]] = {
    "/v1/payments": {
        "402": ("card_declined", "Your card was declined."),
        "409": ("idempotency_key_reused", "this Idempotency-Key was used with a different request"),
    },
    "/v1/transfers": {
        "409": ("insufficient_funds", "the balance of dev_account in USD is too low"),
    },
    "/v1/transactions": {
        "409": ("invalid_transition", "transaction order-1042 is failed: it cannot be settled"),
    },
    "/v1/holds": {
        "409": ("invalid_transition", "hold 9a8b7c6d-... was captured: it cannot be released"),
    },
    "/v1/reviews": {"409": ("immutable", "review 7e6d5c4b-... was decided already")},
    "/v1/accounts": {
        "409": ("overdraft_in_use", "the balance is below the new overdraft limit"),
    },
}
_ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def _error_examples(path: str, operation: dict[str, Any]) -> None:
    """Give each error response of an operation an example of its own status (not the one
    example of ErrorBody); FastAPI's 422 (HTTPValidationError, which Tollgate never answers)
    becomes Tollgate's."""
    for status, response in operation.get("responses", {}).items():
        media = response.get("content", {}).get("application/json", {})
        if status == "422" and "HTTPValidationError" in str(media.get("schema")):
            response["description"] = "the request's shape is wrong (every problem in details)"
            media["schema"] = _ERROR_BODY
        if media.get("schema") != _ERROR_BODY or "example" in media or status not in _REFUSALS:
            continue
        own = next((r for prefix, r in _ROUTE_REFUSALS.items() if path.startswith(prefix)), {})
        code, message = own.get(status, _REFUSALS[status])
        error: dict[str, Any] = {"code": code, "message": message}
        if status == "422":
            error["details"] = [
                {"field": "currency", "problem": "String should match pattern '^[A-Za-z]{3}$'"}
            ]
        media["example"] = {"error": error}


def _finish(schema: dict[str, Any]) -> None:
    """What FastAPI's schema cannot say by itself:

    - the ``$defs`` of request bodies (``api.body.openapi_body``, whose refs already point at
      ``#/components/schemas``) move into the components;
    - the Idempotency-Key header is required: optional in the routes' signatures only so that
      its absence answers 400 ``idempotency_key_required`` (``api.deps``), not a 422;
    - error responses get examples of their own status (``_error_examples``).
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for route, path in schema.get("paths", {}).items():
        for operation in path.values():
            _error_examples(route, operation)
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                for name, definition in media.get("schema", {}).pop("$defs", {}).items():
                    components.setdefault(name, definition)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "header" and parameter["name"] == "Idempotency-Key":
                    parameter["required"] = True
                    parameter["schema"] = {"type": "string", "pattern": "^[!-~]{1,255}$"}
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in str(schema["paths"]):
            components.pop(unused, None)


def install(app: FastAPI) -> None:
    """/docs and its files, and the OpenAPI schema finished by ``_finish``. The app is created
    with ``docs_url=None, redoc_url=None``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _finish(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="Tollgate API",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={
                "validatorUrl": None,  # Swagger's online validator: a request elsewhere
                "displayRequestDuration": True,
                "filter": True,
            },
        )

    for name, media_type in ASSETS.items():
        _serve(app, name, media_type)


def _serve(app: FastAPI, name: str, media_type: str) -> None:
    path = SWAGGER_UI / name

    async def asset() -> FileResponse:
        return FileResponse(
            path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"}
        )

    app.add_api_route(f"{ASSETS_PATH}/{name}", asset, methods=["GET"], include_in_schema=False)
