-- The Stripe webhook inbox: every event received, once per event id, and how it is applied.
--
-- An event moves the payment (or subscription) it is about to the status it reports, through
-- the same UPDATE anyone else would make, so the payment's triggers judge it. An event that
-- arrives before its payment is recorded waits (pending) and is applied when the payment row
-- appears; an event older than the last one applied is kept as stale; a move the status
-- machine refuses is kept as rejected.
--
-- Store, then apply. A webhook verifies the signature and stores the event as received, and
-- nothing else (api.ingest_stripe_webhook_v1, 41-webhook-signatures.sql: one insert, a NOTIFY
-- on tollgate_stripe_events, commit). api.apply_stripe_events_v1 applies received events in
-- batches, oldest first, one transaction per batch, by the rules above; the applier that calls
-- it runs in every API worker and as `tollgate apply-events` (api/applier.py). A batch that
-- dies with its process rolls back whole: its events are received again, for the next one.
-- api.ingest_stripe_event_v1 stores and applies one event at once (`tollgate reconcile`).

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TYPE tollgate.event_state AS ENUM (
    'received',  -- stored by the webhook, not looked at yet: the next applier batch takes it
    'pending',   -- looked at; its payment intent is not known yet. Applied when the row appears.
    'applied',   -- moved the payment to the event's status (or confirmed it was there)
    'stale',     -- older than the last event applied to the payment: kept, not applied
    'rejected',  -- the status change it asks for is not allowed (e.g. canceled -> succeeded)
    'ignored'    -- a type Tollgate does not act on
);

CREATE TABLE tollgate.payment_events (
    id                 text        PRIMARY KEY CONSTRAINT payment_events_id_format CHECK (id ~ '^evt_[A-Za-z0-9_]{1,250}$'),
    -- NULL until the event is matched to a payment (the account is not known before).
    account_uuid         uuid        CONSTRAINT payment_events_account_uuid_fkey REFERENCES tollgate.accounts,
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
    -- The subscription a customer.subscription.* event is about.
    subscription_id    uuid        CONSTRAINT payment_events_subscription_id_fkey REFERENCES tollgate.subscriptions,
    -- processed_at: when the event reached its final state (applied, stale, rejected, ignored).
    CONSTRAINT payment_events_processed_when_final CHECK ((processed_at IS NULL) = (state IN ('received', 'pending'))),
    CONSTRAINT payment_events_matched_has_account
        CHECK ((payment_intent_id IS NULL AND subscription_id IS NULL) OR account_uuid IS NOT NULL),
    CONSTRAINT payment_events_one_subject CHECK (payment_intent_id IS NULL OR subscription_id IS NULL)
);

-- Early events waiting for their payment intent.
CREATE INDEX payment_events_pending_idx ON tollgate.payment_events (stripe_object_id) WHERE state = 'pending';
CREATE INDEX payment_events_payment_intent_idx ON tollgate.payment_events (payment_intent_id);
-- The applier's queue: received events in arrival order.
CREATE INDEX payment_events_received_idx ON tollgate.payment_events (received_at, id) WHERE state = 'received';

COMMENT ON TABLE tollgate.payment_events IS 'Every Stripe webhook event received, once per event id.';

-- Retention (89-retention.sql) finds old events by arrival time: a BRIN index, a few pages for
-- the whole table, so a webhook's insert pays almost nothing for it.
CREATE INDEX payment_events_received_at_brin ON tollgate.payment_events USING brin (received_at);

-- Events in a final state (processed_at set) older than the retention horizon, moved here by
-- retention.archive_batch('payment_events', ...) and by nothing else. Same columns as
-- payment_events; the primary key keeps every archived id, so a replayed or reconciled event
-- is still recognised as a duplicate, however old (tollgate.store_stripe_event looks here too).
CREATE TABLE tollgate.payment_events_archive (
    id                 text        CONSTRAINT payment_events_archive_pkey PRIMARY KEY,
    account_uuid         uuid        CONSTRAINT payment_events_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    type               text        NOT NULL,
    stripe_object_id   text,
    target_status      tollgate.payment_status,
    stripe_created     timestamptz NOT NULL,
    payload            jsonb       NOT NULL,
    state              tollgate.event_state NOT NULL,
    note               text,
    payment_intent_id  uuid,
    received_at        timestamptz NOT NULL,
    processed_at       timestamptz NOT NULL,
    subscription_id    uuid
);

CREATE INDEX payment_events_archive_payment_intent_idx ON tollgate.payment_events_archive (payment_intent_id);

COMMENT ON TABLE tollgate.payment_events_archive IS
    'Stripe events in a final state moved out of payment_events by retention; append-only.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- How far ahead of this server's clock a Stripe event's creation time may be.
CREATE OR REPLACE FUNCTION tollgate.max_clock_skew() RETURNS interval
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '1 hour' $$;

-- Serialises everything about one Stripe PaymentIntent: ingesting its events and inserting its
-- row. Without it an early event and the row could each commit without seeing the other.
CREATE OR REPLACE FUNCTION tollgate.lock_stripe_object(p_stripe_id text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('tollgate:stripe:' || p_stripe_id, 0))
$$;

-- A Stripe PaymentIntent status as Tollgate's enum; NULL for one Tollgate does not know.
CREATE OR REPLACE FUNCTION tollgate.payment_status_from_stripe(p_status text)
RETURNS tollgate.payment_status
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.status FROM tollgate.payment_statuses s WHERE s.status::text = p_status
$$;

-- ---------------------------------------------------------------------------------------------
-- Stripe events
-- ---------------------------------------------------------------------------------------------

-- Why an event's PaymentIntent or Charge is not the payment's, or NULL when it is: the
-- PaymentIntent's metadata must name the payment, and the money must be the payment's (its
-- currency, its amount and, once it succeeded, amount_received, each read in Stripe's units
-- for the currency: tollgate.from_stripe_amount). A field the event leaves out is not
-- compared.
CREATE OR REPLACE FUNCTION tollgate.stripe_amount_mismatch(p_object jsonb, p_payment tollgate.payment_intents)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    field text;
BEGIN
    -- Stripe sends every PaymentIntent with its metadata, where Tollgate put the payment's id
    -- when it created it: one that names no payment, or another, is not this payment's (a
    -- PaymentIntent of another integration cannot be claimed by recording its id).
    IF p_object ->> 'object' = 'payment_intent' AND p_object ? 'metadata'
       AND (p_object -> 'metadata' ->> 'tollgate_payment_id') IS DISTINCT FROM p_payment.id::text THEN
        RETURN format('the PaymentIntent''s metadata names payment %s, not %s',
                      coalesce(p_object -> 'metadata' ->> 'tollgate_payment_id', 'none'), p_payment.id);
    END IF;
    IF jsonb_typeof(p_object -> 'currency') = 'string'
       AND upper(p_object ->> 'currency') <> p_payment.currency THEN
        RETURN format('Stripe says currency %s, the payment is in %s',
                      upper(p_object ->> 'currency'), p_payment.currency);
    END IF;
    FOREACH field IN ARRAY ARRAY['amount', 'amount_received'] LOOP
        CONTINUE WHEN jsonb_typeof(p_object -> field) IS DISTINCT FROM 'number';
        -- amount_received is 0 until the money arrives.
        CONTINUE WHEN field = 'amount_received' AND (p_object ->> field)::numeric = 0;
        IF tollgate.from_stripe_amount((p_object ->> field)::numeric, p_payment.currency)
           IS DISTINCT FROM p_payment.amount::bigint THEN
            RETURN format('Stripe says %s %s (its units), the payment is %s %s', field,
                          p_object ->> field, tollgate.format_minor(p_payment.amount, p_payment.currency),
                          p_payment.currency);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Apply one stored (received or pending) event to its payment intent, if the intent exists.
-- Returns the event's state afterwards:
--   pending  - the intent is not known yet (applied later by apply_pending_payment_events);
--   stale    - created before the last event applied, or in the same second and asking for a
--              refused move back in the lifecycle: it never moves the status;
--   applied  - the status moved, or already was the event's;
--   rejected - the move is not in payment_transitions (e.g. canceled -> succeeded).
-- Stripe stamps events to the second, so two events of one second are not ordered: an allowed
-- move between them is applied (a card declined in the second the intent was created).
-- A full refund of a payment not yet seen as succeeded implies the success: both are applied.
-- The caller must hold tollgate.lock_stripe_object for the event's object.
CREATE OR REPLACE FUNCTION tollgate.apply_payment_event(p_event_id text)
RETURNS tollgate.event_state
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev          tollgate.payment_events;
    pi          tollgate.payment_intents;
    outcome     tollgate.event_state;
    why         text;
    prev_actor  text := current_setting('tollgate.actor', true);
BEGIN
    SELECT * INTO STRICT ev FROM tollgate.payment_events WHERE id = p_event_id FOR UPDATE;
    IF ev.state NOT IN ('received', 'pending') THEN
        RETURN ev.state;
    END IF;
    SELECT * INTO pi FROM tollgate.payment_intents WHERE stripe_id = ev.stripe_object_id FOR UPDATE;
    IF NOT FOUND THEN
        IF ev.state = 'received' THEN
            UPDATE tollgate.payment_events SET state = 'pending' WHERE id = ev.id;
        END IF;
        RETURN 'pending';
    END IF;

    -- As tollgate.set_actor, without a function call of its own (this runs per event).
    PERFORM set_config('tollgate.actor', 'stripe:' || ev.id, true);

    why := tollgate.stripe_amount_mismatch(ev.payload -> 'data' -> 'object', pi);
    IF why IS NOT NULL THEN
        outcome := 'rejected';
    ELSIF ev.stripe_created < pi.last_event_at THEN
        outcome := 'stale';
        why := format('older than %s (%s), already applied', pi.last_event_id, pi.last_event_at);
    ELSIF ev.target_status = pi.status
          OR EXISTS (SELECT FROM tollgate.payment_transitions
                     WHERE from_status = pi.status AND to_status = ev.target_status) THEN
        UPDATE tollgate.payment_intents
        SET status = ev.target_status, last_event_id = ev.id,
            last_event_at = greatest(ev.stripe_created, pi.last_event_at)
        WHERE id = pi.id;
        outcome := 'applied';
    ELSIF ev.target_status = 'refunded' AND EXISTS (
        SELECT FROM tollgate.payment_transitions
        WHERE from_status = pi.status AND to_status = 'succeeded'
    ) THEN
        UPDATE tollgate.payment_intents SET status = 'succeeded' WHERE id = pi.id;
        UPDATE tollgate.payment_intents
        SET status = 'refunded', last_event_id = ev.id,
            last_event_at = greatest(ev.stripe_created, pi.last_event_at)
        WHERE id = pi.id;
        outcome := 'applied';
        why := format('a full refund implies the payment succeeded (was %s)', pi.status);
    ELSIF ev.stripe_created = pi.last_event_at
          AND (SELECT s.progress FROM tollgate.payment_statuses s WHERE s.status = ev.target_status)
              < (SELECT s.progress FROM tollgate.payment_statuses s WHERE s.status = pi.status) THEN
        outcome := 'stale';
        why := format('same second as %s and earlier in the lifecycle than %s', pi.last_event_id,
                      pi.status);
    ELSE
        outcome := 'rejected';
        why := format('%s -> %s is not an allowed transition', pi.status, ev.target_status);
    END IF;

    UPDATE tollgate.payment_events
    SET state = outcome, note = why, processed_at = now(),
        account_uuid = pi.account_uuid, payment_intent_id = pi.id
    WHERE id = ev.id;
    PERFORM set_config('tollgate.actor', coalesce(prev_actor, ''), true);
    RETURN outcome;
END
$$;

-- The inbox keeps what Stripe sent. An event is stored received (or ignored); it becomes
-- pending (its payment is not known yet) or final once, and a pending one final once, linked to
-- the payment its Stripe id names; after that nothing changes, and nothing is received again.
CREATE OR REPLACE FUNCTION tollgate.payment_events_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    linked tollgate.payment_intents;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state NOT IN ('received', 'pending', 'ignored') OR NEW.payment_intent_id IS NOT NULL THEN
            RAISE EXCEPTION 'payment event % must be stored received, pending or ignored, unlinked', NEW.id
                USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_stored_pending',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'state';
        END IF;
        NEW.received_at := now();
        RETURN NEW;
    END IF;
    IF OLD.state NOT IN ('received', 'pending')
       OR (NEW.state = 'received' AND OLD.state <> 'received') THEN
        RAISE EXCEPTION 'payment event % is % already', OLD.id, OLD.state
            USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_state_final',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'state';
    END IF;
    IF NEW.state IN ('applied', 'stale', 'rejected') AND NEW.subscription_id IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM tollgate.subscriptions s
                       WHERE s.id = NEW.subscription_id AND s.stripe_id = NEW.stripe_object_id
                         AND s.account_uuid = NEW.account_uuid) THEN
            RAISE EXCEPTION 'subscription event % must be linked to the subscription % and its account',
                    OLD.id, OLD.stripe_object_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_linked',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'subscription_id';
        END IF;
    ELSIF NEW.state IN ('applied', 'stale', 'rejected') THEN
        SELECT * INTO linked FROM tollgate.payment_intents WHERE id = NEW.payment_intent_id;
        IF NOT FOUND OR linked.stripe_id IS DISTINCT FROM NEW.stripe_object_id
           OR linked.account_uuid IS DISTINCT FROM NEW.account_uuid THEN
            RAISE EXCEPTION 'payment event % must be linked to the payment % and its account',
                    OLD.id, OLD.stripe_object_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_linked',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'payment_intent_id';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Stripe events (webhooks arrive through api.ingest_stripe_webhook_v1, db/sql/41, which verifies
-- the signature first; only owner-side callers such as `tollgate reconcile stripe` call this directly)
-- ---------------------------------------------------------------------------------------------

-- What a Stripe event is about, for api.ingest_stripe_event_v1 (its shape checked already):
-- object_id, the Stripe object whose lock it takes and that it is about (a PaymentIntent, or a
-- subscription), and how it is applied: target, the PaymentIntent status it reports
-- (tollgate.apply_payment_event); is_sub (tollgate.apply_subscription_event); is_charge, a
-- partial refund, a refund or a dispute (tollgate.apply_charge_event). None of them: it is
-- ignored, and why says why.
CREATE OR REPLACE FUNCTION tollgate.classify_stripe_event(
    p_event jsonb, OUT object_id text, OUT target tollgate.payment_status,
    OUT is_sub boolean, OUT is_charge boolean, OUT why text
)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    obj     jsonb := p_event -> 'data' -> 'object';
    ev_type text := p_event ->> 'type';
BEGIN
    is_sub := false;
    is_charge := false;
    IF ev_type LIKE 'payment\_intent.%' AND obj ->> 'object' = 'payment_intent'
       AND jsonb_typeof(obj -> 'id') = 'string' THEN
        object_id := obj ->> 'id';
        target := tollgate.payment_status_from_stripe(obj ->> 'status');
        IF target IS NULL THEN
            why := format('unknown PaymentIntent status %L', obj ->> 'status');
        END IF;
    ELSIF ev_type = 'charge.refunded' AND obj ->> 'object' = 'charge'
          AND jsonb_typeof(obj -> 'payment_intent') = 'string' THEN
        object_id := obj ->> 'payment_intent';
        IF obj -> 'refunded' = 'true'::jsonb THEN
            target := 'refunded';
        ELSE
            is_charge := true;
        END IF;
    ELSIF ev_type IN ('refund.created', 'refund.updated', 'refund.failed', 'charge.refund.updated',
                      'charge.dispute.created', 'charge.dispute.updated', 'charge.dispute.closed')
          AND obj ->> 'object' IN ('refund', 'dispute')
          AND jsonb_typeof(obj -> 'payment_intent') = 'string' THEN
        object_id := obj ->> 'payment_intent';
        is_charge := true;
    ELSIF ev_type LIKE 'customer.subscription.%' AND obj ->> 'object' = 'subscription'
          AND jsonb_typeof(obj -> 'id') = 'string' AND obj ->> 'id' ~ '^sub_[A-Za-z0-9_]{1,250}$' THEN
        object_id := obj ->> 'id';
        is_sub := true;
    ELSE
        why := format('Tollgate does not act on %s events', ev_type);
    END IF;
    IF is_sub AND to_timestamp((p_event ->> 'created')::double precision) > now() + tollgate.max_clock_skew() THEN
        is_sub := false;
        why := 'created in the future: not applied';
    ELSIF is_charge AND object_id !~ '^pi_[A-Za-z0-9_]{1,250}$' THEN
        is_charge := false;
        why := format('%L is not a PaymentIntent id', left(object_id, 300));
    ELSIF is_charge AND to_timestamp((p_event ->> 'created')::double precision) > now() + tollgate.max_clock_skew() THEN
        is_charge := false;
        why := 'created in the future: not applied';
    ELSIF target IS NOT NULL AND object_id IS NULL THEN
        target := NULL;
        why := 'the event names no PaymentIntent';
    ELSIF target IS NOT NULL AND object_id !~ '^pi_[A-Za-z0-9_]{1,250}$' THEN
        target := NULL;
        why := format('%L is not a PaymentIntent id', left(object_id, 300));
    ELSIF target IS NOT NULL
          AND to_timestamp((p_event ->> 'created')::double precision) > now() + tollgate.max_clock_skew() THEN
        target := NULL;
        why := 'created in the future: not applied';
    END IF;
END
$$;

-- Store a Stripe event once, as received (or ignored: a type Tollgate does not act on, kept
-- with the reason), and nothing else. stored is false when its id was stored before: the
-- primary key answers (or the archive's, for an event retention moved there), and nothing is
-- written. The event's shape is checked first (TG030). The retention lock, taken shared, keeps
-- a batch of retention from moving this id between the archive lookup and the insert.
CREATE OR REPLACE FUNCTION tollgate.store_stripe_event(
    p_event jsonb, OUT stored boolean, OUT state tollgate.event_state, OUT object_id text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    obj        jsonb := p_event -> 'data' -> 'object';
    target     tollgate.payment_status;
    is_sub     boolean;
    is_charge  boolean;
    why        text;
BEGIN
    IF jsonb_typeof(p_event) IS DISTINCT FROM 'object'
       OR jsonb_typeof(p_event -> 'id') IS DISTINCT FROM 'string'
       OR jsonb_typeof(p_event -> 'type') IS DISTINCT FROM 'string'
       OR jsonb_typeof(p_event -> 'created') IS DISTINCT FROM 'number'
       OR jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'not a Stripe event: expected string id and type, numeric created, object data.object'
            USING ERRCODE = 'TG030', CONSTRAINT = 'stripe_event_shape';
    END IF;
    SELECT * INTO object_id, target, is_sub, is_charge, why FROM tollgate.classify_stripe_event(p_event);
    state := CASE WHEN target IS NULL AND NOT is_sub AND NOT is_charge THEN 'ignored' ELSE 'received' END;

    PERFORM pg_advisory_xact_lock_shared(hashtextextended('tollgate:retention:payment_events', 0));
    IF EXISTS (SELECT FROM tollgate.payment_events_archive a WHERE a.id = p_event ->> 'id') THEN
        stored := false;
        RETURN;
    END IF;
    INSERT INTO tollgate.payment_events
        (id, type, stripe_object_id, target_status, stripe_created, payload, state, note, processed_at)
    VALUES (p_event ->> 'id', p_event ->> 'type', object_id, target,
            to_timestamp((p_event ->> 'created')::double precision), p_event, state, why,
            CASE WHEN state = 'ignored' THEN now() END)
    ON CONFLICT ON CONSTRAINT payment_events_pkey DO NOTHING;
    stored := FOUND;
END
$$;

-- Apply one received event, under the lock of the Stripe object it is about: a payment event
-- by tollgate.apply_payment_event, a customer.subscription.* event by
-- tollgate.apply_subscription_event, a partial refund, refund or dispute by
-- tollgate.apply_charge_event. Returns its state afterwards (pending: its payment intent is not
-- known yet). An event already looked at is left as it is.
CREATE OR REPLACE FUNCTION tollgate.apply_received_event(p_event_id text)
RETURNS tollgate.event_state
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev record;
BEGIN
    -- Not the payload: the function that applies the event reads it.
    SELECT e.id, e.state, e.stripe_object_id, e.target_status, e.type INTO STRICT ev
    FROM tollgate.payment_events e WHERE e.id = p_event_id;
    IF ev.state <> 'received' THEN
        RETURN ev.state;
    END IF;
    PERFORM tollgate.lock_stripe_object(ev.stripe_object_id);
    IF ev.target_status IS NOT NULL THEN
        RETURN tollgate.apply_payment_event(ev.id);
    ELSIF ev.type LIKE 'customer.subscription.%' THEN
        RETURN tollgate.apply_subscription_event(ev.id);
    END IF;
    -- apply_charge_event takes pending events (as apply_pending_payment_events hands it).
    UPDATE tollgate.payment_events SET state = 'pending' WHERE id = ev.id;
    RETURN tollgate.apply_charge_event(ev.id);
END
$$;

-- Store a Stripe event once and apply it at once (owner-side callers: `tollgate reconcile
-- stripe`; webhooks store only, see api.ingest_stripe_webhook_v1). Outcomes: duplicate (this
-- event id was stored before; nothing happens), ignored (a type Tollgate does not act on),
-- pending (its payment intent is not known yet), applied, stale, rejected (see
-- tollgate.apply_payment_event and, for customer.subscription.* events,
-- tollgate.apply_subscription_event; for partial refunds, refund.* and charge.dispute.* events,
-- tollgate.apply_charge_event).
CREATE OR REPLACE FUNCTION api.ingest_stripe_event_v1(p_event jsonb)
RETURNS TABLE (outcome text, event_id text, payment_id uuid, payment_status text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    saved   record;
    ev_id   text := p_event ->> 'id';
    state   tollgate.event_state;
BEGIN
    SELECT * INTO STRICT saved FROM tollgate.store_stripe_event(p_event);
    IF NOT saved.stored THEN
        RETURN QUERY SELECT 'duplicate'::text, r.event_id, r.payment_id, r.payment_status
                     FROM tollgate.stripe_event_receipt(ev_id) r;
        RETURN;
    END IF;
    state := CASE WHEN saved.state = 'received' THEN tollgate.apply_received_event(ev_id)
                  ELSE saved.state END;
    RETURN QUERY SELECT state::text, r.event_id, r.payment_id, r.payment_status
                 FROM tollgate.stripe_event_receipt(ev_id) r;
END
$$;

-- A stored event's id, and its payment and that payment's status once it is linked to one
-- (live or archived by retention).
CREATE OR REPLACE FUNCTION tollgate.stripe_event_receipt(p_event_id text)
RETURNS TABLE (event_id text, payment_id uuid, payment_status text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.id, e.payment_intent_id, p.status::text
    FROM (SELECT l.id, l.payment_intent_id FROM tollgate.payment_events l WHERE l.id = p_event_id
          UNION ALL
          SELECT a.id, a.payment_intent_id FROM tollgate.payment_events_archive a WHERE a.id = p_event_id) e
    LEFT JOIN tollgate.payment_intents p ON p.id = e.payment_intent_id
    LIMIT 1
$$;

-- ---------------------------------------------------------------------------------------------
-- Applying received events (the applier: api/applier.py)
-- ---------------------------------------------------------------------------------------------

-- Whether an error raised while applying one event may go away on a retry (a deadlock, a
-- serialization failure, a lock or statement timeout, the server shutting down): the batch is
-- then retried as it is, never given up.
CREATE OR REPLACE FUNCTION tollgate.transient_sqlstate(p_sqlstate text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT left(p_sqlstate, 2) IN ('40', '53', '57', '08') OR p_sqlstate = '55P03' $$;

-- Apply up to p_limit received events, oldest first (received_at, then id), in the caller's
-- transaction: one commit, one audit seal pass, one wake-up of outbox listeners per batch.
-- Returns how many events it looked at (fewer than p_limit: none was left when it started).
--
-- One batch runs at a time (a transaction-level advisory lock, waited for): so events are
-- applied in arrival order across appliers, and appliers never deadlock on each other's Stripe
-- objects. Claimed rows are also locked FOR UPDATE SKIP LOCKED. Whatever kills the batch
-- (its process, its connection, an error) rolls it back whole: its events stay received.
--
-- An event whose rules raise an error (not a transient one, see tollgate.transient_sqlstate)
-- would fail every batch that holds it. With p_isolate, each event is applied in a
-- subtransaction of its own and one that raises such an error is kept as ignored, its note
-- naming the error (the applier retries a failed batch this way); transient errors still fail
-- the batch. Without p_isolate, the batch spends no subtransactions.
CREATE OR REPLACE FUNCTION api.apply_stripe_events_v1(p_limit integer, p_isolate boolean)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev      record;
    n       integer := 0;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 5000 THEN
        RAISE EXCEPTION 'a batch applies 1 to 5000 events, not %', p_limit
            USING ERRCODE = 'check_violation', CONSTRAINT = 'apply_batch_size';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:stripe-applier', 0));
    FOR ev IN
        SELECT e.id FROM tollgate.payment_events e WHERE e.state = 'received'
        ORDER BY e.received_at, e.id LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    LOOP
        n := n + 1;
        IF NOT coalesce(p_isolate, false) THEN
            PERFORM tollgate.apply_received_event(ev.id);
            CONTINUE;
        END IF;
        BEGIN
            PERFORM tollgate.apply_received_event(ev.id);
        EXCEPTION WHEN OTHERS THEN
            IF tollgate.transient_sqlstate(SQLSTATE) THEN
                RAISE;
            END IF;
            UPDATE tollgate.payment_events
            SET state = 'ignored', processed_at = now(),
                note = format('not applied: %s (SQLSTATE %s)', SQLERRM, SQLSTATE)
            WHERE id = ev.id;
        END;
    END LOOP;
    RETURN n;
END
$$;

-- How many Stripe events wait for the applier, and since when (received_at of the oldest).
CREATE OR REPLACE FUNCTION tollgate.received_stripe_events(OUT waiting bigint, OUT oldest timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*), min(e.received_at) FROM tollgate.payment_events e WHERE e.state = 'received'
$$;

-- GET /v1/payments/{ref}: the payment as api.get_payment_v1 shows it (its status is what the
-- events applied so far made it), and how many Stripe events about it are stored but not
-- applied yet (received: the applier takes them within moments).
CREATE OR REPLACE FUNCTION api.get_payment_v2(p_api_key text, p_ref text)
RETURNS TABLE (id uuid, stripe_id text, account_id text, amount bigint, currency text, status text,
               purpose text, description text, created_at timestamptz, updated_at timestamptz,
               events_received integer)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT v.*,
           (SELECT count(*)::integer FROM tollgate.payment_events e
            WHERE e.state = 'received' AND e.stripe_object_id = v.stripe_id)
    FROM api.get_payment_v1(p_api_key, p_ref) v
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.payment_events ---

-- keep_columns (which turns each row into JSON) runs only when a kept column changed, or one
-- filled in once changes again: the event's payload is large, and every apply updates the row.
CREATE OR REPLACE TRIGGER payment_events_10_keep_columns
    BEFORE UPDATE ON tollgate.payment_events
    FOR EACH ROW
    WHEN ((NEW.id, NEW.type, NEW.stripe_object_id, NEW.target_status, NEW.stripe_created,
           NEW.payload, NEW.received_at)
          IS DISTINCT FROM (OLD.id, OLD.type, OLD.stripe_object_id, OLD.target_status,
                            OLD.stripe_created, OLD.payload, OLD.received_at)
          OR (OLD.account_uuid IS NOT NULL AND NEW.account_uuid IS DISTINCT FROM OLD.account_uuid)
          OR (OLD.payment_intent_id IS NOT NULL
              AND NEW.payment_intent_id IS DISTINCT FROM OLD.payment_intent_id)
          OR (OLD.subscription_id IS NOT NULL
              AND NEW.subscription_id IS DISTINCT FROM OLD.subscription_id)
          OR (OLD.processed_at IS NOT NULL AND NEW.processed_at IS DISTINCT FROM OLD.processed_at))
    EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'type', 'stripe_object_id', 'target_status', 'stripe_created', 'payload',
        'received_at', 'account_uuid?', 'payment_intent_id?', 'subscription_id?', 'processed_at?');

CREATE OR REPLACE TRIGGER payment_events_20_guard
    BEFORE INSERT OR UPDATE ON tollgate.payment_events
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_events_guard();

CREATE OR REPLACE TRIGGER payment_events_no_delete
    BEFORE DELETE ON tollgate.payment_events
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER payment_events_no_truncate
    BEFORE TRUNCATE ON tollgate.payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.payment_events_archive ---

CREATE OR REPLACE TRIGGER payment_events_archive_append_only
    BEFORE UPDATE OR DELETE ON tollgate.payment_events_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER payment_events_archive_moved
    AFTER INSERT ON tollgate.payment_events_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.archive_moves();

CREATE OR REPLACE TRIGGER payment_events_archive_no_truncate
    BEFORE TRUNCATE ON tollgate.payment_events_archive
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER payment_events_archive_written_by_retention
    BEFORE INSERT ON tollgate.payment_events_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'rows are archived by retention only');
