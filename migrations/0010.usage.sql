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
    -- What it cost, debited from credits with the batch's posting (NULL: unpriced metric).
    cost         bigint      CONSTRAINT usage_events_cost_non_negative CHECK (cost >= 0),
    currency     text        CONSTRAINT usage_events_currency_fkey REFERENCES tollgate.currencies,
    posting_id   uuid        CONSTRAINT usage_events_posting_id_fkey REFERENCES tollgate.ledger_postings,
    PRIMARY KEY (account_id, id),
    CONSTRAINT usage_events_cost_has_currency CHECK ((cost IS NULL) = (currency IS NULL))
);

CREATE INDEX usage_events_metric_time_idx ON tollgate.usage_events (account_id, metric, occurred_at);

COMMENT ON TABLE tollgate.usage_events IS 'Metered usage; priced metrics are debited from credits in the same transaction.';
