-- Listing an account's transactions newest first, a page at a time.
-- depends: 0014.reconciliation

SET LOCAL ROLE tollgate_owner;

CREATE INDEX transactions_account_created_idx ON tollgate.transactions (account_id, created_at DESC, id DESC);
