"""Re-create Tollgate's functions, views, grants and triggers after every migration run.

Their current definition lives in one place, the Functions and Triggers sections of
``db/sql/*.sql`` (see db/schema.py); each is idempotent (CREATE OR REPLACE), so running it
again is safe.
"""

from yoyo import step

from db.schema import replaceable_sql

steps = [step(sql) for sql in replaceable_sql()]
