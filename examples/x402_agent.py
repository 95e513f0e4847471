"""An x402 agent buying a seller's paid route with the x402 SDK's own HTTP client.

    make dev                                         # Tollgate, its database, a Stripe emulator
    .venv/bin/python examples/paid_api.py &          # the seller's API on :8100
    .venv/bin/python examples/x402_agent.py          # this agent

Nothing here is Tollgate's but the scheme registration (``tollgate.x402``, the client's ``x402``
extra): the SDK meets the 402, reads ``PAYMENT-REQUIRED``, has the card scheme build the payload
(a Stripe PaymentMethod made at the emulator, card 4242...), retries with ``PAYMENT-SIGNATURE``
and gets the report with ``PAYMENT-RESPONSE``. Then the agent resends the very same payment:
the report it paid for was delivered (its hold captured), so the payment is used: 409
``payment_already_used``, no second report, nothing more charged. Last, a call
that fails on the seller's side (``?fail=true``): its hold is released, nothing is charged.
``--credits`` pays from the credits of the account of TOLLGATE_API_KEY instead of a card.

Configuration: PAID_API_URL (default http://127.0.0.1:8100), STRIPE_API_BASE and STRIPE_API_KEY
(the card's PSP), TOLLGATE_API_KEY (``--credits``), from the environment or ``dev.env``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

import httpx
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.http.constants import PAYMENT_SIGNATURE_HEADER
from x402.http.utils import decode_payment_response_header, encode_payment_signature_header
from x402.schemas import PaymentPayload

from tollgate.x402 import CardScheme, CreditsScheme


def step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def load_env(path: Path) -> None:
    """``export NAME=value`` lines from ``path``, for the variables not already set."""
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.removeprefix("export ").partition("=")
            if sep and not line.startswith("#"):
                words = shlex.split(value)
                os.environ.setdefault(name.strip(), words[0] if words else "")


def test_card() -> str:
    """A Stripe PaymentMethod for the test card 4242..., made at the emulator (the customer's
    side: what Stripe.js does in a browser)."""
    base = os.environ.get("STRIPE_API_BASE")
    if not base:
        return "pm_card_visa"
    made = httpx.post(
        f"{base}/v1/payment_methods",
        auth=(os.environ.get("STRIPE_API_KEY", "sk_test_tollgate_dev"), ""),
        data={
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        },
        timeout=30,
    )
    made.raise_for_status()
    return str(made.json()["id"])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".tollgate/dev.env"))
    parser.add_argument("--credits", action="store_true", help="pay from Tollgate credits")
    args = parser.parse_args()
    load_env(args.env_file)
    url = os.environ.get("PAID_API_URL", "http://127.0.0.1:8100")

    payer = x402Client()
    if args.credits:
        payer.register("tollgate:*", CreditsScheme(api_key=os.environ["TOLLGATE_API_KEY"]))
    else:
        payer.register("card:*", CardScheme(payment_method=test_card))
    sent: list[PaymentPayload] = []
    payer.on_after_payment_creation(lambda ctx: sent.append(ctx.payment_payload))

    async with x402HttpxClient(payer, timeout=60) as http:
        step(f"buying a report from {url}/report with x402")
        bought = await http.post(f"{url}/report", params={"topic": "q3"})
        if bought.status_code != 200:
            step(f"not bought: {bought.status_code} {bought.text}")
            return 1
        settled = decode_payment_response_header(bought.headers["PAYMENT-RESPONSE"])
        step(
            f"paid {settled.amount} on {settled.network} ({settled.transaction}) and got report "
            f"{bought.json()['report']}"
        )

    # The same PAYMENT-SIGNATURE again, once the report was delivered (its hold captured): one
    # payment is one run, so it is refused and nothing more is charged. (Resent while the hold
    # is still active, after a lost response, it would replay the settlement.)
    header = encode_payment_signature_header(sent[-1])
    async with httpx.AsyncClient(timeout=60) as plain:
        again = await plain.post(
            f"{url}/report", params={"topic": "q3"}, headers={PAYMENT_SIGNATURE_HEADER: header}
        )
    code = again.json().get("error", {}).get("code") if again.status_code != 200 else None
    step(f"resent the same payment after the report: {again.status_code} {code}")
    if again.status_code != 409 or code != "payment_already_used":
        return 1

    async with x402HttpxClient(payer, timeout=60) as http:
        failed = await http.post(f"{url}/report", params={"fail": "true"})
        step(f"a call that fails at the seller: {failed.status_code}, its hold released")
    return 0 if failed.status_code == 500 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
