"""Every named rule of the schema has a code and a message of its own, and no error body names
the schema's tables or constraints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from db.errors import CONSTRAINTS, INVARIANTS
from tests.conftest import Api

SQL_DIR = Path(__file__).resolve().parent.parent / "db" / "sql"
# A rule raised with a standard SQLSTATE (a TG one is mapped by its SQLSTATE) and a name.
RAISED = re.compile(r"ERRCODE\s*=\s*'(?!TG)(\w+)'\s*,\s*CONSTRAINT\s*=\s*'(\w+)'")


def schema_constraints(db: psycopg.Connection[Any]) -> set[str]:
    rows = db.execute(
        "SELECT c.conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname IN ('tollgate', 'api', 'reporting')"
        " AND c.contype <> 'n'"  # NOT NULL (a constraint row since PostgreSQL 18): no name to map
    ).fetchall()
    return {name for (name,) in rows}


def raised_constraints() -> set[str]:
    names = set()
    for path in SQL_DIR.glob("*.sql"):
        names |= {name for _, name in RAISED.findall(path.read_text(encoding="utf-8"))}
    return names


def test_every_constraint_of_the_schema_is_mapped(db: psycopg.Connection[Any]) -> None:
    found = schema_constraints(db)
    assert len(found) > 100, "the query finds the schema's constraints"
    unmapped = sorted(found - set(CONSTRAINTS) - INVARIANTS)
    assert unmapped == [], "map these in db/errors.py (CONSTRAINTS or INVARIANTS)"
    # The database's own words for a broken constraint name the table: each gets a message.
    unworded = sorted(name for name in found & set(CONSTRAINTS) if CONSTRAINTS[name][2] is None)
    assert unworded == []


def test_every_rule_raised_by_name_is_mapped() -> None:
    found = raised_constraints()
    assert "stripe_minimum_charge" in found, "the scan finds the rules raised by name"
    unmapped = sorted(found - set(CONSTRAINTS) - INVARIANTS)
    assert unmapped == [], "map these in db/errors.py (CONSTRAINTS or INVARIANTS)"


def test_the_two_maps_do_not_overlap() -> None:
    assert set(CONSTRAINTS) & INVARIANTS == set()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        (
            "PUT",
            "/v1/accounts/ops/spend-caps",
            {"period": "day", "currency": "ZZZ", "hard_limit": "1.00"},
            422,
            "unknown_currency",
        ),
        (
            "PUT",
            "/v1/actions/report.x",
            {"price": "1.00", "currency": "ZZZ"},
            422,
            "unknown_currency",
        ),
        (
            "PUT",
            "/v1/metrics/tokens",
            {"unit_price": "0.01", "currency": "ZZZ"},
            422,
            "unknown_currency",
        ),
        ("PUT", "/v1/risk-rules/ZZZ", {"max_amount": "1.00"}, 422, "unknown_currency"),
    ],
)
def test_refusals_name_no_table_or_constraint(
    api: Api, new_key: Any, method: str, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    with api.client(new_key("ops", admin=True)) as ops:
        r = ops.request(method, path, json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert 'relation "' not in r.text and "constraint" not in r.text
    assert "_fkey" not in r.text and "tollgate." not in r.text
