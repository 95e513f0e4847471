-- Payments: Stripe PaymentIntents created through Tollgate, their status machine, the
-- idempotency records of POST /v1/payments, and the api functions that create and read them.
--
-- A status changes only through an UPDATE the triggers below accept, whoever makes it (an api
-- function applying a Stripe event, or a direct UPDATE in psql): the identity and money of a
-- payment never change, only rows of payment_transitions pass (TG010), the last applied event
-- only moves forward, and every change is audited and announced. The Triggers section lists
-- every trigger on payment_intents in firing order, including those whose functions belong to
-- other concerns (reviews, transactions, refunds, entitlements).

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

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
-- other (SQLSTATE TG010, constraint name payment_transition_allowed).
CREATE TABLE tollgate.payment_transitions (
    from_status tollgate.payment_status NOT NULL,
    to_status   tollgate.payment_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT payment_transitions_not_to_self CHECK (from_status <> to_status),
    -- Terminal states stay terminal: no transition may start from one.
    CONSTRAINT payment_transitions_terminal_is_final CHECK (from_status NOT IN ('canceled', 'refunded'))
);

INSERT INTO tollgate.payment_transitions (from_status, to_status)
SELECT m.f::tollgate.payment_status, t.to_status::tollgate.payment_status
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
) AS m (f, ts), unnest(m.ts) AS t (to_status);

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

-- A row is written in the same transaction as the payment it creates, so a request that
-- failed (Stripe down, crash) leaves nothing and can be retried with the same key.
CREATE TABLE tollgate.idempotency_keys (
    account_uuid      uuid        NOT NULL CONSTRAINT idempotency_keys_account_uuid_fkey REFERENCES tollgate.accounts,
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
    PRIMARY KEY (account_uuid, key),
    CONSTRAINT idempotency_keys_completed_has_response CHECK ((completed_at IS NULL) = (response IS NULL))
);

CREATE TABLE tollgate.payment_intents (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid      uuid        NOT NULL CONSTRAINT payment_intents_account_uuid_fkey REFERENCES tollgate.accounts,
    stripe_id       text        NOT NULL
                    CONSTRAINT payment_intents_stripe_id_key UNIQUE
                    CONSTRAINT payment_intents_stripe_id_format CHECK (stripe_id ~ '^pi_[A-Za-z0-9_]{1,250}$'),
    amount          tollgate.payment_amount NOT NULL,
    currency        text        NOT NULL CONSTRAINT payment_intents_currency_fkey REFERENCES tollgate.currencies,
    status          tollgate.payment_status NOT NULL,
    -- The paid action this payment unlocks; NULL for a general payment.
    purpose         tollgate.purpose,
    description     tollgate.description,
    -- The Stripe event last applied, and its creation time: older events are stale.
    last_event_id   text,
    last_event_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The idempotency key of the request that created it.
    idempotency_key text,
    -- What Stripe has refunded of the payment (its charge's amount_refunded, in ISO minor
    -- units). Only grows; a payment refunded in full has refunded its whole amount.
    amount_refunded bigint      NOT NULL DEFAULT 0,
    CONSTRAINT payment_intents_idempotency_key_fkey
        FOREIGN KEY (account_uuid, idempotency_key) REFERENCES tollgate.idempotency_keys (account_uuid, key),
    CONSTRAINT payment_intents_amount_refunded_range
        CHECK (amount_refunded >= 0 AND amount_refunded <= amount)
);

-- can_continue reads the newest payment of an account (optionally for one purpose).
CREATE INDEX payment_intents_account_latest_idx ON tollgate.payment_intents (account_uuid, created_at DESC, id DESC);
CREATE INDEX payment_intents_account_purpose_latest_idx ON tollgate.payment_intents (account_uuid, purpose, created_at DESC, id DESC);

COMMENT ON TABLE tollgate.payment_intents IS 'Stripe PaymentIntents created through Tollgate, with their current status.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

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
    PERFORM tollgate.audit(NEW.account_uuid, 'payment_intent', NEW.id::text,
                           CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'status_changed' END,
                           old_status, NEW.status::text);
    IF NEW.status IN ('succeeded', 'refunded') THEN
        PERFORM tollgate.emit(
            NEW.account_uuid,
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

-- How a payment looks to API callers (also the body stored for idempotent replays).
CREATE OR REPLACE VIEW tollgate.payment_v1 AS
SELECT p.id,
       p.stripe_id,
       a.external_id      AS account_id,
       p.amount::bigint   AS amount,
       p.currency,
       p.status::text     AS status,
       p.purpose,
       p.description,
       p.created_at,
       p.updated_at
FROM tollgate.payment_intents p
JOIN tollgate.accounts a ON a.id = p.account_uuid;

-- ---------------------------------------------------------------------------------------------
-- Payments
-- ---------------------------------------------------------------------------------------------

-- Step 1 of POST /v1/payments, in the transaction that also runs step 2.
-- Claims the idempotency key for the account, or finds it claimed:
--   new request          -> replayed = false, and what the Stripe call needs;
--   same key, same body  -> replayed = true and the stored response;
--   same key, other body -> SQLSTATE TG020;
--   same key, still in progress in another transaction -> SQLSTATE TG021 at once (the caller
--                           retries shortly; nobody holds a connection waiting).
-- Money is checked before any Stripe call, by the same domain and table the payment row uses.
CREATE OR REPLACE FUNCTION api.begin_payment_v1(
    p_api_key text, p_idempotency_key text, p_account text, p_amount bigint,
    p_currency text, p_purpose text, p_description text, p_payment_method text
) RETURNS TABLE (replayed boolean, payment_id uuid, account_uuid uuid, amount bigint,
                 currency text, stripe_idempotency_key text, response jsonb)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k        tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct     tollgate.accounts := tollgate.account_for(k, p_account);
    req      jsonb;
    req_hash bytea;
    claim    tollgate.idempotency_keys;
BEGIN
    -- The domains and the currency table the payment row will be checked against.
    PERFORM p_amount::tollgate.payment_amount, p_purpose::tollgate.purpose,
            p_description::tollgate.description;
    IF NOT EXISTS (SELECT FROM tollgate.currencies c WHERE c.code = p_currency) THEN
        RAISE EXCEPTION 'unknown currency %', p_currency
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'payment_intents_currency_fkey';
    END IF;
    -- Held until this transaction ends, i.e. across the Stripe call.
    IF NOT pg_try_advisory_xact_lock(
        hashtextextended('tollgate:idempotency:' || acct.id || ':' || p_idempotency_key, 0)
    ) THEN
        RAISE EXCEPTION 'a request with idempotency key % is in progress', p_idempotency_key
            USING ERRCODE = 'TG021', CONSTRAINT = 'idempotency_key_free';
    END IF;
    req := jsonb_build_object('amount', p_amount, 'currency', p_currency, 'purpose', p_purpose,
                              'description', p_description, 'payment_method', p_payment_method);
    req_hash := sha256(convert_to(req::text, 'UTF8'));

    INSERT INTO tollgate.idempotency_keys (account_uuid, key, request_hash, request, payment_id)
    VALUES (acct.id, p_idempotency_key, req_hash, req,
            -- Derived from (account, key): a retry after a failure reuses the id.
            encode(substring(sha256(convert_to(acct.id::text || ':' || p_idempotency_key, 'UTF8'))
                             FROM 1 FOR 16), 'hex')::uuid)
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING
    RETURNING * INTO claim;

    IF claim.payment_id IS NOT NULL THEN
        -- A new payment: an amount Stripe can take in this currency, before any Stripe call
        -- (422 otherwise; the claim rolls back with it). A replay answers what was accepted.
        PERFORM tollgate.stripe_charge_amount(p_amount, p_currency);
        RETURN QUERY SELECT false, claim.payment_id, acct.id, p_amount, p_currency,
                            'tollgate-' || claim.payment_id::text, NULL::jsonb;
        RETURN;
    END IF;

    SELECT * INTO STRICT claim FROM tollgate.idempotency_keys i
    WHERE i.account_uuid = acct.id AND i.key = p_idempotency_key;
    IF claim.request_hash <> req_hash THEN
        RAISE EXCEPTION 'idempotency key % was used with a different request', p_idempotency_key
            USING ERRCODE = 'TG020', CONSTRAINT = 'idempotency_key_same_request';
    END IF;
    RETURN QUERY SELECT true, claim.payment_id, acct.id, p_amount, p_currency,
                        'tollgate-' || claim.payment_id::text, claim.response;
END
$$;

-- Step 2 of POST /v1/payments: record the intent Stripe created and the response to replay.
CREATE OR REPLACE FUNCTION api.finish_payment_v1(
    p_api_key text, p_payment_id uuid, p_stripe_id text, p_status text, p_client_secret text
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k      tollgate.api_keys := tollgate.authenticate(p_api_key);
    claim  tollgate.idempotency_keys;
    body   jsonb;
BEGIN
    SELECT * INTO claim FROM tollgate.idempotency_keys WHERE payment_id = p_payment_id FOR UPDATE;
    IF NOT FOUND OR NOT (k.is_admin OR claim.account_uuid = k.account_uuid) THEN
        RAISE EXCEPTION 'payment % not found', p_payment_id
            USING ERRCODE = 'TG003', CONSTRAINT = 'payment_visible';
    END IF;
    IF claim.completed_at IS NOT NULL THEN
        RETURN claim.response;
    END IF;

    INSERT INTO tollgate.payment_intents
        (id, account_uuid, stripe_id, amount, currency, status, purpose, description, idempotency_key)
    VALUES (claim.payment_id, claim.account_uuid, p_stripe_id, (claim.request ->> 'amount')::bigint,
            claim.request ->> 'currency', p_status::tollgate.payment_status,
            claim.request ->> 'purpose', claim.request ->> 'description', claim.key);
    -- Buying credits: a transaction linked to the payment settles into the account's balance
    -- (its credits wallet) when the payment succeeds.
    IF claim.request ->> 'purpose' = 'credits' THEN
        PERFORM tollgate.create_transaction(claim.account_uuid, 'credits-' || p_stripe_id,
                                            (claim.request ->> 'amount')::bigint,
                                            claim.request ->> 'currency', claim.payment_id);
    END IF;

    SELECT to_jsonb(v) || jsonb_build_object('client_secret', p_client_secret)
    INTO STRICT body
    FROM tollgate.payment_v1 v WHERE v.id = claim.payment_id;

    UPDATE tollgate.idempotency_keys SET response = body, completed_at = now()
    WHERE account_uuid = claim.account_uuid AND key = claim.key;
    RETURN body;
END
$$;

-- GET /v1/payments/{ref}: by Tollgate id (uuid) or Stripe id (pi_...), within the key's reach.
CREATE OR REPLACE FUNCTION api.get_payment_v1(p_api_key text, p_ref text)
RETURNS SETOF tollgate.payment_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k   tollgate.api_keys := tollgate.authenticate(p_api_key);
    pid uuid;
BEGIN
    IF p_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        pid := p_ref::uuid;
    ELSE
        SELECT p.id INTO pid FROM tollgate.payment_intents p WHERE p.stripe_id = p_ref;
    END IF;
    RETURN QUERY
    SELECT v.* FROM tollgate.payment_v1 v JOIN tollgate.payment_intents p ON p.id = v.id
    WHERE v.id = pid AND (k.is_admin OR p.account_uuid = k.account_uuid);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % not found', p_ref
            USING ERRCODE = 'TG003', CONSTRAINT = 'payment_visible';
    END IF;
END
$$;

-- GET /v1/accounts/{id}/can-continue. The seed entitlement rule: an account may continue when
-- its newest payment (for the purpose, if one is named) has succeeded and no risk review
-- holds it.
CREATE OR REPLACE FUNCTION api.can_continue_v1(p_api_key text, p_account text, p_purpose text)
RETURNS TABLE (allowed boolean, status text, payment_id uuid, account_id text, purpose text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k      tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct   tollgate.accounts := tollgate.account_for(k, p_account);
    latest record;
BEGIN
    -- Two queries rather than one with "p_purpose IS NULL OR ...", so each uses its index.
    IF p_purpose IS NULL THEN
        SELECT p.id, p.status INTO latest FROM tollgate.payment_intents p
        WHERE p.account_uuid = acct.id
        ORDER BY p.created_at DESC, p.id DESC LIMIT 1;
    ELSE
        SELECT p.id, p.status INTO latest FROM tollgate.payment_intents p
        WHERE p.account_uuid = acct.id AND p.purpose = p_purpose
        ORDER BY p.created_at DESC, p.id DESC LIMIT 1;
    END IF;
    -- As authorize: a payment held by a risk review (open or rejected) entitles nothing, and
    -- says so in place of its status.
    IF latest.status = 'succeeded' AND tollgate.payment_under_review(latest.id) THEN
        RETURN QUERY SELECT false, 'under_review'::text, latest.id, acct.external_id, p_purpose;
        RETURN;
    END IF;
    -- Nor does one with an open dispute (its credits and paid run are frozen).
    IF latest.status = 'succeeded' AND tollgate.payment_disputed(latest.id) THEN
        RETURN QUERY SELECT false, 'disputed'::text, latest.id, acct.external_id, p_purpose;
        RETURN;
    END IF;
    RETURN QUERY SELECT coalesce(latest.status = 'succeeded', false), latest.status::text,
                        latest.id, acct.external_id, p_purpose;
END
$$;

-- An account's payments, newest first, optionally of one status or purpose: a page of at most
-- p_limit (1-500) after the payment p_after (the id of the last of the previous page).
CREATE OR REPLACE FUNCTION api.list_payments_v1(
    p_api_key text, p_account text, p_status text, p_purpose text, p_limit integer, p_after uuid
) RETURNS SETOF tollgate.payment_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct   tollgate.accounts := tollgate.account_for(tollgate.authenticate(p_api_key), p_account);
    wanted tollgate.payment_status := p_status::tollgate.payment_status;
    after  tollgate.payment_intents;
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    IF p_after IS NOT NULL THEN
        SELECT * INTO after FROM tollgate.payment_intents p WHERE p.id = p_after AND p.account_uuid = acct.id;
        IF NOT FOUND THEN
            PERFORM tollgate.refuse_cursor('payment', p_after::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT v.* FROM tollgate.payment_v1 v
    WHERE v.id IN (SELECT p.id FROM tollgate.payment_intents p
                   WHERE p.account_uuid = acct.id
                     AND (wanted IS NULL OR p.status = wanted)
                     AND (p_purpose IS NULL OR p.purpose = p_purpose)
                     AND (after.id IS NULL OR (p.created_at, p.id) < (after.created_at, after.id))
                   ORDER BY p.created_at DESC, p.id DESC
                   LIMIT p_limit)
    ORDER BY v.created_at DESC, v.id DESC;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.payment_statuses ---

-- The status machine is reference data: it changes only in migrations.
CREATE OR REPLACE TRIGGER payment_statuses_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.payment_statuses
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

CREATE OR REPLACE TRIGGER payment_statuses_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.payment_statuses
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

-- --- tollgate.payment_transitions ---

CREATE OR REPLACE TRIGGER payment_transitions_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.payment_transitions
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

CREATE OR REPLACE TRIGGER payment_transitions_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.payment_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

-- --- tollgate.payment_intents ---

CREATE OR REPLACE TRIGGER payment_intents_05_lock
    BEFORE INSERT ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_intents_before_insert();

-- The WHEN clauses below spare a function call per row where the function would do nothing:
-- keep_columns runs only when a kept column changed, check_transition and the AFTER UPDATE
-- triggers only when what they act on changed (their functions check the same again).
CREATE OR REPLACE TRIGGER payment_intents_10_keep_columns
    BEFORE UPDATE ON tollgate.payment_intents
    FOR EACH ROW
    WHEN ((NEW.id, NEW.account_uuid, NEW.stripe_id, NEW.amount, NEW.currency, NEW.purpose,
           NEW.description, NEW.idempotency_key, NEW.created_at)
          IS DISTINCT FROM (OLD.id, OLD.account_uuid, OLD.stripe_id, OLD.amount, OLD.currency,
                            OLD.purpose, OLD.description, OLD.idempotency_key, OLD.created_at))
    EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'account_uuid', 'stripe_id', 'amount', 'currency', 'purpose', 'description',
        'idempotency_key', 'created_at');

CREATE OR REPLACE TRIGGER payment_intents_20_transition
    BEFORE UPDATE ON tollgate.payment_intents
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION tollgate.check_transition('payment_transitions', 'payment');

CREATE OR REPLACE TRIGGER payment_intents_25_event_clock
    BEFORE UPDATE ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_event_clock();

CREATE OR REPLACE TRIGGER payment_intents_30_refunded
    BEFORE UPDATE ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_refunded_guard();

CREATE OR REPLACE TRIGGER payment_intents_40_flag
    AFTER INSERT ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.flag_for_review();

CREATE OR REPLACE TRIGGER payment_intents_50_status_changed
    AFTER INSERT OR UPDATE OF status ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_status_changed();

CREATE OR REPLACE TRIGGER payment_intents_60_apply_pending_events
    AFTER INSERT ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.apply_pending_payment_events();

CREATE OR REPLACE TRIGGER payment_intents_70_transactions
    AFTER UPDATE OF status ON tollgate.payment_intents
    FOR EACH ROW
    WHEN (NEW.status <> OLD.status AND NEW.status IN ('succeeded', 'canceled', 'refunded'))
    EXECUTE FUNCTION tollgate.transactions_follow_payment();

-- After payment_intents_70_transactions (which settles the transaction of a payment that just
-- succeeded, or fails it when refunded before it settled) and before _80_entitlements.
CREATE OR REPLACE TRIGGER payment_intents_75_take_back
    AFTER UPDATE OF status, amount_refunded ON tollgate.payment_intents
    FOR EACH ROW
    WHEN ((NEW.status, NEW.amount_refunded) IS DISTINCT FROM (OLD.status, OLD.amount_refunded))
    EXECUTE FUNCTION tollgate.payment_take_back();

CREATE OR REPLACE TRIGGER payment_intents_80_entitlements
    AFTER UPDATE OF status ON tollgate.payment_intents
    FOR EACH ROW
    WHEN (NEW.status <> OLD.status AND NEW.status IN ('succeeded', 'refunded')
          AND NEW.purpose IS NOT NULL AND NEW.purpose <> 'credits')
    EXECUTE FUNCTION tollgate.payment_entitlement_follow();

CREATE OR REPLACE TRIGGER payment_intents_no_delete
    BEFORE DELETE ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER payment_intents_no_truncate
    BEFORE TRUNCATE ON tollgate.payment_intents
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.idempotency_keys ---

CREATE OR REPLACE TRIGGER idempotency_keys_10_keep_columns
    BEFORE UPDATE ON tollgate.idempotency_keys
    FOR EACH ROW
    WHEN ((NEW.account_uuid, NEW.key, NEW.request_hash, NEW.request, NEW.payment_id, NEW.created_at)
          IS DISTINCT FROM (OLD.account_uuid, OLD.key, OLD.request_hash, OLD.request, OLD.payment_id,
                            OLD.created_at)
          OR (OLD.response IS NOT NULL AND NEW.response IS DISTINCT FROM OLD.response)
          OR (OLD.completed_at IS NOT NULL AND NEW.completed_at IS DISTINCT FROM OLD.completed_at))
    EXECUTE FUNCTION tollgate.keep_columns(
        'account_uuid', 'key', 'request_hash', 'request', 'payment_id', 'created_at',
        'response?', 'completed_at?');
