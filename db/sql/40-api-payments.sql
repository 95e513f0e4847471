-- The functions the service calls (schema api). Each is SECURITY DEFINER, authenticates the
-- caller's key itself where a key is involved, and is granted to tollgate_app in 90-grants.sql.
-- A signature never changes in place: a new one gets the next _vN suffix.

SET LOCAL ROLE tollgate_owner;

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
JOIN tollgate.accounts a ON a.id = p.account_id;

-- ---------------------------------------------------------------------------------------------
-- Keys (called by the `tollgate keys` command, not granted to tollgate_app)
-- ---------------------------------------------------------------------------------------------

-- Only the hash of p_api_key and its first 11 characters (to tell keys apart) are kept.
CREATE OR REPLACE FUNCTION api.create_api_key_v1(
    p_account text, p_api_key text, p_is_admin boolean, p_label text
) RETURNS TABLE (key_id uuid, account_id uuid)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct uuid;
BEGIN
    INSERT INTO tollgate.accounts (external_id) VALUES (p_account)
    ON CONFLICT (external_id) DO NOTHING
    RETURNING id INTO acct;
    IF acct IS NULL THEN
        SELECT id INTO STRICT acct FROM tollgate.accounts WHERE external_id = p_account;
    END IF;
    RETURN QUERY
    INSERT INTO tollgate.api_keys (account_id, is_admin, key_hash, key_prefix, label)
    VALUES (acct, p_is_admin, tollgate.key_hash(p_api_key), left(p_api_key, 11), p_label)
    RETURNING api_keys.id, api_keys.account_id;
END
$$;

CREATE OR REPLACE FUNCTION api.revoke_api_key_v1(p_key_id uuid) RETURNS boolean
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH revoked AS (
        UPDATE tollgate.api_keys SET revoked_at = now()
        WHERE id = p_key_id AND revoked_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT FROM revoked)
$$;

CREATE OR REPLACE FUNCTION api.list_api_keys_v1(p_account text)
RETURNS TABLE (key_id uuid, account_id text, key_prefix text, is_admin boolean, label text,
               created_at timestamptz, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.id, a.external_id, k.key_prefix, k.is_admin, k.label, k.created_at, k.revoked_at
    FROM tollgate.api_keys k JOIN tollgate.accounts a ON a.id = k.account_id
    WHERE p_account IS NULL OR a.external_id = p_account
    ORDER BY k.created_at, k.id
$$;

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

    INSERT INTO tollgate.idempotency_keys (account_id, key, request_hash, request, payment_id)
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
    WHERE i.account_id = acct.id AND i.key = p_idempotency_key;
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
    IF NOT FOUND OR NOT (k.is_admin OR claim.account_id = k.account_id) THEN
        RAISE EXCEPTION 'payment % not found', p_payment_id
            USING ERRCODE = 'TG003', CONSTRAINT = 'payment_visible';
    END IF;
    IF claim.completed_at IS NOT NULL THEN
        RETURN claim.response;
    END IF;

    INSERT INTO tollgate.payment_intents
        (id, account_id, stripe_id, amount, currency, status, purpose, description, idempotency_key)
    VALUES (claim.payment_id, claim.account_id, p_stripe_id, (claim.request ->> 'amount')::bigint,
            claim.request ->> 'currency', p_status::tollgate.payment_status,
            claim.request ->> 'purpose', claim.request ->> 'description', claim.key);
    -- Buying credits: a transaction linked to the payment settles into the account's balance
    -- (its credits wallet) when the payment succeeds.
    IF claim.request ->> 'purpose' = 'credits' THEN
        PERFORM tollgate.create_transaction(claim.account_id, 'credits-' || p_stripe_id,
                                            (claim.request ->> 'amount')::bigint,
                                            claim.request ->> 'currency', claim.payment_id);
    END IF;

    SELECT to_jsonb(v) || jsonb_build_object('client_secret', p_client_secret)
    INTO STRICT body
    FROM tollgate.payment_v1 v WHERE v.id = claim.payment_id;

    UPDATE tollgate.idempotency_keys SET response = body, completed_at = now()
    WHERE account_id = claim.account_id AND key = claim.key;
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
    WHERE v.id = pid AND (k.is_admin OR p.account_id = k.account_id);
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
        WHERE p.account_id = acct.id
        ORDER BY p.created_at DESC, p.id DESC LIMIT 1;
    ELSE
        SELECT p.id, p.status INTO latest FROM tollgate.payment_intents p
        WHERE p.account_id = acct.id AND p.purpose = p_purpose
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

-- ---------------------------------------------------------------------------------------------
-- Stripe events (webhooks arrive through api.ingest_stripe_webhook_v1, db/sql/41, which verifies
-- the signature first; only owner-side callers such as `tollgate reconcile stripe` call this directly)
-- ---------------------------------------------------------------------------------------------

-- Store a Stripe event once and apply it. Outcomes: duplicate (this event id was stored before;
-- nothing happens), ignored (a type Tollgate does not act on), pending (its payment intent is
-- not known yet), applied, stale, rejected (see tollgate.apply_payment_event and, for
-- customer.subscription.* events, tollgate.apply_subscription_event; for partial refunds,
-- refund.* and charge.dispute.* events, tollgate.apply_charge_event).
CREATE OR REPLACE FUNCTION api.ingest_stripe_event_v1(p_event jsonb)
RETURNS TABLE (outcome text, event_id text, payment_id uuid, payment_status text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    obj        jsonb := p_event -> 'data' -> 'object';
    ev_id      text;
    ev_type    text;
    object_id  text;
    target     tollgate.payment_status;
    why        text;
    stored     tollgate.payment_events;
    state      tollgate.event_state;
    is_sub     boolean := false;
    is_charge  boolean := false;  -- a partial refund, a refund, a dispute: apply_charge_event
BEGIN
    IF jsonb_typeof(p_event) IS DISTINCT FROM 'object'
       OR jsonb_typeof(p_event -> 'id') IS DISTINCT FROM 'string'
       OR jsonb_typeof(p_event -> 'type') IS DISTINCT FROM 'string'
       OR jsonb_typeof(p_event -> 'created') IS DISTINCT FROM 'number'
       OR jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'not a Stripe event: expected string id and type, numeric created, object data.object'
            USING ERRCODE = 'TG030', CONSTRAINT = 'stripe_event_shape';
    END IF;
    ev_id := p_event ->> 'id';
    ev_type := p_event ->> 'type';

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

    IF object_id IS NOT NULL THEN
        PERFORM tollgate.lock_stripe_object(object_id);
    END IF;

    INSERT INTO tollgate.payment_events
        (id, type, stripe_object_id, target_status, stripe_created, payload, state, note, processed_at)
    VALUES (ev_id, ev_type, object_id, target,
            to_timestamp((p_event ->> 'created')::double precision), p_event,
            CASE WHEN target IS NULL AND NOT is_sub AND NOT is_charge THEN 'ignored' ELSE 'pending' END::tollgate.event_state,
            why, CASE WHEN target IS NULL AND NOT is_sub AND NOT is_charge THEN now() END)
    ON CONFLICT ON CONSTRAINT payment_events_pkey DO NOTHING;

    IF NOT FOUND THEN
        RETURN QUERY
        SELECT 'duplicate'::text, e.id, e.payment_intent_id, p.status::text
        FROM tollgate.payment_events e LEFT JOIN tollgate.payment_intents p ON p.id = e.payment_intent_id
        WHERE e.id = ev_id;
        RETURN;
    END IF;

    state := CASE WHEN is_sub THEN tollgate.apply_subscription_event(ev_id)
                  WHEN is_charge THEN tollgate.apply_charge_event(ev_id)
                  WHEN target IS NULL THEN 'ignored'::tollgate.event_state
                  ELSE tollgate.apply_payment_event(ev_id) END;
    SELECT * INTO STRICT stored FROM tollgate.payment_events WHERE id = ev_id;
    RETURN QUERY
    SELECT state::text, stored.id, stored.payment_intent_id,
           (SELECT p.status::text FROM tollgate.payment_intents p WHERE p.id = stored.payment_intent_id);
END
$$;
