-- Agent gating: what an action costs, what entitles an account to it (a one-off payment, a
-- subscription, prepaid credits), holds on credits, and spend caps.
-- depends: 0008.posting-kind-charge

SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- The price list
-- ---------------------------------------------------------------------------------------------

-- The paid actions agents ask for. Operator-wide configuration (like currencies), so it
-- carries no account; set with api.set_action_price_v1 or `tollgate actions set`.
CREATE TABLE tollgate.actions (
    name        tollgate.purpose PRIMARY KEY,
    -- What one run of the action costs: the one-off payment a 402 asks for, and the default
    -- hold on credits.
    price       tollgate.payment_amount NOT NULL,
    currency    text        NOT NULL CONSTRAINT actions_currency_fkey REFERENCES tollgate.currencies,
    description tollgate.description,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Metered metrics with a price per unit, debited from credits as usage is recorded.
CREATE TABLE tollgate.metric_prices (
    metric      text        PRIMARY KEY CONSTRAINT metric_prices_metric_format CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,99}$'),
    -- Minor units per unit of quantity; may be fractional (0.002 cents per token). The cost of
    -- an event is quantity x unit_price, rounded half up to a whole minor unit.
    unit_price  numeric     NOT NULL CONSTRAINT metric_prices_unit_price_positive CHECK (unit_price > 0 AND unit_price < 1e12),
    currency    text        NOT NULL CONSTRAINT metric_prices_currency_fkey REFERENCES tollgate.currencies,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- Entitlements
-- ---------------------------------------------------------------------------------------------

-- A succeeded one-off payment for an action (its purpose) entitles one run of that action.
CREATE TABLE tollgate.payment_entitlements (
    payment_intent_id uuid        PRIMARY KEY CONSTRAINT payment_entitlements_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    account_id        uuid        NOT NULL CONSTRAINT payment_entitlements_account_id_fkey REFERENCES tollgate.accounts,
    action            tollgate.purpose NOT NULL,
    uses_left         integer     NOT NULL CONSTRAINT payment_entitlements_uses_left_range CHECK (uses_left >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    used_at           timestamptz
);

CREATE INDEX payment_entitlements_usable_idx ON tollgate.payment_entitlements (account_id, action, created_at)
    WHERE uses_left > 0;

-- Stripe's subscription statuses.
CREATE TYPE tollgate.subscription_status AS ENUM (
    'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused'
);

-- Kept current from customer.subscription.created/updated/deleted webhooks. A subscription
-- that is active or trialing, within its current period, entitles every action.
CREATE TABLE tollgate.subscriptions (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id         uuid        NOT NULL CONSTRAINT subscriptions_account_id_fkey REFERENCES tollgate.accounts,
    stripe_id          text        NOT NULL CONSTRAINT subscriptions_stripe_id_key UNIQUE
                                   CONSTRAINT subscriptions_stripe_id_format CHECK (stripe_id ~ '^sub_[A-Za-z0-9_]{1,250}$'),
    status             tollgate.subscription_status NOT NULL,
    -- The Stripe price or plan id subscribed to.
    plan               text,
    current_period_end timestamptz,
    last_event_id      text,
    last_event_at      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscriptions_account_idx ON tollgate.subscriptions (account_id, current_period_end DESC);

ALTER TABLE tollgate.payment_events
    ADD COLUMN subscription_id uuid CONSTRAINT payment_events_subscription_id_fkey REFERENCES tollgate.subscriptions;
ALTER TABLE tollgate.payment_events DROP CONSTRAINT payment_events_matched_has_account;
ALTER TABLE tollgate.payment_events ADD CONSTRAINT payment_events_matched_has_account
    CHECK ((payment_intent_id IS NULL AND subscription_id IS NULL) OR account_id IS NOT NULL);
ALTER TABLE tollgate.payment_events ADD CONSTRAINT payment_events_one_subject
    CHECK (payment_intent_id IS NULL OR subscription_id IS NULL);

-- ---------------------------------------------------------------------------------------------
-- Holds on credits
-- ---------------------------------------------------------------------------------------------

CREATE TYPE tollgate.hold_status AS ENUM (
    'active',    -- reserves credits until captured, released or expired
    'captured',  -- terminal: the actual cost was posted; the rest was freed
    'released',  -- terminal: nothing was spent
    'expired'    -- terminal: not captured in time; nothing was spent
);

CREATE TABLE tollgate.hold_transitions (
    from_status tollgate.hold_status NOT NULL,
    to_status   tollgate.hold_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT hold_transitions_terminal_is_final CHECK (from_status = 'active')
);

INSERT INTO tollgate.hold_transitions VALUES ('active', 'captured'), ('active', 'released'), ('active', 'expired');

CREATE TABLE tollgate.holds (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id        uuid        NOT NULL CONSTRAINT holds_account_id_fkey REFERENCES tollgate.accounts,
    -- The agent that asked, for per-agent spend caps; '' when none was named.
    agent_id          text        NOT NULL DEFAULT '' CONSTRAINT holds_agent_id_format CHECK (agent_id ~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})?$'),
    action            tollgate.purpose NOT NULL,
    -- The credits wallet (the account's main ledger account in this currency).
    ledger_account_id uuid        NOT NULL,
    currency          text        NOT NULL,
    amount            tollgate.amount_minor NOT NULL,
    status            tollgate.hold_status NOT NULL DEFAULT 'active',
    captured_amount   bigint      CONSTRAINT holds_captured_amount_non_negative CHECK (captured_amount >= 0),
    posting_id        uuid        CONSTRAINT holds_posting_id_fkey REFERENCES tollgate.ledger_postings,
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT holds_ledger_account_fkey FOREIGN KEY (ledger_account_id, currency)
        REFERENCES tollgate.ledger_accounts (id, currency),
    CONSTRAINT holds_captured_has_amount CHECK ((status = 'captured') = (captured_amount IS NOT NULL)),
    CONSTRAINT holds_posting_when_spent CHECK ((posting_id IS NOT NULL) = (status = 'captured' AND captured_amount > 0)),
    CONSTRAINT holds_expiry_after_creation CHECK (expires_at > created_at)
);

CREATE INDEX holds_active_idx ON tollgate.holds (ledger_account_id, expires_at) WHERE status = 'active';

-- ---------------------------------------------------------------------------------------------
-- Spend caps
-- ---------------------------------------------------------------------------------------------

CREATE TYPE tollgate.spend_period AS ENUM ('day', 'month');

-- A limit on what an account (agent_id '') or one of its agents may spend in a period (UTC
-- days and months). Reaching hard_limit refuses spending; crossing soft_pct percent of it
-- announces spend.threshold_reached once per period.
CREATE TABLE tollgate.spend_caps (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL CONSTRAINT spend_caps_account_id_fkey REFERENCES tollgate.accounts,
    agent_id    text        NOT NULL DEFAULT '' CONSTRAINT spend_caps_agent_id_format CHECK (agent_id ~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})?$'),
    period      tollgate.spend_period NOT NULL,
    currency    text        NOT NULL CONSTRAINT spend_caps_currency_fkey REFERENCES tollgate.currencies,
    hard_limit  tollgate.amount_minor NOT NULL,
    soft_pct    smallint    NOT NULL DEFAULT 80 CONSTRAINT spend_caps_soft_pct_range CHECK (soft_pct BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT spend_caps_scope_key UNIQUE (account_id, agent_id, period, currency)
);

-- What was spent, per account, agent, currency and UTC day, in minor units: held credits (the
-- whole hold while active, the captured amount after) and metered usage (exact, so possibly
-- fractional). Maintained by the hold triggers and the usage function; caps read it.
CREATE TABLE tollgate.spend_daily (
    account_id  uuid        NOT NULL CONSTRAINT spend_daily_account_id_fkey REFERENCES tollgate.accounts,
    agent_id    text        NOT NULL,
    currency    text        NOT NULL CONSTRAINT spend_daily_currency_fkey REFERENCES tollgate.currencies,
    day         date        NOT NULL,
    spent       numeric     NOT NULL DEFAULT 0 CONSTRAINT spend_daily_spent_non_negative CHECK (spent >= 0),
    PRIMARY KEY (account_id, currency, day, agent_id)
);

-- One row per cap and period whose soft threshold was crossed: the notice goes out once.
CREATE TABLE tollgate.spend_notices (
    cap_id       uuid        NOT NULL CONSTRAINT spend_notices_cap_id_fkey REFERENCES tollgate.spend_caps,
    account_id   uuid        NOT NULL CONSTRAINT spend_notices_account_id_fkey REFERENCES tollgate.accounts,
    period_start timestamptz NOT NULL,
    spent        numeric     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cap_id, period_start)
);
