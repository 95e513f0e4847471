-- A use of a paid run updates its entitlement in place: the usable index's condition moves from
-- uses_left (which every use changes) to a generated column usable (which only the last use
-- changes), and pages keep room for the new row versions.
-- depends: 0031.transfer-batches

SET LOCAL ROLE tollgate_owner;

-- The fill factor first: adding the column rewrites the table, with that room on every page.
ALTER TABLE tollgate.payment_entitlements SET (fillfactor = 90);
ALTER TABLE tollgate.payment_entitlements
    ADD COLUMN usable boolean NOT NULL GENERATED ALWAYS AS (uses_left > 0) STORED;

DROP INDEX tollgate.payment_entitlements_usable_idx;
CREATE INDEX payment_entitlements_usable_idx ON tollgate.payment_entitlements (account_uuid, action, created_at)
    WHERE usable;

DROP FUNCTION IF EXISTS tollgate.authorization_row(text, text, bigint, text, text, text, text, integer, text,
                                                   tollgate.holds);
DROP FUNCTION IF EXISTS tollgate.hold_credits(uuid, text, text, bigint, text, integer);
