"""API keys: generated here, shown once; the database keeps only their SHA-256."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import Connection

from db import queries

PREFIX = "tg_"


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    key_id: UUID
    account_id: str


def create(
    conn: Connection[Any], *, account: str, is_admin: bool = False, label: str | None = None
) -> NewKey:
    """Create a key for ``account`` (created if new). The key itself is returned only here."""
    key = PREFIX + secrets.token_urlsafe(32)
    created = queries.create_api_key(
        conn, account=account, api_key=key, is_admin=is_admin, label=label
    )
    return NewKey(key=key, key_id=created.key_id, account_id=created.account_id)
