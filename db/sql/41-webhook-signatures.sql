-- Stripe webhook signatures, verified by PostgreSQL itself.
--
-- The service role may not apply a Stripe event on its own word: api.ingest_stripe_webhook_v1
-- takes the raw body and the Stripe-Signature header and stores the event (for the applier)
-- only when a v1
-- signature is the HMAC-SHA256 of "<t>.<body>" under an active secret (table
-- tollgate.stripe_webhook_secrets) and t is recent. api.ingest_stripe_event_v1, which takes an
-- already parsed event, is left to owner-side callers (`tollgate reconcile stripe`, which
-- builds the events from Stripe's API itself).
--
-- HMAC is built from core sha256(bytea): the embedded PostgreSQL used for tests and `tollgate
-- dev` has no pgcrypto. RFC 2104 with SHA-256's 64-byte block: the key is hashed if longer
-- than the block, padded with zeros to it, and XORed with 0x36 (inner) and 0x5c (outer) once,
-- when a secret is stored; each verification is then sha256(outer || sha256(inner || message)).

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

-- The signing secrets (whsec_...) of Tollgate's Stripe webhook endpoints. Several may be active
-- at once: while Stripe rolls a secret over it signs with both, and either verifies. A removed
-- secret is deleted, not kept. Operator-wide (one endpoint serves every account); only
-- tollgate_owner reads it, through the functions the `tollgate webhook-secret` command calls.
-- The secret itself is not stored: only the two HMAC-SHA256 key blocks derived from it
-- (RFC 2104), which verify a signature with two sha256() calls and no per-request XOR. They
-- are as secret as the secret.
CREATE TABLE tollgate.stripe_webhook_secrets (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The first characters of the secret ("whsec_" and four more), to tell secrets apart.
    prefix      text        NOT NULL
                CONSTRAINT stripe_webhook_secrets_prefix_length CHECK (length(prefix) BETWEEN 4 AND 16),
    -- The key padded to SHA-256's 64-byte block, XOR 0x36 (inner) and XOR 0x5c (outer).
    inner_key   bytea       NOT NULL
                CONSTRAINT stripe_webhook_secrets_inner_key_length CHECK (octet_length(inner_key) = 64),
    outer_key   bytea       NOT NULL
                CONSTRAINT stripe_webhook_secrets_outer_key_length CHECK (octet_length(outer_key) = 64),
    label       text        CONSTRAINT stripe_webhook_secrets_label_length CHECK (length(label) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The same secret is registered once (adding it again is a no-op).
    CONSTRAINT stripe_webhook_secrets_inner_key_key UNIQUE (inner_key)
);

COMMENT ON TABLE tollgate.stripe_webhook_secrets IS
    'Active Stripe webhook signing secrets, as HMAC-SHA256 key blocks; read by tollgate_owner only.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- HMAC-SHA256
-- ---------------------------------------------------------------------------------------------

-- The two padded key blocks of HMAC-SHA256 for a key (RFC 2104, section 2).
CREATE OR REPLACE FUNCTION tollgate.hmac_sha256_blocks(p_key bytea, OUT inner_key bytea, OUT outer_key bytea)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH k AS (
        SELECT CASE WHEN octet_length(p_key) > 64 THEN sha256(p_key) ELSE p_key END AS key
    ), block AS (
        SELECT key || decode(repeat('00', 64 - octet_length(key)), 'hex') AS b FROM k
    )
    SELECT decode(string_agg(lpad(to_hex(get_byte(b, i) # 54), 2, '0'), '' ORDER BY i), 'hex'),
           decode(string_agg(lpad(to_hex(get_byte(b, i) # 92), 2, '0'), '' ORDER BY i), 'hex')
    FROM block, generate_series(0, 63) AS i
$$;

-- HMAC-SHA256 of a message under the key blocks of tollgate.hmac_sha256_blocks.
CREATE OR REPLACE FUNCTION tollgate.hmac_sha256(p_inner_key bytea, p_outer_key bytea, p_message bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT sha256(p_outer_key || sha256(p_inner_key || p_message)) $$;

-- HMAC-SHA256 of a message under a key (the reference form, checked against RFC 4231).
CREATE OR REPLACE FUNCTION tollgate.hmac_sha256(p_key bytea, p_message bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tollgate.hmac_sha256(b.inner_key, b.outer_key, p_message)
    FROM tollgate.hmac_sha256_blocks(p_key) AS b
$$;

-- ---------------------------------------------------------------------------------------------
-- Verifying a Stripe-Signature header
-- ---------------------------------------------------------------------------------------------

-- How far a signature's timestamp may be from this server's clock (Stripe's own default).
CREATE OR REPLACE FUNCTION tollgate.stripe_signature_tolerance() RETURNS interval
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT interval '300 seconds' $$;

-- Raise TG031 (constraint stripe_signature) unless the header "t=<unix>,v1=<hex>[,v1=...]
-- [,v0=...]" holds a timestamp within the tolerance and at least one v1 signature that is
-- HMAC-SHA256("<t>.<payload>") under an active secret. Any v1 may match (Stripe sends one per
-- active secret while a secret is rolled over); other schemes are ignored, as Stripe's SDKs do.
CREATE OR REPLACE FUNCTION tollgate.verify_stripe_signature(p_payload text, p_signature text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t_text  text;
    v1s     text[];
    given   bytea[];
    message bytea;
BEGIN
    IF p_signature IS NULL OR btrim(p_signature) = '' THEN
        RAISE EXCEPTION 'the Stripe-Signature header is missing'
            USING ERRCODE = 'TG031', CONSTRAINT = 'stripe_signature';
    END IF;
    IF p_payload IS NULL OR length(p_signature) > 8192 THEN
        RAISE EXCEPTION 'the Stripe-Signature header is malformed'
            USING ERRCODE = 'TG031', CONSTRAINT = 'stripe_signature';
    END IF;

    -- The first t, and every v1, as Stripe's SDKs read the header.
    SELECT (array_agg(kv.v ORDER BY item.n) FILTER (WHERE kv.k = 't'))[1],
           coalesce(array_agg(kv.v) FILTER (WHERE kv.k = 'v1'), '{}')
    INTO t_text, v1s
    FROM unnest(string_to_array(p_signature, ',')) WITH ORDINALITY AS item(part, n),
         LATERAL (SELECT btrim(split_part(item.part, '=', 1)) AS k,
                         btrim(substr(item.part, strpos(item.part, '=') + 1)) AS v) AS kv
    WHERE strpos(item.part, '=') > 0;
    v1s := ARRAY(SELECT s FROM unnest(v1s) AS s WHERE s ~ '^[0-9a-f]{64}$');
    IF t_text IS NULL OR t_text !~ '^[0-9]{1,12}$' OR cardinality(v1s) = 0 THEN
        RAISE EXCEPTION 'the Stripe-Signature header has no timestamp (t=) or no v1 signature'
            USING ERRCODE = 'TG031', CONSTRAINT = 'stripe_signature';
    END IF;
    IF abs(extract(epoch FROM now()) - t_text::bigint) > extract(epoch FROM tollgate.stripe_signature_tolerance()) THEN
        RAISE EXCEPTION 'the Stripe-Signature timestamp is more than % seconds from now',
                        extract(epoch FROM tollgate.stripe_signature_tolerance())::int
            USING ERRCODE = 'TG031', CONSTRAINT = 'stripe_signature';
    END IF;
    IF NOT EXISTS (SELECT FROM tollgate.stripe_webhook_secrets) THEN
        RAISE EXCEPTION 'no Stripe webhook secret is registered (tollgate webhook-secret add)'
            USING ERRCODE = 'TG031', CONSTRAINT = 'stripe_signature';
    END IF;

    -- SQL has no constant-time comparison. What is compared is the SHA-256 of the expected MAC
    -- against the SHA-256 of each given one: equal-length digests, and how long a comparison
    -- takes says nothing about how many leading bytes of the real MAC a forger guessed.
    given := ARRAY(SELECT sha256(decode(s, 'hex')) FROM unnest(v1s) AS s);
    message := convert_to(t_text || '.' || p_payload, 'UTF8');
    IF NOT EXISTS (
        SELECT FROM tollgate.stripe_webhook_secrets s
        WHERE sha256(tollgate.hmac_sha256(s.inner_key, s.outer_key, message)) = ANY (given)
    ) THEN
        RAISE EXCEPTION 'no v1 signature in the Stripe-Signature header matches the payload'
            USING ERRCODE = 'TG031', CONSTRAINT = 'stripe_signature';
    END IF;
END
$$;

-- POST /v1/webhooks/stripe: verify the Stripe-Signature header over the raw body, then store
-- the event, and nothing else: one insert (tollgate.store_stripe_event). Outcomes:
--   received  - stored; the applier (api.apply_stripe_events_v1) applies it within moments,
--               woken by NOTIFY tollgate_stripe_events when this transaction commits (or by
--               a concurrent webhook's);
--   ignored   - stored, final: a type Tollgate does not act on;
--   duplicate - this event id was stored before; nothing is written. payment_id and
--               payment_status are the stored event's, once it was applied to a payment.
-- A missing, wrong or stale signature raises TG031 and writes nothing; a malformed event TG030.
-- A replayed delivery (same signed body) answers duplicate.
CREATE OR REPLACE FUNCTION api.ingest_stripe_webhook_v1(p_payload text, p_signature text)
RETURNS TABLE (outcome text, event_id text, payment_id uuid, payment_status text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev    jsonb;
    saved record;
BEGIN
    PERFORM tollgate.verify_stripe_signature(p_payload, p_signature);
    ev := p_payload::jsonb;
    SELECT * INTO STRICT saved FROM tollgate.store_stripe_event(ev);
    -- Wake the appliers when this commits (a constant payload: they read the table, never the
    -- message). A notifying transaction commits only after every other notifying one has
    -- (PostgreSQL serialises them, and with them their WAL flushes): so while another
    -- webhook's notification is on its way, this one sends none. The appliers look again
    -- shortly after applying anything, which takes in events stored meanwhile.
    IF saved.stored AND saved.state = 'received'
       AND pg_try_advisory_xact_lock(hashtextextended('tollgate:stripe-notify', 0)) THEN
        PERFORM pg_notify('tollgate_stripe_events', '');
    END IF;
    IF NOT saved.stored THEN
        RETURN QUERY SELECT 'duplicate'::text, r.event_id, r.payment_id, r.payment_status
                     FROM tollgate.stripe_event_receipt(ev ->> 'id') r;
        RETURN;
    END IF;
    RETURN QUERY SELECT saved.state::text, ev ->> 'id', NULL::uuid, NULL::text;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Secrets (called by the `tollgate webhook-secret` command, `tollgate migrate` and `tollgate
-- dev`, as the migrating role; nothing here is granted to another role)
-- ---------------------------------------------------------------------------------------------

-- Register a signing secret; adding one that is already registered changes nothing
-- (added = false), so `tollgate migrate` can ensure the configured secret on every run.
CREATE OR REPLACE FUNCTION tollgate.add_stripe_webhook_secret(p_secret text, p_label text)
RETURNS TABLE (secret_id uuid, prefix text, added boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    blocks record;
    new_id uuid;
BEGIN
    IF p_secret IS NULL OR length(p_secret) NOT BETWEEN 24 AND 1000 OR p_secret !~ '^[!-~]+$' THEN
        RAISE EXCEPTION 'a webhook secret is 24 to 1000 printable ASCII characters without spaces (Stripe''s: whsec_...)'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'stripe_webhook_secret_format';
    END IF;
    SELECT * INTO STRICT blocks FROM tollgate.hmac_sha256_blocks(convert_to(p_secret, 'UTF8'));
    INSERT INTO tollgate.stripe_webhook_secrets (prefix, inner_key, outer_key, label)
    VALUES (left(p_secret, 10), blocks.inner_key, blocks.outer_key, p_label)
    ON CONFLICT ON CONSTRAINT stripe_webhook_secrets_inner_key_key DO NOTHING
    RETURNING id INTO new_id;
    RETURN QUERY
    SELECT s.id, s.prefix, coalesce(s.id = new_id, false)
    FROM tollgate.stripe_webhook_secrets s WHERE s.inner_key = blocks.inner_key;
END
$$;

-- The registered secrets, oldest first: never the secret, only its first characters.
CREATE OR REPLACE FUNCTION tollgate.list_stripe_webhook_secrets()
RETURNS TABLE (secret_id uuid, prefix text, label text, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id, s.prefix, s.label, s.created_at FROM tollgate.stripe_webhook_secrets s
    ORDER BY s.created_at, s.id
$$;

-- Remove a secret (after Stripe stopped signing with it): signatures under it no longer verify.
CREATE OR REPLACE FUNCTION tollgate.remove_stripe_webhook_secret(p_secret_id uuid) RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM tollgate.stripe_webhook_secrets WHERE id = p_secret_id RETURNING 1
    )
    SELECT EXISTS (SELECT FROM gone)
$$;
