"""Re-create Tollgate's functions, triggers, views and grants after every migration run.

The current definition of every stored function lives in one place, ``db/sql/*.sql``, applied
in file-name order. Each file is idempotent (CREATE OR REPLACE), so running it again is safe.
"""

from pathlib import Path

from yoyo import step

SQL_DIR = Path(__file__).resolve().parent.parent / "db" / "sql"

steps = [step(path.read_text(encoding="utf-8")) for path in sorted(SQL_DIR.glob("*.sql"))]
