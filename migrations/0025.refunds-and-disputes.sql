-- Refunds and disputes: what Stripe has refunded of a payment, the refunds Tollgate asked for,
-- the disputes Stripe reported, and every taking back of credits they caused.
--
-- What a refund or a lost dispute takes back (db/sql/65-refunds.sql): the credits the payment
-- bought, from the disputed (frozen) credits first, then what the wallet can spare beyond its
-- active holds, and the rest (already spent) as a debt: a ledger account "debt" per account
-- and currency, whose balance is what the account owes (never above zero). Money that later
-- settles for the account pays the debt first.
-- depends: 0024.posting-kinds-refunds

SET LOCAL ROLE tollgate_owner;

-- What Stripe has refunded of the payment (its charge's amount_refunded, in ISO minor units).
-- Only grows; a payment refunded in full has refunded its whole amount.
ALTER TABLE tollgate.payment_intents
    ADD COLUMN amount_refunded bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT payment_intents_amount_refunded_range
        CHECK (amount_refunded >= 0 AND amount_refunded <= amount);

-- ---------------------------------------------------------------------------------------------
-- Refunds Tollgate asked Stripe for (POST /v1/payments/{id}/refunds)
-- ---------------------------------------------------------------------------------------------

-- Stripe's refund statuses.
CREATE TYPE tollgate.refund_status AS ENUM (
    'pending',          -- asked for; Stripe has not finished it
    'requires_action',  -- Stripe needs the customer (some payment methods)
    'succeeded',        -- the money went back to the customer
    'failed',           -- terminal: Stripe could not refund
    'canceled'          -- terminal: canceled before it went through
);

-- One row per refund request, written in the transaction that calls Stripe, so a failed call
-- leaves nothing. It is also the idempotency record: (account, key) once, same body only.
-- The money is applied from Stripe's events (charge.refunded), not from this row.
CREATE TABLE tollgate.refunds (
    -- Derived from (account, idempotency key): a retry after a failure reuses the id.
    id                 uuid        PRIMARY KEY,
    -- The payment's account (idempotency keys are per account, as for payments).
    account_id         uuid        NOT NULL CONSTRAINT refunds_account_id_fkey REFERENCES tollgate.accounts,
    payment_intent_id  uuid        NOT NULL CONSTRAINT refunds_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    amount             tollgate.amount_minor NOT NULL,
    currency           text        NOT NULL CONSTRAINT refunds_currency_fkey REFERENCES tollgate.currencies,
    idempotency_key    text        NOT NULL CONSTRAINT refunds_idempotency_key_format CHECK (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    -- SHA-256 of the normalised request (payment and amount): another body is refused.
    request_hash       bytea       NOT NULL,
    -- The admin key that asked.
    requested_by       uuid        NOT NULL CONSTRAINT refunds_requested_by_fkey REFERENCES tollgate.api_keys,
    -- Stripe's refund (re_...), once Stripe answered.
    stripe_id          text        CONSTRAINT refunds_stripe_id_key UNIQUE
                                   CONSTRAINT refunds_stripe_id_format CHECK (stripe_id ~ '^re_[A-Za-z0-9_]{1,250}$'),
    status             tollgate.refund_status NOT NULL DEFAULT 'pending',
    -- The creation time of the last refund event applied to this row: older ones are stale.
    last_event_at      timestamptz,
    -- The response first sent; a replay sends it again.
    response           jsonb,
    completed_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_account_idempotency_key UNIQUE (account_id, idempotency_key),
    CONSTRAINT refunds_completed_has_response CHECK ((completed_at IS NULL) = (response IS NULL)),
    CONSTRAINT refunds_completed_has_stripe_id CHECK (completed_at IS NULL OR stripe_id IS NOT NULL)
);
CREATE INDEX refunds_payment_intent_idx ON tollgate.refunds (payment_intent_id);
COMMENT ON TABLE tollgate.refunds IS 'Refunds asked of Stripe through Tollgate; their money is applied from Stripe''s events.';

-- ---------------------------------------------------------------------------------------------
-- Disputes (charge.dispute.* events)
-- ---------------------------------------------------------------------------------------------

CREATE TYPE tollgate.dispute_status AS ENUM (
    'open',  -- Stripe has withdrawn (or may withdraw) the money: what the payment granted is frozen
    'won',   -- terminal: the money came back; what was frozen is released
    'lost'   -- terminal: the money is gone; what the payment granted is taken back like a refund
);

CREATE TABLE tollgate.disputes (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id         uuid        NOT NULL CONSTRAINT disputes_account_id_fkey REFERENCES tollgate.accounts,
    payment_intent_id  uuid        NOT NULL CONSTRAINT disputes_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    stripe_id          text        NOT NULL CONSTRAINT disputes_stripe_id_key UNIQUE
                                   CONSTRAINT disputes_stripe_id_format CHECK (stripe_id ~ '^(dp|du)_[A-Za-z0-9_]{1,250}$'),
    -- The disputed amount, in ISO minor units.
    amount             tollgate.amount_minor NOT NULL,
    currency           text        NOT NULL CONSTRAINT disputes_currency_fkey REFERENCES tollgate.currencies,
    status             tollgate.dispute_status NOT NULL,
    -- Stripe's own status (needs_response, under_review, won, lost, ...).
    stripe_status      text        NOT NULL,
    -- Credits moved from the wallet to the account's "disputed" ledger account while open.
    frozen             bigint      NOT NULL DEFAULT 0 CONSTRAINT disputes_frozen_non_negative CHECK (frozen >= 0),
    last_event_id      text        NOT NULL,
    last_event_at      timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disputes_payment_intent_idx ON tollgate.disputes (payment_intent_id);
COMMENT ON TABLE tollgate.disputes IS 'Stripe disputes of payments Tollgate created: open ones freeze what the payment granted.';

-- ---------------------------------------------------------------------------------------------
-- Taking back what a payment granted
-- ---------------------------------------------------------------------------------------------

-- One row per taking back (append-only): how much of the payment's credits, from where, and
-- the posting that did it. Their sum per payment is what has been taken back so far.
CREATE TABLE tollgate.payment_takebacks (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id         uuid        NOT NULL CONSTRAINT payment_takebacks_account_id_fkey REFERENCES tollgate.accounts,
    payment_intent_id  uuid        NOT NULL CONSTRAINT payment_takebacks_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    currency           text        NOT NULL CONSTRAINT payment_takebacks_currency_fkey REFERENCES tollgate.currencies,
    -- refund: Stripe refunded (part of) the payment; dispute_lost: a dispute of it was lost.
    reason             text        NOT NULL CONSTRAINT payment_takebacks_reason_values CHECK (reason IN ('refund', 'dispute_lost')),
    amount             tollgate.amount_minor NOT NULL,
    from_disputed      bigint      NOT NULL CONSTRAINT payment_takebacks_parts_non_negative CHECK (from_disputed >= 0 AND from_wallet >= 0 AND as_debt >= 0),
    from_wallet        bigint      NOT NULL,
    -- Already spent: recorded as the account's debt.
    as_debt            bigint      NOT NULL,
    posting_id         uuid        NOT NULL CONSTRAINT payment_takebacks_posting_id_fkey REFERENCES tollgate.ledger_postings
                                   CONSTRAINT payment_takebacks_posting_id_key UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_takebacks_parts_sum CHECK (amount = from_disputed + from_wallet + as_debt)
);
CREATE INDEX payment_takebacks_payment_intent_idx ON tollgate.payment_takebacks (payment_intent_id);
COMMENT ON TABLE tollgate.payment_takebacks IS 'Credits taken back because their payment was refunded or lost a dispute.';
