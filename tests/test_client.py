"""The Python client against a running Tollgate: typed answers, typed errors, PaymentRequired
with the instructions, and retries that are safe - through a real proxy that answers 503 or
loses answers after the work was done."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from tests.conftest import Api, Emulator
from tests.helpers import stripe_client, stripe_intents_with
from tests.proxy import Script, faulty_proxy
from tollgate import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    PaymentRequired,
    TollgateError,
    Unauthorized,
    Unavailable,
    _unasync,
    models,
)
from tollgate._core import Call, result


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    assert _unasync.TARGET.read_text() == _unasync.generate(), (
        "tollgate/_sync_client.py is stale: run python client/tollgate/_unasync.py"
    )


def test_typed_answers_and_typed_errors(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    ops_key = new_key("ops", admin=True)
    key = new_key("agent_1")
    with Client(api.url, ops_key) as ops, Client(api.url, key) as agent:
        me = agent.me()
        assert isinstance(me, models.Identity)
        assert (me.account_id, me.is_admin) == ("agent_1", False)

        price = ops.set_action_price("report.generate", "0.50", "USD")
        assert (price.price, price.currency) == ("0.50", "USD")

        with pytest.raises(PaymentRequired) as refused:
            agent.authorize("report.generate", agent_id="bot")
        required = refused.value.required
        assert refused.value.status == 402 and required is not None
        assert required.error.code == "payment_required"
        options = {o.scheme: o for o in required.accepts}
        assert set(options) == {"stripe.payment", "credits"}
        assert options["stripe.payment"].request.body["purpose"] == "report.generate"
        assert options["stripe.payment"].amount_minor == 50

        with pytest.raises(Forbidden):
            agent.set_action_price("report.generate", "0.01", "USD")
        with pytest.raises(NotFound):
            agent.get_payment("pi_does_not_exist")
        with pytest.raises(BadRequest) as bad:
            agent.create_payment("-0.05", "usd", purpose="credits")
        assert bad.value.status == 422

        created = ops.create_transaction("order-1", "12.50", "USD", account_id="agent_1")
        assert isinstance(created.id, UUID) and created.amount_minor == 1250
        with pytest.raises(Conflict):
            ops.create_transaction("order-1", "12.50", "USD", account_id="agent_1")
        settled = ops.settle_transaction("order-1", account_id="agent_1")
        assert settled.status == "settled"
        balances = agent.balances()
        assert [(b.currency, b.balance) for b in balances.balances] == [("USD", "12.50")]

    with Client(api.url, "tg_not_a_key") as stranger, pytest.raises(Unauthorized):
        stranger.me()


def test_credits_bought_through_the_client_pay_for_a_held_run(
    api: Api, new_key: Any, emulator: Emulator
) -> None:
    ops_key, key = new_key("ops", admin=True), new_key("agent_2")
    stripe = stripe_client(emulator.base)
    card = stripe.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    with Client(api.url, ops_key) as ops, Client(api.url, key) as agent:
        ops.set_action_price("report.generate", "0.50", "USD")
        bought = agent.create_payment(
            "2.00", "usd", purpose="credits", payment_method=card.id, idempotency_key="buy-1"
        )
        again = agent.create_payment(
            "2.00", "usd", purpose="credits", payment_method=card.id, idempotency_key="buy-1"
        )
        assert again.id == bought.id, "the same Idempotency-Key replays the payment"
        stripe.v1.payment_intents.confirm(bought.stripe_id)
        deadline = time.monotonic() + 20
        while agent.get_payment(bought.id).status != "succeeded":
            assert time.monotonic() < deadline, "the emulator's webhook never arrived"
            time.sleep(0.1)

        allowed = agent.authorize("report.generate")
        assert allowed.via == "credits" and allowed.hold_id is not None
        assert agent.get_hold(allowed.hold_id).status == "active"
        captured = agent.capture_hold(allowed.hold_id, amount="0.30")
        assert (captured.status, captured.captured_amount) == ("captured", "0.30")
        assert agent.balances().balances[0].balance == "1.70"
    assert len(stripe_intents_with(stripe, str(bought.id))) == 1


def test_retries_a_503_and_honours_retry_after(api: Api, new_key: Any) -> None:
    key = new_key("agent_3")
    script = Script(faults=["503", "503"], retry_after="1")
    started = time.monotonic()
    with faulty_proxy(api.url, script) as url, Client(url, key, backoff=0.01) as agent:
        assert agent.me().account_id == "agent_3"
    assert [fault for _, _, fault in script.seen] == ["503", "503", "pass"]
    assert time.monotonic() - started >= 2.0, "it waited the second each 503 asked for"


def test_a_503_that_may_have_done_the_work_is_not_resent_unless_harmless(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """database_connection_lost: the statement may have committed. Settling is not resent;
    a read is."""
    ops_key = new_key("ops", admin=True)
    new_key("agent_8")
    with Client(api.url, ops_key) as ops:
        ops.create_transaction("order-8", "1.00", "USD", account_id="agent_8")
    script = Script(faults=["503", "503"], unavailable_code="database_connection_lost")
    with faulty_proxy(api.url, script) as url, Client(url, ops_key, backoff=0.01) as ops:
        with pytest.raises(Unavailable) as lost:
            ops.settle_transaction("order-8", account_id="agent_8")
        assert lost.value.code == "database_connection_lost" and len(script.seen) == 1
        assert ops.get_transaction("order-8", account_id="agent_8").status == "pending"
        assert [fault for _, _, fault in script.seen] == ["503", "503", "pass"]


def test_answers_that_are_not_tollgate_s_become_tollgate_errors() -> None:
    call: Call[models.Identity] = Call("GET", "/v1/me", models.Identity)
    html = httpx.Response(200, content=b"<html>captive portal</html>")
    with pytest.raises(TollgateError) as odd:
        result(call, html)
    assert odd.value.code == "invalid_response"
    declined = httpx.Response(402, json={"error": {"code": "card_declined", "message": "no"}})
    with pytest.raises(PaymentRequired) as refused:
        result(call, declined)
    assert refused.value.code == "card_declined" and refused.value.required is None


def test_gives_up_after_its_retries_with_unavailable(api: Api, new_key: Any) -> None:
    script = Script(always="503")
    with faulty_proxy(api.url, script) as url, Client(url, new_key("a"), retries=2, backoff=0) as c:
        with pytest.raises(Unavailable) as gave_up:
            c.me()
    assert gave_up.value.code == "database_unavailable"
    assert len(script.seen) == 3, "the first try and two retries"


def test_a_payment_whose_answer_is_lost_is_created_once(
    api: Api, new_key: Any, db: psycopg.Connection[Any], emulator: Emulator
) -> None:
    """The proxy forwards the POST, Tollgate creates the payment, the answer never arrives. The
    client sends it again with the Idempotency-Key it generated, and gets the same payment."""
    key = new_key("agent_4")
    script = Script(faults=["drop"])
    with faulty_proxy(api.url, script) as url, Client(url, key, backoff=0.01) as agent:
        payment = agent.create_payment(None, "usd", amount_minor=300, purpose="credits")
    posts = [(method, path) for method, path, _ in script.seen]
    assert posts == [("POST", "/v1/payments")] * 2, "sent twice: the answer was lost once"
    rows = db.execute(
        "SELECT p.id FROM tollgate.payment_intents p"
        " JOIN tollgate.accounts a ON a.id = p.account_uuid WHERE a.external_id = 'agent_4'"
    ).fetchall()
    assert rows == [(payment.id,)]
    assert len(stripe_intents_with(stripe_client(emulator.base), str(payment.id))) == 1


def test_a_transfer_whose_answer_is_lost_moves_money_once(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    ops_key = new_key("ops", admin=True)
    new_key("agent_5")
    with Client(api.url, ops_key) as ops:
        ops.set_wallet("ops", "USD", allow_negative=True)
    script = Script(faults=["drop"])
    with faulty_proxy(api.url, script) as url, Client(url, ops_key, backoff=0.01) as ops:
        ops.transfer("agent_5", "4.25", "USD")
        assert len(script.seen) == 2
        assert [b.balance for b in ops.balances("agent_5").balances] == ["4.25"]


def test_a_lost_answer_to_a_non_idempotent_request_is_not_resent(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    """Settling twice is not harmless to assume: the client reports the lost answer instead
    of guessing, and the caller can read the transaction to see what happened."""
    ops_key = new_key("ops", admin=True)
    new_key("agent_6")
    with Client(api.url, ops_key) as ops:
        ops.create_transaction("order-9", "1.00", "USD", account_id="agent_6")
    script = Script(faults=["drop"])
    with faulty_proxy(api.url, script) as url, Client(url, ops_key, backoff=0.01) as ops:
        with pytest.raises(Unavailable):
            ops.settle_transaction("order-9", account_id="agent_6")
        assert len(script.seen) == 1
        assert ops.get_transaction("order-9", account_id="agent_6").status == "settled"


def test_unreachable_tollgate_is_unavailable_after_retries() -> None:
    with Client("http://127.0.0.1:9", "tg_x", retries=1, backoff=0) as nowhere:
        with pytest.raises(Unavailable) as failed:
            nowhere.me()
    assert failed.value.code == "unreachable"


def test_the_async_client(api: Api, new_key: Any) -> None:
    ops_key, key = new_key("ops", admin=True), new_key("agent_7")

    async def run() -> None:
        async with AsyncClient(api.url, ops_key) as ops, AsyncClient(api.url, key) as agent:
            await ops.set_metric_price("tokens", "0.001", "USD")
            for n in range(5):
                await ops.create_transaction(f"t-{n}", "1", "USD", account_id="agent_7")
            seen = [t.reference async for t in agent.iter_transactions(page_size=2)]
            assert seen == [f"t-{n}" for n in reversed(range(5))], "newest first, every page"

            await ops.settle_transaction("t-0", account_id="agent_7")
            now = dt.datetime.now(dt.UTC)
            events = [
                models.UsageEvent(
                    id=f"u-{n}", metric="tokens", quantity=Decimal(10), occurred_at=now
                )
                for n in range(3)
            ]
            first = await agent.record_usage(events)
            again = await agent.record_usage(events)
            assert (first.accepted, again.duplicates) == (3, 3), first.results
            with pytest.raises(PaymentRequired):
                await agent.authorize("report.generate", cost="5.00", currency="USD")
            assert (await agent.balances()).balances[0].balance == "0.97", "3 x 10 x 0.001"
            assert not (await agent.can_continue("agent_7")).allowed

    asyncio.run(run())
