"""Tollgate's schema, one file per concern (``db/sql/NN-concern.sql``), in three sections.

Each file holds a concern's tables, the functions and views that work on them, and the
triggers on those tables, under three marker lines::

    -- ===== Tables: ...     created once, on a fresh database; a change to them is a migration
    -- ===== Functions ...   CREATE OR REPLACE: re-applied by every migrate
    -- ===== Triggers: ...   re-applied by every migrate, after every file's functions

A fresh database gets every file's Tables section (in file-name order), then every Functions
section, then every Triggers section, in one transaction, and the migrations are recorded as
applied without running (db/migrate.py). A database that exists gets its pending migrations
(which change tables and data only), then the same Functions and Triggers sections
(migrations/post-apply.py). tests/test_migrations.py proves the two end in the same schema.
Triggers come last so a table's triggers can sit with the table although their functions may
live in the file of another concern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"

SECTIONS = ("Tables", "Functions", "Triggers")
_MARKER = re.compile(r"^-- =+ (\w+)\b.*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class SchemaFile:
    path: Path
    tables: str
    functions: str
    triggers: str


def parse(path: Path) -> SchemaFile:
    """Split one file at its marker lines; the text before the first marker is its header."""
    text = path.read_text(encoding="utf-8")
    parts = _MARKER.split(text)
    sections: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name not in SECTIONS:
            raise ValueError(f"{path.name}: unknown section marker {name!r}")
        if name in sections:
            raise ValueError(f"{path.name}: section {name!r} appears twice")
        if list(sections) and SECTIONS.index(name) < SECTIONS.index(list(sections)[-1]):
            raise ValueError(f"{path.name}: section {name!r} is out of order")
        sections[name] = body.strip()
    return SchemaFile(path, *(sections.get(name, "") for name in SECTIONS))


def schema_files() -> list[SchemaFile]:
    return [parse(path) for path in sorted(SQL_DIR.glob("*.sql"))]


def fresh_install_sql() -> list[str]:
    """Every Tables section: what a fresh database gets before the replaceable sections."""
    return [f.tables for f in schema_files() if f.tables]


def replaceable_sql() -> list[str]:
    """Every Functions section, then every Triggers section: re-applied by every migrate."""
    files = schema_files()
    return [f.functions for f in files if f.functions] + [f.triggers for f in files if f.triggers]
