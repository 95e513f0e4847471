-- How a migration changes reference data (currencies, the status machines): it calls
-- tollgate.allow_reference_data_change() first, in its own transaction.
--
-- The *_reference_data guard triggers live in db/sql, which runs after every migration: on a
-- fresh database they do not exist yet while the migrations run, on an upgraded one they do.
-- A migration that disabled them (ALTER TABLE ... DISABLE TRIGGER) failed on a fresh database;
-- one that did not failed on an upgrade. The guard (tollgate.refuse_change, db/sql/10-guards.sql)
-- now lets the change through while the transaction-local setting this function turns on is
-- set, so the same migration runs the same way in both cases. The function lives here, not in
-- db/sql, because migrations call it before db/sql is applied on a fresh database.
-- Only the owner may write reference data (no grants), so the setting opens nothing to others.
-- depends: 0017.stripe-webhook-secrets 0018.outbox-leases-and-lock-free-registration 0019.caps-and-bounds 0025.refunds-and-disputes

SET LOCAL ROLE tollgate_owner;

CREATE FUNCTION tollgate.allow_reference_data_change() RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT set_config('tollgate.reference_data_change', 'on', true)
$$;

COMMENT ON FUNCTION tollgate.allow_reference_data_change() IS
    'Lets this transaction change reference data (guarded by *_reference_data triggers): for migrations.';

REVOKE EXECUTE ON FUNCTION tollgate.allow_reference_data_change() FROM PUBLIC;
