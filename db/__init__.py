"""Everything that talks to PostgreSQL directly: SQL, pool, migrations, embedded server."""
