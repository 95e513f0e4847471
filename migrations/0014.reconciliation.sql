-- Reconciliation: external settlement lines (a bank statement, a provider payout report),
-- each matched to Tollgate's transactions by reference, amount and currency.
-- depends: 0013.risk-reviews

SET LOCAL ROLE tollgate_owner;

CREATE TYPE tollgate.reconciliation_status AS ENUM (
    'matched',          -- a settled transaction with this reference, amount and currency
    'missing_ours',     -- no transaction with this reference
    'amount_mismatch',  -- the transaction's amount or currency differs
    'status_mismatch'   -- the transaction exists but is not settled (pending, failed, reversed)
);

-- One import: a file or an API call. Operator-wide (lines from a bank span accounts).
CREATE TABLE tollgate.reconciliation_batches (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    source       text        NOT NULL CONSTRAINT reconciliation_batches_source_format CHECK (source ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    imported_by  text        NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tollgate.reconciliation_lines (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        uuid        NOT NULL CONSTRAINT reconciliation_lines_batch_id_fkey REFERENCES tollgate.reconciliation_batches,
    line_no         integer     NOT NULL,
    -- The line's account: the matched transaction's, else the one the line named (else NULL).
    account_id      uuid        CONSTRAINT reconciliation_lines_account_id_fkey REFERENCES tollgate.accounts,
    reference       text        NOT NULL CONSTRAINT reconciliation_lines_reference_length CHECK (length(reference) BETWEEN 1 AND 200),
    amount          tollgate.amount_minor NOT NULL,
    currency        text        NOT NULL CONSTRAINT reconciliation_lines_currency_fkey REFERENCES tollgate.currencies,
    happened_on     date        NOT NULL,
    status          tollgate.reconciliation_status NOT NULL,
    transaction_id  uuid        CONSTRAINT reconciliation_lines_transaction_id_fkey REFERENCES tollgate.transactions,
    note            text,
    CONSTRAINT reconciliation_lines_batch_line_key UNIQUE (batch_id, line_no)
);

CREATE INDEX reconciliation_lines_transaction_idx ON tollgate.reconciliation_lines (transaction_id);
CREATE INDEX reconciliation_lines_reference_idx ON tollgate.reconciliation_lines (reference);
