"""Tollgate's Python client: ``Client`` (sync) and ``AsyncClient``, one typed method per route.

from tollgate import Client, PaymentRequired

with Client("http://127.0.0.1:8000", api_key="tg_...") as tollgate:
    try:
        hold = tollgate.authorize("report.generate")
    except PaymentRequired as refused:
        print(refused.required.accepts[0].request)

The answers' types, and the request shapes (``UsageEvent``), are in ``tollgate.models``. This
distribution (``tollgate-client``) needs only httpx and pydantic; it imports nothing of the
server.
"""

from tollgate import models
from tollgate._async_client import AsyncClient
from tollgate._core import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PaymentRequired,
    TollgateError,
    Unauthorized,
    Unavailable,
)
from tollgate._sync_client import Client

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "Forbidden",
    "NotFound",
    "PaymentRequired",
    "TollgateError",
    "Unauthorized",
    "Unavailable",
    "models",
]
