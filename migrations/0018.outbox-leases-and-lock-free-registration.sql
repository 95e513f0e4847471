-- Outbox delivery: registering a consumer takes no lock writers wait on; acks need the lease.
--
-- api.register_consumer_v1 used to LOCK tollgate.outbox IN SHARE MODE until the registering
-- transaction ended, so a listener idle in that transaction stalled every writer. Now a
-- registration records the snapshot it ran in, and the consumer's claims add the events that
-- writers still in flight fanned out without it, until every such writer has finished
-- (db/sql/80-outbox.sql, tollgate.outbox_catch_up).
--
-- A claim hands out a lease token with the deliveries it leases; marking them delivered or
-- failed, renewing and releasing them need that token (the _v2 functions), so one consumer's
-- process cannot settle deliveries it does not hold. Deliveries leased by a v1 claim before
-- this migration hold no token: their lease runs out and they are claimed and handled again.
-- depends: 0016.outbox-retrying-index

SET LOCAL ROLE tollgate_owner;

-- The transaction that wrote the row, for a new consumer's catch-up. NULL for rows written
-- before this migration: committed before any consumer registered from now on.
ALTER TABLE tollgate.outbox ADD COLUMN xact_id xid8;
ALTER TABLE tollgate.outbox ALTER COLUMN xact_id SET DEFAULT pg_current_xact_id();
CREATE INDEX outbox_xact_id_idx ON tollgate.outbox (xact_id);

ALTER TABLE tollgate.outbox_consumers
    -- The registering transaction: catch-up starts once it is seen committed.
    ADD COLUMN registered_xact     xid8,
    -- What the registration saw: events of transactions it did not see committed are the
    -- consumer's, whether or not their fan-out saw it.
    ADD COLUMN registered_snapshot pg_snapshot,
    -- Transactions (virtual ids) running when the registration was first seen committed, and
    -- the first transaction id not yet assigned then: until all of those have ended, a writer
    -- may still commit an event fanned out without this consumer.
    ADD COLUMN catch_up_waits      text[],
    ADD COLUMN catch_up_xmax       xid8,
    -- Claims still look for such events.
    ADD COLUMN catching_up         boolean NOT NULL DEFAULT false;

-- The token of the claim that leased the delivery (NULL: not leased, or handed back).
ALTER TABLE tollgate.outbox_deliveries ADD COLUMN lease_token uuid;

-- Replaced by the _v2 functions, which take or return the lease token. (A fresh database has
-- no functions yet at this point: db/sql/*.sql are applied after the migrations.)
DROP FUNCTION IF EXISTS api.claim_deliveries_v1(text, integer, interval, integer);
DROP FUNCTION IF EXISTS api.deliveries_done_v1(text, bigint[]);
DROP FUNCTION IF EXISTS api.renew_leases_v1(text, bigint[], interval);
DROP FUNCTION IF EXISTS api.release_deliveries_v1(text, bigint[]);
DROP FUNCTION IF EXISTS api.delivery_failed_v1(text, bigint, text, integer, interval);
