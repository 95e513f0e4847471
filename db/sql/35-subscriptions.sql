-- Stripe subscriptions, kept current from customer.subscription.created/updated/deleted
-- webhooks (tollgate.apply_subscription_event). A subscription that is active or trialing,
-- within its current period, entitles every action (74-authorize.sql).

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

-- Stripe's subscription statuses.
CREATE TYPE tollgate.subscription_status AS ENUM (
    'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused'
);

-- Kept current from customer.subscription.created/updated/deleted webhooks. A subscription
-- that is active or trialing, within its current period, entitles every action.
CREATE TABLE tollgate.subscriptions (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid         uuid        NOT NULL CONSTRAINT subscriptions_account_uuid_fkey REFERENCES tollgate.accounts,
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

CREATE INDEX subscriptions_account_idx ON tollgate.subscriptions (account_uuid, current_period_end DESC);

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- How far along its lifecycle a subscription status is: orders events of the same second.
CREATE OR REPLACE FUNCTION tollgate.subscription_progress(p_status tollgate.subscription_status) RETURNS smallint
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_status WHEN 'incomplete' THEN 0 WHEN 'trialing' THEN 1 WHEN 'active' THEN 2
                         WHEN 'past_due' THEN 3 WHEN 'unpaid' THEN 4 WHEN 'paused' THEN 4
                         ELSE 5 END::smallint
$$;

-- Apply a stored customer.subscription.* event: the subscription row is created from the
-- event's object (the account named in its metadata as tollgate_account) or updated by it,
-- unless the event is older than the last one applied, or of the same second and earlier in
-- the lifecycle (stale). Canceled and incomplete_expired are final (rejected).
CREATE OR REPLACE FUNCTION tollgate.apply_subscription_event(p_event_id text)
RETURNS tollgate.event_state
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev       tollgate.payment_events;
    obj      jsonb;
    acct     uuid;
    sub      tollgate.subscriptions;
    v_status tollgate.subscription_status;
    v_plan   text;
    v_ends   timestamptz;
    outcome  tollgate.event_state := 'applied';
    why      text;
BEGIN
    SELECT * INTO STRICT ev FROM tollgate.payment_events WHERE id = p_event_id FOR UPDATE;
    obj := ev.payload -> 'data' -> 'object';
    SELECT s.enumlabel::tollgate.subscription_status INTO v_status
    FROM pg_enum s WHERE s.enumtypid = 'tollgate.subscription_status'::regtype
      AND s.enumlabel = CASE WHEN ev.type = 'customer.subscription.deleted' THEN 'canceled' ELSE obj ->> 'status' END;
    v_plan := coalesce(obj #>> '{plan,id}', obj #>> '{items,data,0,price,id}', obj #>> '{items,data,0,plan,id}');
    -- Newer Stripe API versions put the period on each item: the latest item's end then. None
    -- at all: the subscription entitles nothing (authorize needs a period end in the future).
    v_ends := to_timestamp(coalesce(
        CASE WHEN jsonb_typeof(obj -> 'current_period_end') = 'number'
             THEN (obj ->> 'current_period_end')::double precision END,
        (SELECT max((i ->> 'current_period_end')::double precision)
         FROM jsonb_array_elements(CASE WHEN jsonb_typeof(obj #> '{items,data}') = 'array'
                                        THEN obj #> '{items,data}' ELSE '[]'::jsonb END) AS i
         WHERE jsonb_typeof(i -> 'current_period_end') = 'number')));

    SELECT * INTO sub FROM tollgate.subscriptions WHERE stripe_id = ev.stripe_object_id FOR UPDATE;
    IF FOUND THEN
        acct := sub.account_uuid;
    ELSE
        SELECT a.id INTO acct FROM tollgate.accounts a
        WHERE a.external_id = obj #>> '{metadata,tollgate_account}'
          AND a.id <> '00000000-0000-0000-0000-000000000000';
    END IF;

    IF acct IS NULL OR v_status IS NULL THEN
        UPDATE tollgate.payment_events
        SET state = 'ignored', processed_at = now(),
            note = CASE WHEN acct IS NULL THEN 'no known account in metadata.tollgate_account'
                        ELSE format('unknown subscription status %L', obj ->> 'status') END
        WHERE id = ev.id;
        RETURN 'ignored';
    END IF;

    PERFORM tollgate.set_actor('stripe:' || ev.id);
    IF sub.id IS NULL THEN
        INSERT INTO tollgate.subscriptions (account_uuid, stripe_id, status, plan, current_period_end,
                                            last_event_id, last_event_at)
        VALUES (acct, ev.stripe_object_id, v_status, v_plan, v_ends, ev.id, ev.stripe_created)
        RETURNING * INTO sub;
    ELSIF ev.stripe_created < sub.last_event_at THEN
        outcome := 'stale';
        why := format('older than %s (%s), already applied', sub.last_event_id, sub.last_event_at);
    ELSIF sub.status IN ('canceled', 'incomplete_expired') AND v_status <> sub.status THEN
        outcome := 'rejected';
        why := format('subscription is %s: final', sub.status);
    ELSIF ev.stripe_created = sub.last_event_at
          AND tollgate.subscription_progress(v_status) < tollgate.subscription_progress(sub.status) THEN
        outcome := 'stale';
        why := format('same second as %s and earlier in the lifecycle than %s', sub.last_event_id, sub.status);
    ELSE
        UPDATE tollgate.subscriptions
        SET status = v_status, plan = coalesce(v_plan, subscriptions.plan),
            current_period_end = coalesce(v_ends, subscriptions.current_period_end),
            last_event_id = ev.id, last_event_at = ev.stripe_created
        WHERE id = sub.id;
    END IF;
    UPDATE tollgate.payment_events
    SET state = outcome, note = why, processed_at = now(), account_uuid = acct, subscription_id = sub.id
    WHERE id = ev.id;
    RETURN outcome;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.subscriptions_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.account_uuid, NEW.stripe_id, NEW.created_at)
           IS DISTINCT FROM (OLD.id, OLD.account_uuid, OLD.stripe_id, OLD.created_at) THEN
            RAISE EXCEPTION 'subscription %: its identity never changes', OLD.stripe_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'subscriptions_identity_immutable';
        END IF;
        IF NEW.last_event_at < OLD.last_event_at THEN
            RAISE EXCEPTION 'subscription %: the last applied event cannot move back', OLD.stripe_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'subscriptions_last_event_forward';
        END IF;
        NEW.updated_at := now();
        IF NEW.status IS DISTINCT FROM OLD.status THEN
            PERFORM tollgate.audit(NEW.account_uuid, 'subscription', NEW.stripe_id, 'status_changed',
                                   OLD.status::text, NEW.status::text);
        END IF;
    ELSE
        NEW.created_at := now();
        NEW.updated_at := now();
        PERFORM tollgate.audit(NEW.account_uuid, 'subscription', NEW.stripe_id, 'created', NULL,
                               NEW.status::text);
    END IF;
    RETURN NEW;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.subscriptions ---

CREATE OR REPLACE TRIGGER subscriptions_10_changed
    BEFORE INSERT OR UPDATE ON tollgate.subscriptions
    FOR EACH ROW EXECUTE FUNCTION tollgate.subscriptions_changed();
