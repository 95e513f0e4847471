-- Payment intents, their status machine, idempotency records and the Stripe webhook inbox.
-- depends: 0003.accounts-and-keys

SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- Status machine
-- ---------------------------------------------------------------------------------------------

-- Stripe's PaymentIntent statuses, plus refunded (a succeeded payment whose charge was
-- refunded in full).
CREATE TYPE tollgate.payment_status AS ENUM (
    'requires_payment_method',  -- created, or the last attempt failed: needs a payment method
    'requires_confirmation',    -- has a payment method, waits for confirm
    'requires_action',          -- the customer must act (3-D Secure and the like)
    'processing',               -- the payment method is being charged asynchronously
    'requires_capture',         -- authorised, waits for capture
    'succeeded',                -- funds captured: the payment is settled
    'canceled',                 -- terminal: abandoned before success
    'refunded'                  -- terminal: succeeded, then refunded in full
);

CREATE TABLE tollgate.payment_statuses (
    status      tollgate.payment_status PRIMARY KEY,
    -- How far along the lifecycle a status is. Of two Stripe events stamped with the same
    -- second, one that asks for a move the transition table refuses is stale if it is less
    -- far along (a late "processing" after "succeeded"), rejected otherwise.
    progress    smallint NOT NULL,
    -- A payment may be recorded in this status (a PaymentIntent Stripe has just created);
    -- every other status is reached only through events.
    is_initial  boolean  NOT NULL
);

INSERT INTO tollgate.payment_statuses (status, progress, is_initial) VALUES
    ('requires_payment_method', 0, true),
    ('requires_confirmation',   1, true),
    ('requires_action',         2, false),
    ('processing',              3, false),
    ('requires_capture',        4, false),
    ('succeeded',               5, false),
    ('canceled',                5, false),
    ('refunded',                6, false);

-- Every allowed status change is a row here; the trigger on payment_intents refuses any
-- other (SQLSTATE TGA09, constraint name payment_transition_not_allowed).
CREATE TABLE tollgate.payment_transitions (
    from_status tollgate.payment_status NOT NULL,
    to_status   tollgate.payment_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT payment_transitions_not_to_self CHECK (from_status <> to_status),
    -- Terminal states stay terminal: no transition may start from one.
    CONSTRAINT payment_transitions_terminal_is_final CHECK (from_status NOT IN ('canceled', 'refunded'))
);

INSERT INTO tollgate.payment_transitions (from_status, to_status)
SELECT f::tollgate.payment_status, t::tollgate.payment_status
FROM (VALUES
    ('requires_payment_method', ARRAY['requires_confirmation', 'requires_action', 'processing',
                                      'requires_capture', 'succeeded', 'canceled']),
    ('requires_confirmation',   ARRAY['requires_payment_method', 'requires_action', 'processing',
                                      'requires_capture', 'succeeded', 'canceled']),
    ('requires_action',         ARRAY['requires_payment_method', 'requires_confirmation',
                                      'processing', 'requires_capture', 'succeeded', 'canceled']),
    ('processing',              ARRAY['requires_payment_method', 'requires_action',
                                      'requires_capture', 'succeeded', 'canceled']),
    ('requires_capture',        ARRAY['processing', 'succeeded', 'canceled']),
    ('succeeded',               ARRAY['refunded'])
) AS m(f, ts), unnest(m.ts) AS t;

-- ---------------------------------------------------------------------------------------------
-- Payment intents
-- ---------------------------------------------------------------------------------------------

-- Domains, so api.begin_payment_v1 can check a request by the very rules the table applies,
-- before any Stripe call is made.
CREATE DOMAIN tollgate.payment_amount AS tollgate.amount_minor
    -- Stripe accepts at most eight digits of minor units per payment.
    CONSTRAINT payment_amount_max CHECK (VALUE <= 99999999);
-- The paid action a payment unlocks, e.g. "report.generate".
CREATE DOMAIN tollgate.purpose AS text
    CONSTRAINT purpose_format CHECK (VALUE ~ '^[a-z0-9][a-z0-9_.:-]{0,99}$');
CREATE DOMAIN tollgate.description AS text
    CONSTRAINT description_length CHECK (length(VALUE) <= 1000);

CREATE TABLE tollgate.payment_intents (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id     uuid        NOT NULL CONSTRAINT payment_intents_account_id_fkey REFERENCES tollgate.accounts,
    stripe_id      text        NOT NULL
                   CONSTRAINT payment_intents_stripe_id_key UNIQUE
                   CONSTRAINT payment_intents_stripe_id_format CHECK (stripe_id ~ '^pi_[A-Za-z0-9_]{1,250}$'),
    amount         tollgate.payment_amount NOT NULL,
    currency       text        NOT NULL CONSTRAINT payment_intents_currency_fkey REFERENCES tollgate.currencies,
    status         tollgate.payment_status NOT NULL,
    -- The paid action this payment unlocks; NULL for a general payment.
    purpose        tollgate.purpose,
    description    tollgate.description,
    -- The Stripe event last applied, and its creation time: older events are stale.
    last_event_id  text,
    last_event_at  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- can_continue reads the newest payment of an account (optionally for one purpose).
CREATE INDEX payment_intents_account_latest_idx ON tollgate.payment_intents (account_id, created_at DESC, id DESC);
CREATE INDEX payment_intents_account_purpose_latest_idx ON tollgate.payment_intents (account_id, purpose, created_at DESC, id DESC);

COMMENT ON TABLE tollgate.payment_intents IS 'Stripe PaymentIntents created through Tollgate, with their current status.';

-- ---------------------------------------------------------------------------------------------
-- Idempotency records for POST /v1/payments
-- ---------------------------------------------------------------------------------------------

-- A row is written in the same transaction as the payment it creates, so a request that
-- failed (Stripe down, crash) leaves nothing and can be retried with the same key.
CREATE TABLE tollgate.idempotency_keys (
    account_id      uuid        NOT NULL CONSTRAINT idempotency_keys_account_id_fkey REFERENCES tollgate.accounts,
    key             text        NOT NULL CONSTRAINT idempotency_keys_key_format CHECK (key ~ '^[\x21-\x7e]{1,255}$'),
    -- SHA-256 of the normalised request: the same key with another body is refused.
    request_hash    bytea       NOT NULL,
    request         jsonb       NOT NULL,
    -- The id reserved for the payment this request creates (also sent to Stripe as metadata).
    payment_id      uuid        NOT NULL CONSTRAINT idempotency_keys_payment_id_key UNIQUE,
    -- The response body first sent; a replay sends it again.
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (account_id, key),
    CONSTRAINT idempotency_keys_completed_has_response CHECK ((completed_at IS NULL) = (response IS NULL))
);

ALTER TABLE tollgate.payment_intents
    ADD COLUMN idempotency_key text,
    ADD CONSTRAINT payment_intents_idempotency_key_fkey
        FOREIGN KEY (account_id, idempotency_key) REFERENCES tollgate.idempotency_keys (account_id, key);

-- ---------------------------------------------------------------------------------------------
-- Stripe webhook inbox
-- ---------------------------------------------------------------------------------------------

CREATE TYPE tollgate.event_state AS ENUM (
    'pending',   -- stored; its payment intent is not known yet. Applied when the row appears.
    'applied',   -- moved the payment to the event's status (or confirmed it was there)
    'stale',     -- older than the last event applied to the payment: kept, not applied
    'rejected',  -- the status change it asks for is not allowed (e.g. canceled -> succeeded)
    'ignored'    -- a type Tollgate does not act on
);

CREATE TABLE tollgate.payment_events (
    id                 text        PRIMARY KEY CONSTRAINT payment_events_id_format CHECK (id ~ '^evt_[A-Za-z0-9_]{1,250}$'),
    -- NULL until the event is matched to a payment (the account is not known before).
    account_id         uuid        CONSTRAINT payment_events_account_id_fkey REFERENCES tollgate.accounts,
    type               text        NOT NULL CONSTRAINT payment_events_type_format CHECK (type ~ '^[a-z_]+(\.[a-z_]+)+$'),
    -- The PaymentIntent the event is about (pi_...), when it is about one.
    stripe_object_id   text,
    -- The status the event reports for that PaymentIntent; NULL for events Tollgate ignores.
    target_status      tollgate.payment_status,
    stripe_created     timestamptz NOT NULL,
    payload            jsonb       NOT NULL,
    state              tollgate.event_state NOT NULL DEFAULT 'pending',
    -- Why an event was stale, rejected or ignored.
    note               text,
    payment_intent_id  uuid        CONSTRAINT payment_events_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    received_at        timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz,
    CONSTRAINT payment_events_processed_when_not_pending CHECK ((state = 'pending') = (processed_at IS NULL)),
    CONSTRAINT payment_events_matched_has_account CHECK (payment_intent_id IS NULL OR account_id IS NOT NULL)
);

-- Early events waiting for their payment intent.
CREATE INDEX payment_events_pending_idx ON tollgate.payment_events (stripe_object_id) WHERE state = 'pending';
CREATE INDEX payment_events_payment_intent_idx ON tollgate.payment_events (payment_intent_id);

COMMENT ON TABLE tollgate.payment_events IS 'Every Stripe webhook event received, once per event id.';
