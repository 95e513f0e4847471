-- The composite type a batch of transfers is sent as (api.transfer_batch_v1): one element per
-- transfer. Part of the API, versioned like a function: a new shape is a new type (_v2)
-- beside this one, never an ALTER of it.
-- depends: 0030.hold-listing

SET LOCAL ROLE tollgate_owner;

-- A transfer of a batch (db/sql/50-ledger.sql).
CREATE TYPE api.transfer_item_v1 AS (
    from_account text,     -- the sender's external id; NULL: the key's own account
    to_account   text,     -- the receiver's external id
    amount       numeric,  -- in the currency's units (12.50); NULL when amount_minor is given
    amount_minor bigint,   -- in minor units (1250); NULL when amount is given
    currency     text
);
COMMENT ON TYPE api.transfer_item_v1 IS
    'One transfer for api.transfer_batch_v1; the rules are in its comment.';
