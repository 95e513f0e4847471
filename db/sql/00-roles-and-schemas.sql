-- Roles and schemas: who may touch what.
--
-- tollgate          private schema: every table and internal function. No grants to anyone.
-- api               the functions the service calls. tollgate_app may EXECUTE an explicit list
--                   (90-grants.sql).
-- reporting         documented, read-only views for analysts (95-reporting.sql).
-- retention         the functions that move old rows to the archive tables (89-retention.sql),
--                   owned by tollgate_retention; no grants.
--
-- tollgate_owner    NOLOGIN. Owns schemas, tables and functions; SECURITY DEFINER functions run
--                   as this role, so they never run with superuser rights.
-- tollgate_app      NOLOGIN. The service's connections SET ROLE to it (or log in as a member of
--                   it). It can call the api functions granted to it and nothing else.
-- tollgate_listener NOLOGIN. `tollgate listen` SET ROLEs to it: it may claim, settle and
--                   replay outbox deliveries through the api functions, and nothing else.
-- tollgate_analyst  NOLOGIN. SELECT on the views of schema reporting, nothing else; `tollgate
--                   analyst url` makes a read-only login role that is a member of it.
-- tollgate_retention NOLOGIN. Owns the retention functions (89-retention.sql), the only
--                   way rows leave the append-only tables: it may move final rows older than
--                   a horizon into the archive tables, and nothing else. No member but the
--                   migrating role.
--
-- Roles are cluster-wide, so they are created only when missing (several databases of one
-- cluster, e.g. test databases, share them). This file's Tables section runs as the migrating
-- role, which may create schemas; everything else runs as tollgate_owner.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_owner') THEN
        CREATE ROLE tollgate_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_app') THEN
        CREATE ROLE tollgate_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_listener') THEN
        CREATE ROLE tollgate_listener NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_analyst') THEN
        CREATE ROLE tollgate_analyst NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_retention') THEN
        CREATE ROLE tollgate_retention NOLOGIN;
    END IF;
END
$roles$;

-- The migrating role must be able to SET ROLE tollgate_owner (and tollgate_retention, which
-- owns the retention functions: 89-retention.sql creates them as that role).
GRANT tollgate_owner TO CURRENT_USER;
GRANT tollgate_retention TO CURRENT_USER;

CREATE SCHEMA tollgate AUTHORIZATION tollgate_owner;
CREATE SCHEMA api AUTHORIZATION tollgate_owner;
CREATE SCHEMA reporting AUTHORIZATION tollgate_owner;

COMMENT ON SCHEMA tollgate IS 'Private: tables and internal functions of Tollgate. No direct access.';
COMMENT ON SCHEMA api IS 'Functions the Tollgate service calls; tollgate_app may execute them.';
COMMENT ON SCHEMA reporting IS 'Documented, read-only views for analysts.';

-- Retention's functions (89-retention.sql), the one way rows leave the append-only tables:
-- owned by tollgate_retention, usable by no other role.
CREATE SCHEMA retention AUTHORIZATION tollgate_retention;

COMMENT ON SCHEMA retention IS 'Retention: moving old rows in a final state to the archive tables. No grants.';

-- Functions and types are not usable by PUBLIC unless granted one by one (90-grants.sql).
ALTER DEFAULT PRIVILEGES FOR ROLE tollgate_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE tollgate_owner REVOKE USAGE ON TYPES FROM PUBLIC;
