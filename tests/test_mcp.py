"""The MCP tools, through the official SDK's client over streamable HTTP, against the running
app: the same keys, the same rules, refusals as structured tool errors."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import httpx
import httpx2
import psycopg
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import Api, Emulator
from tests.helpers import event, row_counts, sign, stripe_client, wait_applied

TOOLS = {
    "authorize",
    "create_payment",
    "payment_status",
    "record_usage",
    "get_balance",
    "list_transactions",
    "capture_hold",
    "release_hold",
}


# MCP's hints per tool: (read-only, destructive, idempotent, open world). Destructive: it spends
# credits for good; idempotent: the same call again does nothing more (create_payment by its
# idempotency_key, record_usage by event ids, a capture of the same amount, a release);
# open world: it reaches Stripe.
ANNOTATIONS = {
    "authorize": (False, False, False, False),
    "create_payment": (False, False, True, True),
    "payment_status": (True, False, True, False),
    "record_usage": (False, True, True, False),
    "get_balance": (True, False, True, False),
    "list_transactions": (True, False, True, False),
    "capture_hold": (False, True, True, False),
    "release_hold": (False, False, True, False),
}


def with_mcp(api: Api, key: str | None, work: Callable[[Client], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=30) as http,
            Client(streamable_http_client(f"{api.url}/mcp", http_client=http)) as client,
        ):
            return await work(client)

    return asyncio.run(run())


def test_tools_are_listed_typed_and_documented(api: Api, new_key: Any) -> None:
    async def work(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in with_mcp(api, new_key("agent_a"), work)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 30, tool.name
        assert tool.input_schema["type"] == "object", tool.name
    assert "action" in tools["authorize"].input_schema["required"]
    assert {"currency", "idempotency_key"} <= set(tools["create_payment"].input_schema["required"])
    # One rule for amounts, said where an agent reads it.
    for name in ("create_payment", "capture_hold"):
        assert {"amount", "amount_minor"} <= set(tools[name].input_schema["properties"]), name
    assert {"cost", "cost_minor"} <= set(tools["authorize"].input_schema["properties"])
    assert "amount_minor" in (tools["create_payment"].description or "")


def test_the_server_tells_its_version_and_every_tool_its_hints(api: Api, new_key: Any) -> None:
    async def work(client: Client) -> Any:
        return client.server_info, (await client.list_tools()).tools

    info, listed = with_mcp(api, new_key("agent_a"), work)
    assert info is not None
    assert (info.name, info.version) == ("tollgate", version("tollgate"))
    tools = {t.name: t for t in listed}
    assert set(tools) == set(ANNOTATIONS)
    for name, tool in tools.items():
        hints = tool.annotations
        assert hints is not None, name
        found = (
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
            hints.open_world_hint,
        )
        assert found == ANNOTATIONS[name], name
        assert tool.title and hints.title == tool.title, name
        # One paragraph, as written for a model: no wrapping or indentation of the source.
        description = tool.description or ""
        assert "\n" not in description and "  " not in description, name
    retry = tools["create_payment"].description or ""
    assert "retry it with the same idempotency_key and the same arguments" in retry
    assert "never a second one" in retry
    assert "keep it when retrying" in (tools["record_usage"].description or "")
    assert "call it once per run" in (tools["authorize"].description or "")


def test_without_a_valid_key_mcp_answers_401(api: Api, db: psycopg.Connection[Any]) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    for auth in ({}, {"Authorization": "Bearer tg_not_a_key"}, {"Authorization": "Basic x"}):
        answer = httpx.post(f"{api.url}/mcp", json=body, headers=headers | auth, timeout=10)
        assert answer.status_code == 401, (auth, answer.text)
        assert answer.json()["error"]["code"] in {
            "missing_api_key",
            "invalid_api_key",
            "malformed_authorization",
        }


def test_refused_authorize_carries_the_402_payment_instructions(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("agent_b")
    db.execute(
        "SELECT api.set_action_price_v1(%s, 'report.generate', 0.50, 'USD', NULL)",
        (new_key("ops", admin=True),),
    )
    with api.client(key) as http:
        over_http = http.post("/v1/authorize", json={"action": "report.generate"})
    assert over_http.status_code == 402

    async def work(client: Client) -> Any:
        return await client.call_tool("authorize", {"action": "report.generate"})

    result = with_mcp(api, key, work)
    assert result.is_error
    body = result.structured_content
    assert body["status"] == 402 and body["error"]["code"] == "payment_required"
    http_body = over_http.json()
    # Each names its own request (the MCP call's X-Request-Id, the HTTP request's).
    assert body["error"].pop("request_id") and http_body["error"].pop("request_id")
    assert {k: body[k] for k in http_body if k != "accepts"} == {
        k: v for k, v in http_body.items() if k != "accepts"
    }
    assert [(o["scheme"], o["request"]["body"]) for o in body["accepts"]] == [
        (o["scheme"], o["request"]["body"]) for o in http_body["accepts"]
    ], "the same payment options (their idempotency keys are fresh each time)"


def test_pay_then_authorize_use_and_read_back(
    api: Api, new_key: Any, db: psycopg.Connection[Any], emulator: Emulator
) -> None:
    """create_payment -> confirm at Stripe (emulator) -> payment_status -> authorize allowed;
    record_usage, get_balance, list_transactions, capture_hold through MCP too."""
    ops = new_key("ops", admin=True)
    key = new_key("agent_c")
    db.execute("SELECT api.set_action_price_v1(%s, 'report.generate', 0.50, 'USD', NULL)", (ops,))
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )

    async def pay(client: Client) -> Any:
        args = {
            "amount": "10.00",
            "currency": "usd",
            "purpose": "credits",
            "payment_method": card.id,
            "idempotency_key": "mcp-credits-1",
        }
        first = await client.call_tool("create_payment", args)
        again = await client.call_tool("create_payment", args)
        return first, again

    first, again = with_mcp(api, key, pay)
    assert not first.is_error, first.content
    payment = first.structured_content
    assert payment["status"] == "requires_confirmation"
    assert (payment["amount"], payment["amount_minor"]) == ("10.00", 1000)
    assert again.structured_content["id"] == payment["id"], "idempotent, as over HTTP"

    # The webhook reaches the API (the emulator delivers it); wait for the credits.
    stripe.v1.payment_intents.confirm(payment["stripe_id"])

    async def settle_and_use(client: Client) -> dict[str, Any]:
        for _ in range(200):
            status = await client.call_tool("payment_status", {"payment_id": payment["id"]})
            if status.structured_content["status"] == "succeeded":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the emulator's webhook never arrived")
        balance = await client.call_tool("get_balance", {})
        allowed = await client.call_tool(
            "authorize", {"action": "report.generate", "agent_id": "a1"}
        )
        hold = allowed.structured_content["hold_id"]
        captured = await client.call_tool("capture_hold", {"hold_id": hold, "amount": "0.25"})
        usage = await client.call_tool(
            "record_usage",
            {
                "events": [
                    {
                        "id": "u-1",
                        "metric": "tokens",
                        "quantity": "1200",
                        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
                    },
                    {"id": "u-2", "metric": "tokens", "quantity": "lots", "occurred_at": "now"},
                ]
            },
        )
        listed = await client.call_tool("list_transactions", {"limit": 5})
        return {
            "status": status.structured_content,
            "balance": balance.structured_content,
            "allowed": allowed.structured_content,
            "captured": captured.structured_content,
            "usage": usage.structured_content,
            "listed": listed.structured_content,
        }

    seen = with_mcp(api, key, settle_and_use)
    assert seen["status"]["status"] == "succeeded"
    assert [(b["currency"], b["balance"]) for b in seen["balance"]["balances"]] == [
        ("USD", "10.00")
    ]
    assert seen["allowed"]["allowed"] is True and seen["allowed"]["via"] == "credits"
    assert seen["captured"]["status"] == "captured"
    assert [r["outcome"] for r in seen["usage"]["results"]] == ["accepted", "rejected"]
    assert [t["status"] for t in seen["listed"]["transactions"]] == ["settled"]
    with api.client(key) as http:
        balances = http.get("/v1/accounts/agent_c/balances").json()["balances"]
    assert [b["balance"] for b in balances] == ["9.75"], "the same ledger the REST API reads"


def test_bad_arguments_are_tool_errors_that_write_nothing(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    key = new_key("agent_d")
    new_key("ops", admin=True)
    before = row_counts(db)

    async def work(client: Client) -> list[Any]:
        calls = [
            ("create_payment", {"amount_minor": 12.5, "currency": "usd", "idempotency_key": "k1"}),
            ("create_payment", {"amount": 100, "currency": "usdollar", "idempotency_key": "k2"}),
            ("create_payment", {"amount": "-5", "currency": "usd", "idempotency_key": "k3"}),
            ("authorize", {"action": "report.generate", "cost": "1.001", "currency": "USD"}),
            ("payment_status", {"payment_id": "'; DROP TABLE x; --"}),
            ("payment_status", {"payment_id": "pi_nope"}),
            ("get_balance", {"account_id": "ops"}),  # exists, but not this key's
            ("list_transactions", {"limit": 0}),
            ("capture_hold", {"hold_id": "00000000-0000-0000-0000-000000000001"}),
            ("record_usage", {"events": []}),
        ]
        return [await client.call_tool(name, args) for name, args in calls]

    results = with_mcp(api, key, work)
    for result in results:
        assert result.is_error, result
    # Arguments outside a tool's input schema are refused by the SDK before Tollgate runs
    # (a text error); everything else is Tollgate's structured refusal.
    by_sdk = {0, 7, 9}  # amount_minor 12.5 is not an integer, limit 0, no events
    for n, result in enumerate(results):
        if n in by_sdk:
            assert result.structured_content is None and "validation error" in str(result.content)
        else:
            refusal = result.structured_content
            assert refusal is not None and 400 <= refusal["status"] < 500, (n, result)
    codes = [r.structured_content["error"]["code"] for r in results if r.structured_content]
    assert codes == [
        "invalid_request",  # usdollar: not a 3-letter code
        "invalid_amount",
        "invalid_amount",
        "invalid_request",
        "not_found",
        "not_found",
        "not_found",
    ]
    assert row_counts(db) == before


def test_a_webhook_signed_event_and_mcp_see_one_state(api: Api, new_key: Any) -> None:
    """payment_status reads what a webhook wrote, through the same function as HTTP."""
    key = new_key("agent_e")

    async def pay(client: Client) -> Any:
        return await client.call_tool(
            "create_payment", {"amount_minor": 700, "currency": "usd", "idempotency_key": "e-1"}
        )

    created = with_mcp(api, key, pay).structured_content
    payload = event("evt_mcp_1", created["stripe_id"], "succeeded")
    with api.client() as http:
        answer = http.post(
            "/v1/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": sign(payload, api.webhook_secret)},
        )
    assert answer.status_code == 200
    # The webhook stores the event; the applier applies it (api/applier.py).
    assert wait_applied(api.dsn, "evt_mcp_1") == {"evt_mcp_1": "applied"}

    async def status(client: Client) -> Any:
        return await client.call_tool("payment_status", {"payment_id": created["stripe_id"]})

    assert with_mcp(api, key, status).structured_content["status"] == "succeeded"
