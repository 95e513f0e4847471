-- Metered usage events, idempotent per account on the caller's event id.
-- depends: 0009.gating

-- Views for analysts live in their own schema (read-only access is granted per view). Created
-- by the migrating role, which may create schemas; owned by tollgate_owner.
CREATE SCHEMA reporting AUTHORIZATION tollgate_owner;
COMMENT ON SCHEMA reporting IS 'Documented, read-only views for analysts.';

SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.usage_events (
    account_id   uuid        NOT NULL CONSTRAINT usage_events_account_id_fkey REFERENCES tollgate.accounts,
    -- The caller's id for the event: a retried batch never counts an event twice.
    id           text        NOT NULL CONSTRAINT usage_events_id_format CHECK (id ~ '^[\x21-\x7e]{1,128}$'),
    agent_id     text        NOT NULL DEFAULT '' CONSTRAINT usage_events_agent_id_format CHECK (agent_id ~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})?$'),
    metric       text        NOT NULL CONSTRAINT usage_events_metric_format CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,99}$'),
    quantity     numeric     NOT NULL CONSTRAINT usage_events_quantity_range CHECK (quantity > 0 AND quantity < 1e15),
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- What it cost, exactly, in minor units (a fraction of one when the unit price is small;
    -- NULL: unpriced metric). Charged with the batch's posting, whole minor units at a time.
    cost         numeric     CONSTRAINT usage_events_cost_non_negative CHECK (cost >= 0),
    currency     text        CONSTRAINT usage_events_currency_fkey REFERENCES tollgate.currencies,
    posting_id   uuid        CONSTRAINT usage_events_posting_id_fkey REFERENCES tollgate.ledger_postings,
    PRIMARY KEY (account_id, id),
    CONSTRAINT usage_events_cost_has_currency CHECK ((cost IS NULL) = (currency IS NULL))
);

CREATE INDEX usage_events_metric_time_idx ON tollgate.usage_events (account_id, metric, occurred_at);

-- The part of a minor unit of usage an account owes but has not been charged yet: each batch
-- charges the whole minor units of (carry + its exact costs) and carries the rest, so many
-- small events cost what they add up to, never rounded away one by one.
CREATE TABLE tollgate.usage_carry (
    account_id  uuid        NOT NULL CONSTRAINT usage_carry_account_id_fkey REFERENCES tollgate.accounts,
    currency    text        NOT NULL CONSTRAINT usage_carry_currency_fkey REFERENCES tollgate.currencies,
    fraction    numeric     NOT NULL CONSTRAINT usage_carry_fraction_range CHECK (fraction >= 0 AND fraction < 1),
    PRIMARY KEY (account_id, currency)
);

COMMENT ON TABLE tollgate.usage_events IS 'Metered usage; priced metrics are debited from credits in the same transaction.';
