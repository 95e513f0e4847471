-- Listing an account's holds newest first, a page at a time (api.list_holds_v1).
-- depends: 0028.account-uuid

SET LOCAL ROLE tollgate_owner;

CREATE INDEX holds_account_created_idx ON tollgate.holds (account_uuid, created_at DESC, id DESC);
