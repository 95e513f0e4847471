"""An agent performing a paid action against Tollgate, end to end.

    make dev                          # in one terminal: Tollgate, its database, a Stripe emulator
    .venv/bin/python examples/paid_action.py

Steps: ask to run ``report.generate`` -> 402 with the ways to pay -> buy the credits it names
(a PaymentIntent confirmed at the Stripe emulator, as a customer's browser would) -> wait until
Stripe's webhook has turned the payment into credits -> ask again: allowed, with a hold on the
credits -> do the work -> record usage -> capture the hold.

Configuration comes from the environment (TOLLGATE_URL, TOLLGATE_API_KEY, STRIPE_API_BASE,
STRIPE_API_KEY), else from the ``dev.env`` that ``tollgate dev`` writes in its data folder.

It needs only the client (``pip install ./client``: httpx and pydantic); the customer's side at
Stripe is two plain HTTP calls to Stripe's API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shlex
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx

from tollgate import Client, PaymentRequired, TollgateError
from tollgate.models import Authorization, UsageEvent

ACTION = "report.generate"
AGENT = "example-agent"


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def load_env(path: Path) -> None:
    """``export NAME=value`` (or ``NAME=value``) lines from ``path``, for the variables not
    already set."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep and not line.startswith("#"):
            words = shlex.split(value)
            os.environ.setdefault(name.strip(), words[0] if words else "")


def card(stripe: httpx.Client, emulated: bool) -> str:
    """A test card: created at the emulator, or Stripe's own test PaymentMethod."""
    if not emulated:
        return "pm_card_visa"
    method = stripe.post(
        "/v1/payment_methods",
        data={
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        },
    )
    method.raise_for_status()
    return str(method.json()["id"])


def run_the_action() -> tuple[str, int]:
    """The expensive thing the agent was asked to do; here, a small stand-in."""
    text = "quarterly revenue report " * 200
    return hashlib.sha256(text.encode()).hexdigest()[:16], len(text.split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".tollgate/dev.env"))
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for credits")
    args = parser.parse_args()
    load_env(args.env_file)
    if not os.environ.get("TOLLGATE_API_KEY"):
        print(f"no TOLLGATE_API_KEY, no {args.env_file}: run `make dev` first", file=sys.stderr)
        return 2
    stripe_base = os.environ.get("STRIPE_API_BASE") or None
    stripe_key = os.environ.get("STRIPE_API_KEY", "")
    customer = httpx.Client(
        base_url=stripe_base or "https://api.stripe.com", auth=(stripe_key, ""), timeout=30
    )

    with customer, Client() as tollgate:
        me = tollgate.me()
        step(f"agent for account {me.account_id} wants to run {ACTION}")
        allowed: Authorization | None = None
        try:
            allowed = tollgate.authorize(ACTION, agent_id=AGENT)
            step(f"already entitled (via {allowed.via}); buying nothing")
        except PaymentRequired as refused:
            accepts = refused.required.accepts if refused.required else []
            step(f"402 {refused.code}: {refused.message}")
            for option in accepts:
                step(f"  can pay: {option.scheme}: {option.description}")
            credits = next((o for o in accepts if o.scheme == "credits"), None)
            if credits is None:  # e.g. a spend cap: paying more would not help
                step("nothing to buy that would allow it; stopping")
                return 1

            body = credits.request.body
            payment = tollgate.create_payment(
                body["amount"],
                body["currency"],
                purpose=body["purpose"],
                payment_method=card(customer, emulated=stripe_base is not None),
                idempotency_key=credits.request.headers["Idempotency-Key"],
            )
            step(
                f"created payment {payment.id} ({payment.stripe_id}): "
                f"{credits.amount} {credits.currency} of credits, status {payment.status}"
            )
            customer.post(f"/v1/payment_intents/{payment.stripe_id}/confirm").raise_for_status()
            step("confirmed at Stripe; waiting for the webhook to credit the account")
            deadline = time.monotonic() + args.wait
            while (status := tollgate.get_payment(payment.id).status) != "succeeded":
                if time.monotonic() > deadline:
                    step(f"gave up waiting: payment still {status}")
                    return 1
                time.sleep(0.2)
            main_balance = tollgate.balances().balances[0]
            step(f"payment succeeded; credits: {main_balance.balance} {main_balance.currency}")

        if allowed is None:
            allowed = tollgate.authorize(ACTION, agent_id=AGENT)
        step(
            f"authorized via {allowed.via}: hold {allowed.hold_id} until "
            f"{allowed.expires_at:%H:%M:%S}, {allowed.remaining} {allowed.currency} left"
            if allowed.hold_id
            else f"authorized via {allowed.via}"
        )
        digest, words = run_the_action()
        step(f"ran {ACTION}: report {digest} ({words} words)")

        receipt = tollgate.record_usage(
            [
                UsageEvent(
                    id=f"{ACTION}-{digest}-{time.time_ns()}",
                    agent_id=AGENT,
                    metric="report.words",
                    quantity=Decimal(words),
                    occurred_at=dt.datetime.now(dt.UTC),
                )
            ]
        )
        step(f"usage recorded: {receipt.accepted} accepted, {receipt.rejected} rejected")
        if allowed.hold_id:
            hold = tollgate.capture_hold(allowed.hold_id)
            step(f"hold captured: {hold.captured_amount} {hold.currency} charged")
        final = tollgate.balances().balances
        step("done; balances: " + ", ".join(f"{b.balance} {b.currency}" for b in final))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TollgateError as exc:
        print(f"Tollgate refused: {exc}", file=sys.stderr)
        sys.exit(1)
