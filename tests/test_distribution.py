"""The schema stays distributable by account, as docs/SCALING.md says: every table carries the
account it belongs to or is listed there as reference data (or as kept on the coordinator), an
account column that may be NULL is listed with what would change, and so is every unique key
that does not contain the account. The lists are read from docs/SCALING.md, so the page and the
schema cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

SCALING = Path(__file__).resolve().parent.parent / "docs" / "SCALING.md"

# Tables of the schema: every ordinary or partitioned table outside PostgreSQL's own schemas
# (partitions count as their parent).
TABLES = """
    SELECT n.nspname || '.' || c.relname AS name,
           a.attnum IS NOT NULL AS has_account, coalesce(NOT a.attnotnull, false) AS nullable
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attribute a
           ON a.attrelid = c.oid AND a.attname = 'account_uuid' AND NOT a.attisdropped
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg\\_%'
    ORDER BY 1
"""

# Unique indexes (primary keys, unique constraints and plain unique indexes) of tables that
# carry the account, whose keys do not contain it.
KEYS_WITHOUT_ACCOUNT = """
    SELECT i.relname
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class c ON c.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'account_uuid' AND NOT a.attisdropped
    WHERE x.indisunique AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND NOT a.attnum = ANY (x.indkey::smallint[])
    ORDER BY 1
"""


def section(title: str) -> str:
    """The text of docs/SCALING.md's section headed ``title``, up to the next heading."""
    text = SCALING.read_text()
    found = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", text + "\n#", re.S | re.M)
    assert found, f"docs/SCALING.md has no section {title!r}"
    return found.group(1)


def first_column(title: str) -> set[str]:
    """The backticked names in the first column of a section's table."""
    rows = [line for line in section(title).splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_every_table_carries_its_account_or_is_reference_data(
    db: psycopg.Connection[Any],
) -> None:
    tables = {name: (has, nullable) for name, has, nullable in db.execute(TABLES).fetchall()}
    reference = first_column("Reference tables") | first_column("Kept on the coordinator")
    unlisted = sorted(
        name
        for name, (has, _) in tables.items()
        if not has and name not in reference and name != "tollgate.accounts"
    )
    assert not unlisted, f"tables without account_uuid, not listed as reference data: {unlisted}"
    wrong = sorted(name for name in reference if tables.get(name, (True, False))[0])
    assert not wrong, f"listed as reference data but missing or carrying an account: {wrong}"


def test_an_account_that_may_be_null_is_listed_with_what_would_change(
    db: psycopg.Connection[Any],
) -> None:
    nullable = {name for name, has, null in db.execute(TABLES).fetchall() if has and null}
    listed = first_column("Account columns that may be NULL")
    assert not nullable - listed, f"nullable account columns not listed: {nullable - listed}"
    assert not listed - nullable, f"listed, and not nullable: {listed - nullable}"


def test_every_unique_key_without_the_account_is_listed(db: psycopg.Connection[Any]) -> None:
    keys = {row[0] for row in db.execute(KEYS_WITHOUT_ACCOUNT).fetchall()}
    listed = first_column("Unique keys without the account")
    missing, stale = sorted(keys - listed), sorted(listed - keys)
    assert not missing, f"unique keys docs/SCALING.md does not account for: {missing}"
    assert not stale, f"docs/SCALING.md lists keys the schema does not have: {stale}"
