-- The double-entry ledger: ledger accounts with a running balance, postings, entries.
--
-- Every posting's entries sum to zero per currency; every entry records the balance of its
-- ledger account before and after it, and the account's version, so any past balance can be
-- recomputed and audited. Balances change only through entries (db/sql/50-ledger.sql).
-- depends: 0005.outbox-and-audit

SET LOCAL ROLE tollgate_owner;

-- The owner of Tollgate's own ledger accounts (clearing accounts). Its external id cannot be
-- chosen by anyone: the format check admits it only for this row.
ALTER TABLE tollgate.accounts DROP CONSTRAINT accounts_external_id_format;
ALTER TABLE tollgate.accounts ADD CONSTRAINT accounts_external_id_format CHECK (
    external_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$'
    OR (id = '00000000-0000-0000-0000-000000000000' AND external_id = '$system')
);
INSERT INTO tollgate.accounts (id, external_id)
VALUES ('00000000-0000-0000-0000-000000000000', '$system');

CREATE TABLE tollgate.ledger_accounts (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id     uuid        NOT NULL CONSTRAINT ledger_accounts_account_id_fkey REFERENCES tollgate.accounts,
    -- "main" for an account's own balance; "clearing" for the system's counterpart of money
    -- that arrived from outside (Stripe, a bank).
    name           text        NOT NULL CONSTRAINT ledger_accounts_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    currency       text        NOT NULL CONSTRAINT ledger_accounts_currency_fkey REFERENCES tollgate.currencies,
    -- false: a prepaid wallet, refused any posting that would take it below zero.
    allow_negative boolean     NOT NULL DEFAULT false,
    -- Minor units. Changed only by inserting entries.
    balance        bigint      NOT NULL DEFAULT 0,
    -- The number of entries posted to this account.
    version        bigint      NOT NULL DEFAULT 0 CONSTRAINT ledger_accounts_version_non_negative CHECK (version >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_account_name_currency_key UNIQUE (account_id, name, currency),
    -- Lets entries reference (ledger account, currency) so an entry's currency is its account's.
    CONSTRAINT ledger_accounts_id_currency_key UNIQUE (id, currency),
    CONSTRAINT ledger_accounts_balance_non_negative CHECK (allow_negative OR balance >= 0)
);

COMMENT ON TABLE tollgate.ledger_accounts IS 'Balances, one per (account, name, currency); moved only by ledger entries.';

CREATE TYPE tollgate.posting_kind AS ENUM (
    'transfer',    -- between two accounts, on a caller's request
    'settlement',  -- a transaction settled: money arrived for an account
    'reversal'     -- compensates an earlier posting entry by entry; the original stays
);

CREATE TABLE tollgate.ledger_postings (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The account on whose behalf the posting was made (a transfer's sender, a transaction's
    -- account).
    account_id       uuid        NOT NULL CONSTRAINT ledger_postings_account_id_fkey REFERENCES tollgate.accounts,
    kind             tollgate.posting_kind NOT NULL,
    -- Caller-supplied key that makes a transfer idempotent, with the request it stood for.
    idempotency_key  text        CONSTRAINT ledger_postings_idempotency_key_format CHECK (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    request_hash     bytea,
    reverses         uuid        CONSTRAINT ledger_postings_reverses_fkey REFERENCES tollgate.ledger_postings
                                 CONSTRAINT ledger_postings_reverses_once UNIQUE,
    -- The transaction that wrote the posting (set by the database): entries can be added to a
    -- posting only in that transaction, so a committed posting never changes.
    created_xid      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_postings_idempotency_key UNIQUE (account_id, idempotency_key),
    CONSTRAINT ledger_postings_key_has_hash CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CONSTRAINT ledger_postings_reversal_names_original CHECK ((kind = 'reversal') = (reverses IS NOT NULL))
);

CREATE TABLE tollgate.ledger_entries (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The owner of the ledger account (set by the database).
    account_id        uuid        NOT NULL CONSTRAINT ledger_entries_account_id_fkey REFERENCES tollgate.accounts,
    posting_id        uuid        NOT NULL CONSTRAINT ledger_entries_posting_id_fkey REFERENCES tollgate.ledger_postings,
    ledger_account_id uuid        NOT NULL,
    currency          text        NOT NULL,
    -- Signed minor units: positive raises the ledger account's balance, negative lowers it.
    amount            bigint      NOT NULL CONSTRAINT ledger_entries_amount_non_zero CHECK (amount <> 0),
    balance_before    bigint      NOT NULL,
    balance_after     bigint      NOT NULL,
    -- The ledger account's version after this entry (1 for its first entry).
    account_version   bigint      NOT NULL CONSTRAINT ledger_entries_account_version_positive CHECK (account_version > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_entries_ledger_account_fkey FOREIGN KEY (ledger_account_id, currency)
        REFERENCES tollgate.ledger_accounts (id, currency),
    CONSTRAINT ledger_entries_balance_arithmetic CHECK (balance_after = balance_before + amount),
    CONSTRAINT ledger_entries_version_key UNIQUE (ledger_account_id, account_version)
);

CREATE INDEX ledger_entries_posting_idx ON tollgate.ledger_entries (posting_id);
CREATE INDEX ledger_entries_account_id_idx ON tollgate.ledger_entries (account_id, id);

COMMENT ON TABLE tollgate.ledger_entries IS 'Append-only entries; each posting''s entries sum to zero per currency.';
