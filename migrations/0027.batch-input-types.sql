-- Composite types for batch inputs: one element per usage event or reconciliation line, in
-- place of one array per field. They are part of the API (api.record_usage_v2,
-- api.import_reconciliation_v2), so they are versioned like a function: a new shape is a new
-- type (_v2) beside this one, never an ALTER of it.
-- depends: 0026.reference-data-changes

SET LOCAL ROLE tollgate_owner;

-- A usage event (db/sql/75-usage.sql).
CREATE TYPE api.usage_event_v1 AS (
    id          text,         -- the caller's id, unique per account
    account     text,         -- the account's external id; NULL: the key's own account
    agent       text,         -- the agent that used it; NULL or '': none named
    metric      text,
    quantity    numeric,
    occurred_at timestamptz
);
COMMENT ON TYPE api.usage_event_v1 IS
    'One usage event for api.record_usage_v2; the rules are in its comment.';

-- A line of a settlement file or bank statement (db/sql/87-reconciliation.sql).
CREATE TYPE api.reconciliation_line_v1 AS (
    reference   text,         -- the transaction's reference
    amount      numeric,      -- in the currency's units (12.50), not minor units
    currency    text,
    happened_on date,
    account     text          -- the account's external id; NULL: the reference alone decides
);
COMMENT ON TYPE api.reconciliation_line_v1 IS
    'One reconciliation line for api.import_reconciliation_v2 and tollgate.import_reconciliation.';
