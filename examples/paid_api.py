"""A seller's own API with one paid route, charged to its callers through Tollgate.

    make dev                                   # Tollgate, its database, a Stripe emulator
    .venv/bin/python examples/paid_api.py      # this API on http://127.0.0.1:8100

``POST /report`` runs ``report.generate`` (0.50 USD with ``make dev``). A caller pays with its
Tollgate key (``Authorization: Bearer <key>``: a subscription, a paid run or a hold on its
credits), or as an x402 agent (``PAYMENT-SIGNATURE``: a card, or credits; see
examples/x402_agent.py). Without either it gets the 402 in every format: Tollgate's JSON body and
x402's ``PAYMENT-REQUIRED`` header. The hold is captured when the report is made and released
when it fails (``?fail=1`` makes it fail), so a failed call costs nothing.

Configuration: TOLLGATE_URL, TOLLGATE_ADMIN_KEY (the seller's key: unpaid callers are authorized
on its account, which must never hold credits) and TOLLGATE_CARD_ACCOUNT (where card payments of
callers without a key are booked: another account, that no unpaid call is authorized on), from
the environment or from the ``dev.env`` that ``tollgate dev`` writes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException

from tollgate.paywall import Paywall


def load_env(path: Path) -> None:
    """``export NAME=value`` lines from ``path``, for the variables not already set."""
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.removeprefix("export ").partition("=")
            if sep and not line.startswith("#"):
                words = shlex.split(value)
                os.environ.setdefault(name.strip(), words[0] if words else "")


def build() -> FastAPI:
    app = FastAPI(title="Reports, paid per call")
    app.add_middleware(
        Paywall,
        routes={"POST /report": "report.generate"},
        tollgate_url=os.environ["TOLLGATE_URL"],
        api_key=os.environ["TOLLGATE_ADMIN_KEY"],
        card_account=os.environ.get("TOLLGATE_CARD_ACCOUNT"),
    )

    @app.post("/report")
    async def report(topic: str = "revenue", fail: bool = False) -> dict[str, str]:
        if fail:
            raise HTTPException(500, "the report could not be made")
        return {"topic": topic, "report": hashlib.sha256(topic.encode()).hexdigest()[:16]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(".tollgate/dev.env"))
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    load_env(args.env_file)
    uvicorn.run(build(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
