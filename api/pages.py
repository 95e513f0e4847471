"""One way to page through every list: ``limit`` (1-500, 50 by default) rows at a time, and an
opaque ``cursor``, the ``next_cursor`` of the previous page, for the next; ``next_cursor`` is
null once a page comes back with fewer than ``limit`` rows (a full page may be followed by an
empty one).

A cursor is the list's name and the key of the last row of the page (an id, a name, a
currency), in URL-safe base64; the stored function of the list (``api.list_*_v1``) takes that
key and answers the rows after it, within what the key may see. A cursor that cannot be read,
or that another list gave, is refused here (422 ``invalid_cursor``); one whose row is not in the
list the key sees is refused by the database with the same code (constraint ``page_cursor``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar
from uuid import UUID

from fastapi import Query

from db.errors import DomainError

T = TypeVar("T")

DEFAULT_LIMIT = 50

Limit = Annotated[int, Query(ge=1, le=500, description="rows per page, 1 to 500")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=400,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="next_cursor of the previous page, as it was given; omit for the first page",
    ),
]


def encode(kind: str, key: object) -> str:
    """The cursor after the row whose key is ``key``, in the list ``kind``."""
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).rstrip(b"=").decode("ascii")


def _refuse() -> DomainError:
    return DomainError(
        "invalid",
        "invalid_cursor",
        "this cursor was not given by this list: pass the previous page's next_cursor as it is",
    )


def key(kind: str, cursor: str | None) -> str | None:
    """The key a cursor of the list ``kind`` carries (None: no cursor, the first page)."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _refuse() from None
    found, sep, rest = text.partition(":")
    if found != kind or not sep or not rest or "\x00" in rest:
        raise _refuse()
    return rest


def uuid_key(kind: str, cursor: str | None) -> UUID | None:
    text = key(kind, cursor)
    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise _refuse() from None


def int_key(kind: str, cursor: str | None) -> int | None:
    text = key(kind, cursor)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise _refuse()
    return int(text)


def next_cursor(
    kind: str, rows: Sequence[T], limit: int, key_of: Callable[[T], object]
) -> str | None:
    """The cursor of the page after ``rows``; None when the page was not full (the list ended)."""
    if not rows or len(rows) < limit:
        return None
    return encode(kind, key_of(rows[-1]))
