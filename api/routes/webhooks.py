"""POST /v1/webhooks/stripe: shape checks, then one function call that verifies the
Stripe-Signature (in PostgreSQL) and stores the event; the applier (api/applier.py) applies
it."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Request

from api import body, observability
from api.deps import Pool
from api.models import ErrorBody, WebhookReceipt
from db import queries
from db.errors import DomainError

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

MAX_EVENT_BYTES = 1 << 20

# The body as Stripe sends it (read raw: the signature covers its bytes).
EVENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "a Stripe event, as Stripe sends it"},
                "example": {
                    "id": "evt_1QxYz2AbCdEf",
                    "object": "event",
                    "type": "payment_intent.succeeded",
                    "created": 1768473002,
                    "data": {
                        "object": {
                            "id": "pi_3QxYz2AbCdEf",
                            "object": "payment_intent",
                            "amount": 1250,
                            "amount_received": 1250,
                            "currency": "usd",
                            "status": "succeeded",
                        }
                    },
                },
            }
        },
    }
}


@router.post(
    "/stripe",
    response_model=WebhookReceipt,
    summary="Receive a Stripe event",
    responses={400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    openapi_extra=EVENT_BODY,
)
async def stripe_webhook(
    request: Request,
    pool: Pool,
    stripe_signature: Annotated[
        str | None,
        Header(
            alias="Stripe-Signature",
            description="Stripe's signature of the body: `t=<unix time>,v1=<HMAC-SHA256>`",
            examples=[
                "t=1768473002,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
            ],
        ),
    ] = None,
) -> WebhookReceipt:
    """Store a Stripe event once; it is applied right after, by the applier. Any 2xx tells
    Stripe to stop retrying: it is sent once the event is stored (committed). 503 (database
    down) makes Stripe retry later, and a replay is answered "duplicate".

    `outcome`: `received` (stored; the payment moves within moments: GET the payment, whose
    `events_received` counts its events not applied yet), `duplicate` (stored before, nothing
    written; `payment_id` and `payment_status` once it was applied) or `ignored` (a type
    Tollgate does not act on). Whether an event moves its payment (or is stale, early or
    rejected) is decided when it is applied, by the same rules as always.

    The signature is the database's to verify (api.ingest_stripe_webhook_v1, with the secrets
    `tollgate webhook-secret add` registered): a missing, wrong or stale one is 400
    invalid_signature and writes nothing. Here only the shape: size, UTF-8, a JSON object
    (which also keeps JSON nested too deep for PostgreSQL's parser away from it)."""
    payload = await body.read_capped(request, MAX_EVENT_BYTES, "the event")
    try:
        text = payload.decode("utf-8")
        if not isinstance(json.loads(text), dict):
            raise ValueError("not an object")
    except (ValueError, RecursionError) as exc:
        raise DomainError("invalid", "malformed_json", "the event is not a JSON object") from exc
    async with pool.connection() as conn:
        outcome = await queries.ingest_stripe_webhook(
            conn, payload=text, signature=stripe_signature
        )
    observability.note_webhook(outcome.outcome, outcome.event_id)
    return WebhookReceipt.model_validate(outcome, from_attributes=True)
