"""Every named rule of the schema has a code and a message of its own, and no error body names
the schema's tables or constraints.

The schema's SQL is read wherever it lives (every ``.sql`` file under ``db/`` and
``migrations/``), so these tests follow the files when they move. Each ``RAISE`` of an error
either gives a SQLSTATE of class TG that ``RULES`` maps, or a standard SQLSTATE with a
``CONSTRAINT`` that ``CONSTRAINTS`` or ``INVARIANTS`` maps, or is caught by an exception
handler of a block around it (which raises a mapped error in its place). Every TG
SQLSTATE of ``RULES`` is raised somewhere. That the codes of the map are in README's error table
is tests/test_doc_maps.py's part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from api.config import Settings
from db.errors import CONSTRAINTS, INVARIANTS, RULES, DomainError, translate
from tests.conftest import Api, Emulator, ServerThread

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = sorted([*ROOT.glob("db/**/*.sql"), *ROOT.glob("migrations/*.sql")])

# An error-level RAISE: not a bare re-raise (`RAISE;`), not a lower level.
_RAISE = re.compile(r"\bRAISE\b(?!\s*;)(?!\s+(?:DEBUG|LOG|INFO|NOTICE|WARNING)\b)", re.I)
_ERRCODE = re.compile(r"\bERRCODE\s*=\s*'(\w+)'|\bRAISE\s+SQLSTATE\s+'(\w+)'", re.I)
_CONSTRAINT = re.compile(r"\bCONSTRAINT\s*=\s*'(\w+)'", re.I)
# ERRCODE from a variable: an error caught and raised again with its own SQLSTATE and rule
# (tollgate.refuse_batch_transfer names the transfer of a batch), mapped where first raised.
_PASSED_ON = re.compile(r"\bERRCODE\s*=\s*p_state\b", re.I)
# What nests in a PL/pgSQL body: blocks (BEGIN ... END) and CASE ... END; END IF and END LOOP
# close nothing counted; an exception handler; the end of the body.
_STRUCTURE = re.compile(
    r"\b(?P<open>BEGIN|(?<!END )CASE)\b|\bEND\b(?!\s+(?:IF|LOOP)\b)(?:\s+CASE\b)?"
    r"|\b(?P<handler>EXCEPTION\s+WHEN)\b|(?P<body_end>\$\w*\$)",
    re.I,
)


@dataclass(frozen=True)
class Raise:
    where: str  # path:line
    errcode: str | None
    constraint: str | None
    caught: bool  # a handler of a block around it catches it


def _without_comments(text: str) -> str:
    """The SQL with its ``--`` comments blanked (a ``--`` inside a string literal is kept)."""
    lines = []
    for line in text.split("\n"):
        quoted = False
        for i, char in enumerate(line):
            if char == "'":
                quoted = not quoted
            elif line.startswith("--", i) and not quoted:
                line = line[:i]
                break
        lines.append(line)
    return "\n".join(lines)


def _blank_strings(text: str) -> str:
    """The SQL with the insides of its string literals blanked (positions kept)."""
    return re.sub(r"'[^']*'", lambda m: "'" + " " * (len(m.group()) - 2) + "'", text)


def _caught(structure: str, end: int) -> bool:
    """Whether an exception handler of a block enclosing position ``end`` follows it before
    the function body ends (blocks opened after ``end`` do not count)."""
    depth = 0
    for match in _STRUCTURE.finditer(structure, end):
        if match.group("body_end"):
            return False
        if match.group("handler"):
            if depth == 0:
                return True
        elif match.group("open"):
            depth += 1
        else:
            depth = max(depth - 1, 0)  # a block closing: the next enclosing one is still open
    return False


def _statement_end(text: str, start: int) -> int:
    """Where the statement starting at ``start`` ends: its first ``;`` outside a string."""
    quoted = False
    for i in range(start, len(text)):
        if text[i] == "'":
            quoted = not quoted
        elif text[i] == ";" and not quoted:
            return i
    return len(text)


def raises() -> list[Raise]:
    found = []
    for path in SCHEMA_SQL:
        text = _without_comments(path.read_text(encoding="utf-8"))
        structure = _blank_strings(text)
        for match in _RAISE.finditer(text):
            end = _statement_end(text, match.start())
            statement = text[match.start() : end]
            errcode = next((a or b for a, b in _ERRCODE.findall(statement)), None)
            constraint = next(iter(_CONSTRAINT.findall(statement)), None)
            caught = _caught(structure, end) or bool(_PASSED_ON.search(statement))
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            found.append(Raise(where, errcode, constraint, caught))
    return found


def raised_constraints() -> set[str]:
    """The rules raised by name with a standard SQLSTATE (a TG one is mapped by its SQLSTATE)."""
    return {
        r.constraint
        for r in raises()
        if r.constraint and r.errcode and not r.errcode.startswith("TG")
    }


def test_the_schema_sql_is_found() -> None:
    assert any(path.parent.name == "migrations" for path in SCHEMA_SQL)
    assert len(raises()) > 100, "the scan finds the schema's RAISE statements"


def test_every_constraint_of_the_schema_is_mapped(db: psycopg.Connection[Any]) -> None:
    found = schema_constraints(db)
    assert len(found) > 100, "the query finds the schema's constraints"
    unmapped = sorted(found - set(CONSTRAINTS) - INVARIANTS)
    assert unmapped == [], "map these in db/errors.py (CONSTRAINTS or INVARIANTS)"
    # The database's own words for a broken constraint name the table: each gets a message.
    unworded = sorted(name for name in found & set(CONSTRAINTS) if CONSTRAINTS[name][2] is None)
    assert unworded == []


def schema_constraints(db: psycopg.Connection[Any]) -> set[str]:
    rows = db.execute(
        "SELECT c.conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname IN ('tollgate', 'api', 'reporting')"
        " AND c.contype <> 'n'"  # NOT NULL (a constraint row since PostgreSQL 18): no name to map
    ).fetchall()
    return {name for (name,) in rows}


def test_every_rule_raised_by_name_is_mapped() -> None:
    found = raised_constraints()
    assert "stripe_minimum_charge" in found, "the scan finds the rules raised by name"
    unmapped = sorted(found - set(CONSTRAINTS) - INVARIANTS)
    assert unmapped == [], "map these in db/errors.py (CONSTRAINTS or INVARIANTS)"


def test_every_raised_error_is_one_the_map_knows() -> None:
    """A RAISE without a SQLSTATE raises P0001 and one with an unmapped TG code or no
    constraint falls through db/errors.py: the API would answer 500 for a refusal."""
    unmapped = []
    for r in raises():
        if r.caught:
            continue
        if r.errcode is None:
            unmapped.append(f"{r.where}: no ERRCODE")
        elif r.errcode.startswith("TG"):
            if r.errcode not in RULES:
                unmapped.append(f"{r.where}: {r.errcode} is not in RULES")
        elif r.constraint is None:
            unmapped.append(f"{r.where}: {r.errcode} without a CONSTRAINT naming the rule")
    assert unmapped == [], "give these a mapped SQLSTATE or CONSTRAINT (db/errors.py)"


def test_every_tollgate_sqlstate_is_raised() -> None:
    raised = {r.errcode for r in raises() if r.errcode and r.errcode.startswith("TG")}
    assert "TG031" in raised, "the scan finds the TG SQLSTATEs"
    assert sorted(set(RULES) - raised) == [], "RULES maps SQLSTATEs the schema never raises"
    assert sorted(raised - set(RULES)) == [], "map these SQLSTATEs in db/errors.py RULES"


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


def test_a_database_that_takes_no_writes_is_a_retryable_503(
    db_dsn: str, emulator: Emulator, new_key: Any
) -> None:
    """A server or session in read-only mode (a standby, default_transaction_read_only) refuses
    a write with SQLSTATE 25006: nothing was done, so 503 database_unavailable with Retry-After,
    as for a database that is down, not a 500."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as refused:
            conn.execute("CREATE TEMPORARY TABLE probe ()")
    translated = translate(refused.value)
    assert isinstance(translated, DomainError)
    assert (translated.kind, translated.code) == ("unavailable", "database_unavailable")

    key = new_key("read_only_writer")
    read_only = make_conninfo(db_dsn, options="-c default_transaction_read_only=on")
    # Directly in either test pass (startup options do not pass PgBouncer), as the API's role.
    settings = Settings(
        environment="test",
        database_url=read_only,
        stripe_api_key="sk_test_tollgate",
        stripe_api_base=emulator.base,
        apply_stripe_events=False,
    )
    with ServerThread(settings) as url:
        made = httpx.post(
            f"{url}/v1/transactions",
            headers={"Authorization": f"Bearer {key}"},
            json={"reference": "read-only-1", "amount_minor": 5, "currency": "USD"},
        )
    assert made.status_code == 503, made.text
    assert made.json()["error"]["code"] == "database_unavailable"
    assert made.headers["Retry-After"]
