"""POST /v1/reconciliation/lines (admin keys): external settlement lines, matched in SQL."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api import body, money
from api.deps import ApiKey, Pool
from api.models import ErrorBody, ReconciliationIn, ReconciliationLineOut, ReconciliationOut
from db import queries

router = APIRouter(prefix="/v1/reconciliation", tags=["reconciliation"])


@router.post(
    "/lines",
    status_code=201,
    response_model=ReconciliationOut,
    summary="Import settlement lines",
    responses={code: {"model": ErrorBody} for code in (400, 401, 403, 413, 422, 503)},
    openapi_extra=body.openapi_body(ReconciliationIn),
)
async def import_lines(request: Request, api_key: ApiKey, pool: Pool) -> ReconciliationOut:
    """Admin keys: lines of an external settlement report (a bank's, a processor's), up to
    10,000 per batch. Each line is matched to a transaction by reference (and account, when
    given), amount and currency. Settled transactions no line covers appear in
    reporting.reconciliation_mismatches as missing_theirs."""
    ask = await body.parse(request, ReconciliationIn, max_bytes=4 << 20)
    async with pool.connection() as conn:
        rows = await queries.import_reconciliation(
            conn,
            api_key=api_key,
            source=ask.source,
            lines=[
                queries.ReconciliationLineV1(
                    x.reference,
                    await money.as_decimal(conn, x.currency, x.amount, x.amount_minor),
                    x.currency.upper(),
                    x.date,
                    x.account_id,
                )
                for x in ask.lines
            ],
        )
    return ReconciliationOut(
        batch_id=rows[0].batch_id,
        matched=sum(r.status == "matched" for r in rows),
        mismatched=sum(r.status not in ("matched", "duplicate") for r in rows),
        duplicates=sum(r.status == "duplicate" for r in rows),
        lines=[ReconciliationLineOut.model_validate(r, from_attributes=True) for r in rows],
    )
