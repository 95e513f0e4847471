"""The schema's layout keeps its promises: one file per concern, each table with its triggers,
every object defined once, functions short enough to read, pgTAP files named after what they
test. Read from the files themselves (db/schema.py), so no database is needed."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from db.schema import SQL_DIR, SchemaFile, parse, schema_files

PGTAP_DIR = Path(__file__).parent / "sql"

_TABLE = re.compile(r"^CREATE TABLE (tollgate\.\w+)", re.MULTILINE)
_TRIGGER = re.compile(
    r"^CREATE (?:OR REPLACE )?(?:CONSTRAINT )?TRIGGER (\w+)\s.*?\bON (tollgate\.\w+)",
    re.MULTILINE | re.DOTALL,
)
_FUNCTION = re.compile(
    r"^CREATE (?:OR REPLACE )?(?:FUNCTION|PROCEDURE) ([\w.]+)\((.*?)\)\s*(?:RETURNS|$)",
    re.MULTILINE | re.DOTALL,
)
_BODY = re.compile(
    r"^CREATE (?:OR REPLACE )?(?:FUNCTION|PROCEDURE) ([\w.]+)\(.*?^AS (\$\w*\$)\n(.*?)^\2",
    re.MULTILINE | re.DOTALL,
)

# Longest a stored function's body may be, in lines. Longer ones are split into steps with
# names of their own, so each reads on one screen.
MAX_FUNCTION_LINES = 80


def files() -> list[SchemaFile]:
    found = schema_files()
    assert found, f"no schema files in {SQL_DIR}"
    return found


def test_every_file_is_named_for_its_concern_and_parses() -> None:
    for f in files():
        assert re.fullmatch(r"\d\d-[a-z]+(-[a-z]+)*\.sql", f.path.name), f.path.name
        assert f.tables or f.functions or f.triggers, f"{f.path.name} has no section"


def test_a_misplaced_section_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "99-bad.sql"
    bad.write_text("-- ===== Triggers: x =====\nSELECT 1;\n-- ===== Tables: y =====\nSELECT 2;\n")
    try:
        parse(bad)
    except ValueError as exc:
        assert "out of order" in str(exc)
    else:
        raise AssertionError("a Tables section after Triggers was accepted")


def test_tables_are_created_only_in_tables_sections_each_once() -> None:
    seen: Counter[str] = Counter()
    for f in files():
        seen.update(_TABLE.findall(f.tables))
        for section in (f.functions, f.triggers):
            assert not _TABLE.findall(section), f"{f.path.name}: a table outside Tables"
    assert seen, "no tables found"
    assert [t for t, n in seen.items() if n > 1] == []


def test_a_tables_triggers_live_in_the_tables_file() -> None:
    home = {t: f.path.name for f in files() for t in _TABLE.findall(f.tables)}
    misplaced = []
    for f in files():
        for name, table in _TRIGGER.findall(f.functions + f.tables):
            misplaced.append(f"{name} on {table}: in {f.path.name}, outside its Triggers section")
        for name, table in _TRIGGER.findall(f.triggers):
            if home.get(table) != f.path.name:
                misplaced.append(f"{name} on {table}: in {f.path.name}, not {home.get(table)}")
    assert misplaced == []


def test_every_function_is_defined_once() -> None:
    seen: Counter[str] = Counter()
    for f in files():
        for name, args in _FUNCTION.findall(f.tables + "\n" + f.functions):
            seen[f"{name}({' '.join(args.split())})"] += 1
    assert seen, "no functions found"
    assert [sig for sig, n in seen.items() if n > 1] == []


def test_no_stored_function_is_longer_than_a_screen() -> None:
    long = []
    for f in files():
        for name, _, body in _BODY.findall(f.functions):
            lines = body.count("\n")
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{f.path.name}: {name} has {lines} lines")
    assert long == []


def test_pgtap_files_carry_the_name_of_the_file_they_test() -> None:
    stems = {f.path.stem for f in files()}
    pgtap = sorted(PGTAP_DIR.glob("*.sql"))
    assert pgtap
    unnamed = [
        p.name for p in pgtap if not any(p.stem == s or p.stem.startswith(s + "-") for s in stems)
    ]
    assert unnamed == []
