-- Webhooks store, an applier applies: a stored event is 'received' until the applier looks at
-- it (db/sql/40-stripe-events.sql). The new enum value, the processed_at rule that names it and
-- the applier's queue index.
--
-- Not in a transaction: a new enum value cannot be used in the transaction that added it, and
-- the constraint and the index use it. Each statement commits on its own and may run again
-- (IF NOT EXISTS, IF EXISTS), so a run that stopped half way is finished by the next one. The
-- constraint is added NOT VALID and validated after (no long lock on a large inbox); the index
-- is built CONCURRENTLY.
-- transactional: false
-- depends: 0031.transfer-batches

SET ROLE tollgate_owner;

ALTER TYPE tollgate.event_state ADD VALUE IF NOT EXISTS 'received' BEFORE 'pending';

ALTER TABLE tollgate.payment_events
    DROP CONSTRAINT IF EXISTS payment_events_processed_when_final;

ALTER TABLE tollgate.payment_events
    ADD CONSTRAINT payment_events_processed_when_final
    CHECK ((processed_at IS NULL) = (state IN ('received', 'pending'))) NOT VALID;

ALTER TABLE tollgate.payment_events VALIDATE CONSTRAINT payment_events_processed_when_final;

ALTER TABLE tollgate.payment_events
    DROP CONSTRAINT IF EXISTS payment_events_processed_when_not_pending;

CREATE INDEX CONCURRENTLY IF NOT EXISTS payment_events_received_idx
    ON tollgate.payment_events (received_at, id) WHERE state = 'received';

RESET ROLE;
