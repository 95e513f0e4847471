"""API keys: generation and hashing. Only the SHA-256 of a key ever reaches the database."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import Connection

from db import queries

PREFIX = "tg_"
PREFIX_LENGTH = 11  # "tg_" and 8 characters: enough to tell keys apart, useless to guess one


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class NewKey:
    key: str
    key_id: UUID
    account_id: UUID


def create(
    conn: Connection[Any], *, account: str, is_admin: bool = False, label: str | None = None
) -> NewKey:
    """Create a key for ``account`` (created if new). The key itself is returned only here."""
    key = PREFIX + secrets.token_urlsafe(32)
    created = queries.create_api_key(
        conn,
        account=account,
        key_hash=hash_key(key),
        key_prefix=key[:PREFIX_LENGTH],
        is_admin=is_admin,
        label=label,
    )
    return NewKey(key=key, key_id=created.key_id, account_id=created.account_id)
