#!/usr/bin/env bash
# Run once by the postgres container of docker-compose.yml, when its volume is new (as
# /docker-entrypoint-initdb.d/10-roles.sh): the login roles the containers connect as, with
# passwords from the environment (.env), never from a file in the repository.
#
#   tollgate_api     the API: only a member of tollgate_app, so it can call the api functions
#                    granted to that role and nothing else (no table, no webhook secret).
#   tollgate_listen  `tollgate listen`: only a member of tollgate_listener (the outbox's
#                    delivery functions).
#
# Migrations run as the superuser (POSTGRES_PASSWORD), which creates the rest. The group roles
# are created here when missing, as db/sql/00-roles-and-schemas.sql does, so the logins can
# join them before the first migration. To change a password later (this script does not run
# again): docker compose exec postgres psql -U postgres -c '\password tollgate_api'
set -euo pipefail

for name in POSTGRES_PASSWORD TOLLGATE_API_DB_PASSWORD TOLLGATE_LISTENER_DB_PASSWORD; do
    value="${!name:-}"
    if [ "${#value}" -lt 16 ] || [[ "$value" == replace-me* ]]; then
        echo "compose-init: set $name to a password of 16 characters or more (see .env.example)" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=api_password="$TOLLGATE_API_DB_PASSWORD" \
    --set=listener_password="$TOLLGATE_LISTENER_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE tollgate_app NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_app') \gexec
SELECT 'CREATE ROLE tollgate_listener NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_listener') \gexec
CREATE ROLE tollgate_api LOGIN PASSWORD :'api_password' IN ROLE tollgate_app;
CREATE ROLE tollgate_listen LOGIN PASSWORD :'listener_password' IN ROLE tollgate_listener;
SQL
