-- Transactions: a financial action recorded first, then settled or failed by a downstream
-- service (or by the Stripe payment it is linked to), and possibly reversed.
-- depends: 0006.ledger

SET LOCAL ROLE tollgate_owner;

CREATE TYPE tollgate.transaction_status AS ENUM (
    'pending',   -- recorded; nothing posted yet
    'settled',   -- the money arrived: a settlement posting credited the account
    'failed',    -- terminal: it did not happen; nothing was posted
    'reversed'   -- terminal: settled, then undone by a compensating posting
);

CREATE TABLE tollgate.transaction_transitions (
    from_status tollgate.transaction_status NOT NULL,
    to_status   tollgate.transaction_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT transaction_transitions_not_to_self CHECK (from_status <> to_status),
    CONSTRAINT transaction_transitions_terminal_is_final CHECK (from_status NOT IN ('failed', 'reversed'))
);

INSERT INTO tollgate.transaction_transitions (from_status, to_status) VALUES
    ('pending', 'settled'),
    ('pending', 'failed'),
    ('settled', 'reversed');

CREATE TABLE tollgate.transactions (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id            uuid        NOT NULL CONSTRAINT transactions_account_id_fkey REFERENCES tollgate.accounts,
    -- The caller's own id for the transaction, unique per account.
    reference             text        NOT NULL CONSTRAINT transactions_reference_format CHECK (reference ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    amount                tollgate.amount_minor NOT NULL,
    currency              text        NOT NULL CONSTRAINT transactions_currency_fkey REFERENCES tollgate.currencies,
    status                tollgate.transaction_status NOT NULL DEFAULT 'pending',
    -- The Stripe payment whose webhooks settle, fail or reverse this transaction, if any. One
    -- payment backs at most one transaction, or it would credit the account more than once.
    payment_intent_id     uuid        CONSTRAINT transactions_payment_intent_id_fkey REFERENCES tollgate.payment_intents
                                      CONSTRAINT transactions_payment_intent_id_key UNIQUE,
    settlement_posting_id uuid        CONSTRAINT transactions_settlement_posting_id_fkey REFERENCES tollgate.ledger_postings,
    reversal_posting_id   uuid        CONSTRAINT transactions_reversal_posting_id_fkey REFERENCES tollgate.ledger_postings,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transactions_account_reference_key UNIQUE (account_id, reference),
    CONSTRAINT transactions_settled_has_posting CHECK ((status IN ('settled', 'reversed')) = (settlement_posting_id IS NOT NULL)),
    CONSTRAINT transactions_reversed_has_posting CHECK ((status = 'reversed') = (reversal_posting_id IS NOT NULL))
);

COMMENT ON TABLE tollgate.transactions IS 'Financial actions recorded before they happen; settling one posts to the ledger.';
