"""The FastAPI application. ``create_app`` is the factory uvicorn runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.routing import Route

from api import __version__, applier, body, docs, errors, mcp_tools, observability, reads
from api.config import Settings
from api.metrics import Metrics
from api.metrics import endpoint as metrics_endpoint
from api.metrics import multiprocess as metrics_multiprocess
from api.routes import (
    accounts,
    authorize,
    catalog,
    health,
    holds,
    payments,
    reconciliation,
    reviews,
    transactions,
    transfers,
    usage,
    webhooks,
)
from api.stripe_gateway import StripeGateway
from db.pool import create_pool


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are read from the environment at startup, not at import."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or Settings()  # type: ignore[call-arg]  # filled from the environment
        pool = create_pool(
            s.database_url,
            role=s.database_role,
            min_size=s.db_pool_min_size,
            max_size=s.db_pool_max_size,
            timeout=s.db_pool_timeout,
        )
        # Start even if the database is down: requests answer 503 until it is back.
        await pool.open(wait=False)
        gateway = StripeGateway(
            s.stripe_api_key.get_secret_value(),
            api_base=s.stripe_api_base,
            timeout=s.stripe_timeout,
        )
        app.state.settings, app.state.pool, app.state.stripe = s, pool, gateway
        # GET routes on a hot standby, when one is named (api/reads.py).
        if s.database_read_url:
            standby = create_pool(
                s.database_read_url,
                role=s.database_role,
                min_size=s.db_pool_min_size,
                max_size=s.db_pool_max_size,
                timeout=s.db_pool_timeout,
            )
            await standby.open(wait=False)
            app.state.reads = reads.Reads(pool, standby)
        # With several workers, each writes its pool's statistics for any worker's scrape.
        syncing = None
        if metrics_multiprocess():
            syncing = asyncio.create_task(metrics.sync_pool_forever(pool))
        # Stored Stripe events are applied by an applier in each worker, on connections of its
        # own (the pool serves requests only); it LISTENs on DATABASE_LISTEN_URL when set.
        applying = None
        if s.apply_stripe_events:
            applying = await applier.run_in_background(
                applier.ApplierSettings(
                    dsn=s.database_url,
                    role=s.database_role,
                    batch=s.apply_batch,
                    listen_dsn=s.database_listen_url,
                )
            )
        # What startup built (modules, routes, models) stays for the process's life: kept out
        # of the collector's generations, every collection under load scans less.
        gc.freeze()
        try:
            async with mcp_manager.run():
                yield
        finally:
            if applying is not None:
                await applier.stop_background(*applying)
            if syncing is not None:
                syncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncing
            metrics.process_ended()
            if app.state.reads is not None:
                await app.state.reads.close()
                app.state.reads = None
            await pool.close()
            await gateway.close()

    app = FastAPI(
        title="Tollgate",
        summary="Payments backend for AI agents; PostgreSQL enforces every rule.",
        description=docs.DESCRIPTION,
        version=__version__,
        openapi_tags=docs.TAGS,
        # /docs is served by api.docs, with Swagger UI's files from Tollgate (not a CDN).
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(body.require_json_body)],
    )
    errors.install(app)
    docs.install(app)
    # A request id, the request log and the latency histograms, for every request.
    app.state.metrics = metrics
    app.state.reads = None
    app.add_middleware(reads.Headers, state=app.state)
    app.add_middleware(observability.RequestLog, metrics=metrics)
    for module in (
        health,
        authorize,
        holds,
        usage,
        payments,
        transactions,
        transfers,
        accounts,
        catalog,
        reviews,
        reconciliation,
        webhooks,
    ):
        app.include_router(module.router)
    app.include_router(accounts.me_router)
    # MCP (streamable HTTP) at /mcp: the same keys, the same operations.
    mcp_endpoint, mcp_manager = mcp_tools.endpoint(mcp_tools.build(app.state), app.state)
    app.router.routes.append(
        Route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    )
    # Prometheus (api/metrics.py): not an API operation, so not in the OpenAPI schema.
    app.router.routes.append(
        Route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    )
    return app
