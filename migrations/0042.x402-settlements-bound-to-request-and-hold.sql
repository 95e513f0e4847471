-- x402 settlements bound to the request they paid for and to the hold they placed: a replay
-- with another request is refused, and a replay is answered only while its hold is active
-- (db/sql/76-paid-retries.sql; the functions and triggers are re-applied after every migration run).
-- depends: 0040.x402-settlements

SET LOCAL ROLE tollgate_owner;

ALTER TABLE tollgate.x402_settlements
    -- What was asked (action, cost, cost_minor, currency), built by api.x402_claim_v1; NULL on
    -- settlements made before it was kept, which are never replayed.
    ADD COLUMN request jsonb,
    -- The hold the settlement placed, checked by api.x402_settle_v1.
    ADD COLUMN hold_id uuid CONSTRAINT x402_settlements_hold_id_fkey REFERENCES tollgate.holds,
    ADD CONSTRAINT x402_settlements_one_per_hold UNIQUE (account_uuid, hold_id);

DROP FUNCTION IF EXISTS api.x402_claim_v1(text, text, text, bytea);
DROP FUNCTION IF EXISTS api.x402_settle_v1(text, text, text, jsonb);
