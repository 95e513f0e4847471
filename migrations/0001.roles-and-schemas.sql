-- Roles and schemas: who may touch what.
--
-- tollgate        private schema: every table and internal function. No grants to anyone.
-- api             the functions the service calls. tollgate_app may EXECUTE an explicit list.
--
-- tollgate_owner  NOLOGIN. Owns schemas, tables and functions; SECURITY DEFINER functions run
--                 as this role, so they never run with superuser rights.
-- tollgate_app    NOLOGIN. The service's connections SET ROLE to it (or a login role that is a
--                 member of it). It can call api.* functions and nothing else.
--
-- Roles are cluster-wide, so they are created only when missing (several databases of one
-- cluster, e.g. test databases, share them).
-- depends:

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_owner') THEN
        CREATE ROLE tollgate_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_app') THEN
        CREATE ROLE tollgate_app NOLOGIN;
    END IF;
END
$roles$;

-- The migrating role must be able to SET ROLE tollgate_owner in later migrations.
GRANT tollgate_owner TO CURRENT_USER;

CREATE SCHEMA tollgate AUTHORIZATION tollgate_owner;
CREATE SCHEMA api AUTHORIZATION tollgate_owner;

COMMENT ON SCHEMA tollgate IS 'Private: tables and internal functions of Tollgate. No direct access.';
COMMENT ON SCHEMA api IS 'Functions the Tollgate service calls; tollgate_app may execute them.';

-- Functions are not executable by PUBLIC unless granted one by one (post-apply grants file).
ALTER DEFAULT PRIVILEGES FOR ROLE tollgate_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE tollgate_owner REVOKE USAGE ON TYPES FROM PUBLIC;
