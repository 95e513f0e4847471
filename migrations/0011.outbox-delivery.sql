-- Delivering the outbox: named consumers, and one delivery row per consumer and event.
--
-- tollgate_listener  NOLOGIN. `tollgate listen` SET ROLEs to it: it may claim, settle and
--                    replay deliveries through the api functions, and nothing else.
-- depends: 0010.usage

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_listener') THEN
        CREATE ROLE tollgate_listener NOLOGIN;
    END IF;
END
$roles$;

SET LOCAL ROLE tollgate_owner;

-- A consumer sees every event written after it was registered (or all, if registered
-- "from the start"), once; several processes of one consumer share its deliveries.
-- Operator-wide configuration, so it carries no account.
CREATE TABLE tollgate.outbox_consumers (
    name        text        PRIMARY KEY CONSTRAINT outbox_consumers_name_format CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE tollgate.delivery_status AS ENUM (
    'pending',    -- waiting (next_attempt_at) or being handled
    'delivered',  -- the handler succeeded; committed with this row
    'dead'        -- the handler failed max-attempts times; an operator may replay it
);

CREATE TABLE tollgate.outbox_deliveries (
    consumer        text        NOT NULL CONSTRAINT outbox_deliveries_consumer_fkey REFERENCES tollgate.outbox_consumers,
    outbox_id       bigint      NOT NULL CONSTRAINT outbox_deliveries_outbox_id_fkey REFERENCES tollgate.outbox,
    account_id      uuid        NOT NULL CONSTRAINT outbox_deliveries_account_id_fkey REFERENCES tollgate.accounts,
    status          tollgate.delivery_status NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0 CONSTRAINT outbox_deliveries_attempts_non_negative CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (consumer, outbox_id),
    CONSTRAINT outbox_deliveries_delivered_when CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);

-- What a consumer should handle next.
CREATE INDEX outbox_deliveries_due_idx ON tollgate.outbox_deliveries (consumer, next_attempt_at, outbox_id)
    WHERE status = 'pending';
CREATE INDEX outbox_deliveries_dead_idx ON tollgate.outbox_deliveries (consumer, outbox_id) WHERE status = 'dead';

COMMENT ON TABLE tollgate.outbox_deliveries IS 'One row per consumer and outbox event: at-least-once delivery state.';

-- A balance below which its owner is told credits are low (credits.low, once per crossing).
ALTER TABLE tollgate.ledger_accounts
    ADD COLUMN low_balance bigint CONSTRAINT ledger_accounts_low_balance_non_negative CHECK (low_balance >= 0);
