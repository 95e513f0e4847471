"""Run each pgTAP file in tests/sql in a fresh database and fail on any "not ok". In the
PgBouncer pass (``make test-pgbouncer``) each file goes through PgBouncer in transaction
pooling mode: a file is one transaction, so it must keep nothing in its session."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import ExecStatus

from db import pooling
from tests.conftest import Template

SQL_DIR = Path(__file__).parent / "sql"
FILES = sorted(SQL_DIR.glob("*.sql"))

PLAN = re.compile(r"^1\.\.(\d+)$")
RESULT = re.compile(r"^(not )?ok \d+")


def run_tap(dsn: str, script: str) -> list[str]:
    lines: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(script.encode())
        while True:
            if cur.pgresult is not None and cur.pgresult.status == ExecStatus.TUPLES_OK:
                for row in cur.fetchall():
                    lines.extend(str(row[0]).splitlines())
            if not cur.nextset():
                break
    return lines


def test_files_exist() -> None:
    assert FILES, f"no pgTAP files in {SQL_DIR}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_pgtap(path: Path, sql_dsn: str, db_dsn: str, template: Template) -> None:
    if template.pgtap_error:
        pytest.fail(template.pgtap_error, pytrace=False)
    if sql_dsn != db_dsn:  # the PgBouncer pass: the file really goes through the pooler
        with psycopg.connect(sql_dsn, autocommit=True) as conn:
            assert pooling.is_pooled(conn), "sql_dsn should reach PostgreSQL through PgBouncer"
    try:
        lines = run_tap(sql_dsn, path.read_text(encoding="utf-8"))
    except psycopg.Error as exc:
        pytest.fail(f"{path.name} stopped with an error: {exc}", pytrace=False)
    planned = next((int(m.group(1)) for line in lines if (m := PLAN.match(line))), None)
    results = [m for line in lines if (m := RESULT.match(line))]
    failed = [m.string for m in results if m.group(1)]
    report = "\n".join(lines)
    assert planned is not None, f"{path.name} printed no plan:\n{report}"
    assert not failed, f"{path.name}: {len(failed)} failed\n{report}"
    assert len(results) == planned, f"{path.name}: planned {planned}, ran {len(results)}\n{report}"
