-- Payment intents: the status machine, early and stale Stripe events, audit and outbox.
--
-- Flow of a status change, whoever makes it (api function or direct UPDATE in psql):
--   BEFORE INSERT  payment_intents_05_lock           lock the Stripe id; start in an initial status
--   BEFORE UPDATE  payment_intents_10_keep_columns   identity and money never change
--   BEFORE UPDATE  payment_intents_20_transition     only rows of payment_transitions pass (TG010)
--   BEFORE UPDATE  payment_intents_25_event_clock    the last applied event only moves forward
--   AFTER          payment_intents_50_status_changed audit row; outbox row on succeeded/refunded
--   AFTER INSERT   outbox_notify                     pg_notify(payment_settled | payment_refunded)

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
-- Outbox
-- ---------------------------------------------------------------------------------------------

-- Announce a change: a durable outbox row, in the caller's transaction.
CREATE OR REPLACE FUNCTION tollgate.emit(p_account_id uuid, p_topic text, p_payload jsonb)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO tollgate.outbox (account_id, topic, payload)
    VALUES (p_account_id, p_topic, p_payload)
    RETURNING id
$$;

-- Every outbox row wakes listeners of the channel named after its topic (payment.settled ->
-- payment_settled). NOTIFY is delivered on commit, so listeners never see a rolled-back change.
-- The payload carries ids only: anyone can send a NOTIFY statement on any channel, so a
-- listener reads the outbox row it names (id and event id) instead of trusting the message.
-- SECURITY DEFINER: pg_notify is the owner's alone (db/sql/90-grants.sql).
CREATE OR REPLACE FUNCTION tollgate.outbox_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify(
        replace(NEW.topic, '.', '_'),
        jsonb_build_object('outbox_id', NEW.id, 'event_id', NEW.event_id, 'topic', NEW.topic,
                           'account_id', NEW.account_id)::text);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER outbox_notify
    AFTER INSERT ON tollgate.outbox
    FOR EACH ROW EXECUTE FUNCTION tollgate.outbox_notify();
CREATE OR REPLACE TRIGGER outbox_append_only
    BEFORE UPDATE OR DELETE ON tollgate.outbox
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
CREATE OR REPLACE TRIGGER outbox_no_truncate
    BEFORE TRUNCATE ON tollgate.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();
CREATE OR REPLACE TRIGGER outbox_written_by_triggers
    BEFORE INSERT ON tollgate.outbox
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_direct_insert();

-- The status machine is reference data: it changes only in migrations.
CREATE OR REPLACE TRIGGER payment_statuses_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.payment_statuses
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');
CREATE OR REPLACE TRIGGER payment_statuses_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.payment_statuses
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');
CREATE OR REPLACE TRIGGER payment_transitions_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.payment_transitions
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');
CREATE OR REPLACE TRIGGER payment_transitions_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.payment_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

-- ---------------------------------------------------------------------------------------------
-- Payment intents
-- ---------------------------------------------------------------------------------------------

-- A payment is recorded as Stripe has just created it; every later status comes from events.
CREATE OR REPLACE FUNCTION tollgate.payment_intents_before_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.lock_stripe_object(NEW.stripe_id);
    IF NOT (SELECT s.is_initial FROM tollgate.payment_statuses s WHERE s.status = NEW.status) THEN
        RAISE EXCEPTION 'a payment cannot be recorded as %: it starts as Stripe creates it', NEW.status
            USING ERRCODE = 'TG010', CONSTRAINT = 'payment_initial_status',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'status';
    END IF;
    NEW.created_at := now();
    NEW.updated_at := now();
    NEW.last_event_id := NULL;
    NEW.last_event_at := NULL;
    NEW.amount_refunded := 0;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.payment_event_clock() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Event order is what keeps stale events out: it never goes back, nor into the future.
    IF NEW.last_event_at IS DISTINCT FROM OLD.last_event_at
       AND (NEW.last_event_at IS NULL OR NEW.last_event_at < OLD.last_event_at
            OR NEW.last_event_at > now() + tollgate.max_clock_skew()) THEN
        RAISE EXCEPTION 'payment %: the last applied event cannot move from % to %', OLD.id,
                OLD.last_event_at, NEW.last_event_at
            USING ERRCODE = 'TG011', CONSTRAINT = 'payment_intents_last_event_forward',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'last_event_at';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.payment_status_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_status text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.status = NEW.status THEN
            RETURN NULL;
        END IF;
        old_status := OLD.status::text;
    END IF;
    PERFORM tollgate.audit(NEW.account_id, 'payment_intent', NEW.id::text,
                           CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'status_changed' END,
                           old_status, NEW.status::text);
    IF NEW.status IN ('succeeded', 'refunded') THEN
        PERFORM tollgate.emit(
            NEW.account_id,
            CASE NEW.status WHEN 'succeeded' THEN 'payment.settled' ELSE 'payment.refunded' END,
            jsonb_build_object('payment_id', NEW.id, 'stripe_id', NEW.stripe_id,
                               'amount', NEW.amount, 'currency', NEW.currency,
                               'purpose', NEW.purpose));
    END IF;
    RETURN NULL;
END
$$;

-- Events that arrived before their payment intent row are applied as soon as it appears,
-- oldest first.
CREATE OR REPLACE FUNCTION tollgate.apply_pending_payment_events() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev record;
BEGIN
    FOR ev IN
        SELECT e.id
        FROM tollgate.payment_events e
        JOIN tollgate.payment_statuses s ON s.status = e.target_status
        WHERE e.stripe_object_id = NEW.stripe_id AND e.state = 'pending'
        ORDER BY e.stripe_created, s.progress, e.received_at, e.id
    LOOP
        PERFORM tollgate.apply_payment_event(ev.id);
    END LOOP;
    -- Then its partial refunds and disputes (tollgate.apply_charge_event, 65-refunds.sql).
    FOR ev IN
        SELECT e.id FROM tollgate.payment_events e
        WHERE e.stripe_object_id = NEW.stripe_id AND e.state = 'pending' AND e.target_status IS NULL
        ORDER BY e.stripe_created, e.received_at, e.id
    LOOP
        PERFORM tollgate.apply_charge_event(ev.id);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER payment_intents_05_lock
    BEFORE INSERT ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_intents_before_insert();
CREATE OR REPLACE TRIGGER payment_intents_10_keep_columns
    BEFORE UPDATE ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'account_id', 'stripe_id', 'amount', 'currency', 'purpose', 'description',
        'idempotency_key', 'created_at');
CREATE OR REPLACE TRIGGER payment_intents_20_transition
    BEFORE UPDATE ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.check_transition('payment_transitions', 'payment');
CREATE OR REPLACE TRIGGER payment_intents_25_event_clock
    BEFORE UPDATE ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_event_clock();
CREATE OR REPLACE TRIGGER payment_intents_50_status_changed
    AFTER INSERT OR UPDATE OF status ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_status_changed();
CREATE OR REPLACE TRIGGER payment_intents_60_apply_pending_events
    AFTER INSERT ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.apply_pending_payment_events();
CREATE OR REPLACE TRIGGER payment_intents_no_delete
    BEFORE DELETE ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
CREATE OR REPLACE TRIGGER payment_intents_no_truncate
    BEFORE TRUNCATE ON tollgate.payment_intents
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- ---------------------------------------------------------------------------------------------
-- Stripe events
-- ---------------------------------------------------------------------------------------------

-- Apply one stored event to its payment intent, if the intent exists. Returns the event's
-- state afterwards:
--   pending  - the intent is not known yet (applied later by apply_pending_payment_events);
--   stale    - created before the last event applied, or in the same second and asking for a
--              refused move back in the lifecycle: it never moves the status;
--   applied  - the status moved, or already was the event's;
--   rejected - the move is not in payment_transitions (e.g. canceled -> succeeded).
-- Stripe stamps events to the second, so two events of one second are not ordered: an allowed
-- move between them is applied (a card declined in the second the intent was created).
-- A full refund of a payment not yet seen as succeeded implies the success: both are applied.
-- The caller must hold tollgate.lock_stripe_object for the event's object.
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

CREATE OR REPLACE FUNCTION tollgate.apply_payment_event(p_event_id text)
RETURNS tollgate.event_state
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev          tollgate.payment_events;
    pi          tollgate.payment_intents;
    cur_rank    smallint;
    new_rank    smallint;
    outcome     tollgate.event_state;
    why         text;
    prev_actor  text := current_setting('tollgate.actor', true);
BEGIN
    SELECT * INTO STRICT ev FROM tollgate.payment_events WHERE id = p_event_id FOR UPDATE;
    IF ev.state <> 'pending' THEN
        RETURN ev.state;
    END IF;
    SELECT * INTO pi FROM tollgate.payment_intents WHERE stripe_id = ev.stripe_object_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'pending';
    END IF;

    PERFORM tollgate.set_actor('stripe:' || ev.id);
    SELECT progress INTO cur_rank FROM tollgate.payment_statuses WHERE status = pi.status;
    SELECT progress INTO new_rank FROM tollgate.payment_statuses WHERE status = ev.target_status;

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
    ELSIF ev.stripe_created = pi.last_event_at AND new_rank < cur_rank THEN
        outcome := 'stale';
        why := format('same second as %s and earlier in the lifecycle than %s', pi.last_event_id,
                      pi.status);
    ELSE
        outcome := 'rejected';
        why := format('%s -> %s is not an allowed transition', pi.status, ev.target_status);
    END IF;

    UPDATE tollgate.payment_events
    SET state = outcome, note = why, processed_at = now(),
        account_id = pi.account_id, payment_intent_id = pi.id
    WHERE id = ev.id;
    PERFORM tollgate.set_actor(coalesce(prev_actor, ''));
    RETURN outcome;
END
$$;

-- The inbox keeps what Stripe sent. An event is stored pending (or ignored); it leaves
-- pending once, linked to the payment its Stripe id names; after that nothing changes.
CREATE OR REPLACE FUNCTION tollgate.payment_events_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    linked tollgate.payment_intents;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state NOT IN ('pending', 'ignored') OR NEW.payment_intent_id IS NOT NULL THEN
            RAISE EXCEPTION 'payment event % must be stored pending or ignored, unlinked', NEW.id
                USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_stored_pending',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'state';
        END IF;
        NEW.received_at := now();
        RETURN NEW;
    END IF;
    IF OLD.state <> 'pending' THEN
        RAISE EXCEPTION 'payment event % is % already', OLD.id, OLD.state
            USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_state_final',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'state';
    END IF;
    IF NEW.state IN ('applied', 'stale', 'rejected') AND NEW.subscription_id IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM tollgate.subscriptions s
                       WHERE s.id = NEW.subscription_id AND s.stripe_id = NEW.stripe_object_id
                         AND s.account_id = NEW.account_id) THEN
            RAISE EXCEPTION 'subscription event % must be linked to the subscription % and its account',
                    OLD.id, OLD.stripe_object_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_linked',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'subscription_id';
        END IF;
    ELSIF NEW.state IN ('applied', 'stale', 'rejected') THEN
        SELECT * INTO linked FROM tollgate.payment_intents WHERE id = NEW.payment_intent_id;
        IF NOT FOUND OR linked.stripe_id IS DISTINCT FROM NEW.stripe_object_id
           OR linked.account_id IS DISTINCT FROM NEW.account_id THEN
            RAISE EXCEPTION 'payment event % must be linked to the payment % and its account',
                    OLD.id, OLD.stripe_object_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'payment_events_linked',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'payment_intent_id';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER payment_events_10_keep_columns
    BEFORE UPDATE ON tollgate.payment_events
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'type', 'stripe_object_id', 'target_status', 'stripe_created', 'payload',
        'received_at', 'account_id?', 'payment_intent_id?', 'subscription_id?', 'processed_at?');
CREATE OR REPLACE TRIGGER payment_events_20_guard
    BEFORE INSERT OR UPDATE ON tollgate.payment_events
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_events_guard();
CREATE OR REPLACE TRIGGER payment_events_no_delete
    BEFORE DELETE ON tollgate.payment_events
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
CREATE OR REPLACE TRIGGER payment_events_no_truncate
    BEFORE TRUNCATE ON tollgate.payment_events
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER idempotency_keys_10_keep_columns
    BEFORE UPDATE ON tollgate.idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns(
        'account_id', 'key', 'request_hash', 'request', 'payment_id', 'created_at',
        'response?', 'completed_at?');
