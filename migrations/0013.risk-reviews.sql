-- Risk reviews: rules that flag a payment or transaction, and the reviews they open. A
-- transaction with an open or rejected review cannot settle.
-- depends: 0012.audit-chain-and-analysts

SET LOCAL ROLE tollgate_owner;

-- Thresholds per currency: the row with account_id NULL applies to every account that has
-- no row of its own. NULL thresholds are not checked.
CREATE TABLE tollgate.risk_rules (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id         uuid        CONSTRAINT risk_rules_account_id_fkey REFERENCES tollgate.accounts,
    currency           text        NOT NULL CONSTRAINT risk_rules_currency_fkey REFERENCES tollgate.currencies,
    -- One amount above this is reviewed.
    max_amount         tollgate.amount_minor,
    -- More than velocity_count payments or transactions within velocity_window is reviewed.
    velocity_count     integer     CONSTRAINT risk_rules_velocity_count_positive CHECK (velocity_count > 0),
    velocity_window    interval    CONSTRAINT risk_rules_velocity_window_positive CHECK (velocity_window > interval '0'),
    -- The first payment or transaction of an account above this is reviewed.
    first_amount_max   tollgate.amount_minor,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT risk_rules_scope_key UNIQUE NULLS NOT DISTINCT (account_id, currency),
    CONSTRAINT risk_rules_velocity_pair CHECK ((velocity_count IS NULL) = (velocity_window IS NULL))
);

CREATE TYPE tollgate.review_status AS ENUM (
    'open',      -- waiting for a reviewer; a flagged transaction cannot settle
    'approved',  -- terminal: may proceed
    'rejected'   -- terminal: a flagged transaction fails
);

CREATE TABLE tollgate.review_transitions (
    from_status tollgate.review_status NOT NULL,
    to_status   tollgate.review_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT review_transitions_terminal_is_final CHECK (from_status = 'open')
);

INSERT INTO tollgate.review_transitions VALUES ('open', 'approved'), ('open', 'rejected');

CREATE TABLE tollgate.reviews (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id         uuid        NOT NULL CONSTRAINT reviews_account_id_fkey REFERENCES tollgate.accounts,
    transaction_id     uuid        CONSTRAINT reviews_transaction_id_fkey REFERENCES tollgate.transactions
                                   CONSTRAINT reviews_transaction_id_key UNIQUE,
    payment_intent_id  uuid        CONSTRAINT reviews_payment_intent_id_fkey REFERENCES tollgate.payment_intents
                                   CONSTRAINT reviews_payment_intent_id_key UNIQUE,
    -- The rules that flagged it: amount_above_threshold, velocity, first_amount_above_threshold.
    rules              text[]      NOT NULL CONSTRAINT reviews_rules_not_empty CHECK (cardinality(rules) > 0),
    detail             text        NOT NULL,
    status             tollgate.review_status NOT NULL DEFAULT 'open',
    decided_by         text,
    note               text        CONSTRAINT reviews_note_length CHECK (length(note) <= 2000),
    created_at         timestamptz NOT NULL DEFAULT now(),
    decided_at         timestamptz,
    CONSTRAINT reviews_one_subject CHECK ((transaction_id IS NULL) <> (payment_intent_id IS NULL)),
    CONSTRAINT reviews_decided_when CHECK ((status = 'open') = (decided_at IS NULL))
);

CREATE INDEX reviews_open_idx ON tollgate.reviews (created_at) WHERE status = 'open';
