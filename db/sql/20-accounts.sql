-- Accounts and API keys: authentication, and which account a caller may act for.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

-- The customer an agent acts for. Agents and their builders know it by external_id
-- (e.g. "user_123"); everything else refers to the uuid.
CREATE TABLE tollgate.accounts (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id text        NOT NULL CONSTRAINT accounts_external_id_key UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The owner of Tollgate's own ledger accounts (clearing, revenue) is the one row outside
    -- the format, so its external id cannot be chosen by anyone.
    CONSTRAINT accounts_external_id_format CHECK (
        external_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$'
        OR (id = '00000000-0000-0000-0000-000000000000' AND external_id = '$system')
    )
);

COMMENT ON TABLE tollgate.accounts IS 'The customers agents act for. external_id is the caller''s own id.';

INSERT INTO tollgate.accounts (id, external_id)
VALUES ('00000000-0000-0000-0000-000000000000', '$system');

-- Bearer keys for agents. Only the SHA-256 of a key is stored: keys are 256-bit random
-- strings, so a fast hash is enough and lets a request authenticate with one index lookup.
CREATE TABLE tollgate.api_keys (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid  uuid        NOT NULL CONSTRAINT api_keys_account_uuid_fkey REFERENCES tollgate.accounts,
    -- An admin key may act for every account; any other key only for account_uuid.
    is_admin    boolean     NOT NULL DEFAULT false,
    key_hash    bytea       NOT NULL
                CONSTRAINT api_keys_key_hash_key UNIQUE
                CONSTRAINT api_keys_key_hash_length CHECK (octet_length(key_hash) = 32),
    -- The first characters of the key, to tell keys apart in listings and logs.
    key_prefix  text        NOT NULL CONSTRAINT api_keys_key_prefix_length CHECK (length(key_prefix) BETWEEN 4 AND 16),
    label       text        CONSTRAINT api_keys_label_length CHECK (length(label) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT api_keys_revoked_after_created CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);

CREATE INDEX api_keys_account_uuid_idx ON tollgate.api_keys (account_uuid);

COMMENT ON TABLE tollgate.api_keys IS 'Agent API keys; only a SHA-256 hash of each key is kept.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- What is stored of an API key: its SHA-256. Keys are 256-bit random strings, so a fast hash
-- is enough, and a stored hash is useless as a credential: every api function takes the key.
-- Inlined into the lookup of every request's key: for that it has no SET clause (its names are
-- qualified instead, which is what the clause protects) and is STABLE like convert_to.
CREATE OR REPLACE FUNCTION tollgate.key_hash(p_api_key text) RETURNS bytea
LANGUAGE sql STABLE STRICT
AS $$
    SELECT pg_catalog.sha256(pg_catalog.convert_to(p_api_key, 'UTF8'))
$$;

-- The key behind a request, or SQLSTATE TG001. Also names the key as the actor of everything
-- the rest of the transaction changes.
CREATE OR REPLACE FUNCTION tollgate.authenticate(p_api_key text) RETURNS tollgate.api_keys
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k tollgate.api_keys;
BEGIN
    SELECT * INTO k FROM tollgate.api_keys
    WHERE key_hash = tollgate.key_hash(p_api_key) AND revoked_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid or revoked API key'
            USING ERRCODE = 'TG001', CONSTRAINT = 'api_key_valid';
    END IF;
    PERFORM tollgate.set_actor('key:' || k.id);
    RETURN k;
END
$$;

-- The account a key acts for: its own when p_external_id is NULL, else the named one, which
-- must be the key's own unless the key is an admin key. Anything else is "not found"
-- (SQLSTATE TG003), so a key cannot even learn whether another account exists.
CREATE OR REPLACE FUNCTION tollgate.account_for(p_key tollgate.api_keys, p_external_id text)
RETURNS tollgate.accounts
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a tollgate.accounts;
BEGIN
    IF p_external_id IS NULL THEN
        SELECT * INTO STRICT a FROM tollgate.accounts WHERE id = p_key.account_uuid;
        RETURN a;
    END IF;
    SELECT * INTO a FROM tollgate.accounts WHERE external_id = p_external_id;
    IF NOT FOUND OR NOT (p_key.is_admin OR a.id = p_key.account_uuid) THEN
        RAISE EXCEPTION 'account % not found', p_external_id
            USING ERRCODE = 'TG003', CONSTRAINT = 'account_visible';
    END IF;
    RETURN a;
END
$$;

-- Who a key is: its account, whether it is an admin key, its id.
CREATE OR REPLACE FUNCTION api.whoami_v1(p_api_key text)
RETURNS TABLE (account_id text, is_admin boolean, key_id uuid)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.external_id, k.is_admin, k.id
    FROM tollgate.authenticate(p_api_key) k JOIN tollgate.accounts a ON a.id = k.account_uuid
$$;

CREATE OR REPLACE FUNCTION tollgate.api_keys_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'api_key', NEW.id::text, 'created', NULL,
                               CASE WHEN NEW.is_admin THEN 'admin' ELSE 'account' END);
    ELSIF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'api_key', NEW.id::text, 'revoked', 'active', 'revoked');
    END IF;
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Keys (called by the `tollgate keys` command, not granted to tollgate_app)
-- ---------------------------------------------------------------------------------------------

-- Only the hash of p_api_key and its first 11 characters (to tell keys apart) are kept.
CREATE OR REPLACE FUNCTION api.create_api_key_v2(
    p_account text, p_api_key text, p_is_admin boolean, p_label text
) RETURNS TABLE (key_id uuid, account_id text)
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
    INSERT INTO tollgate.api_keys (account_uuid, is_admin, key_hash, key_prefix, label)
    VALUES (acct, p_is_admin, tollgate.key_hash(p_api_key), left(p_api_key, 11), p_label)
    RETURNING api_keys.id INTO key_id;
    account_id := p_account;
    RETURN NEXT;
END
$$;

-- The previous release's signature, whose account_id was the account's uuid: kept for its
-- callers during an upgrade, dropped in the next release.
CREATE OR REPLACE FUNCTION api.create_api_key_v1(
    p_account text, p_api_key text, p_is_admin boolean, p_label text
) RETURNS TABLE (key_id uuid, account_id uuid)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT k.key_id INTO key_id FROM api.create_api_key_v2(p_account, p_api_key, p_is_admin, p_label) k;
    SELECT a.id INTO STRICT account_id FROM tollgate.accounts a WHERE a.external_id = p_account;
    RETURN NEXT;
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
    FROM tollgate.api_keys k JOIN tollgate.accounts a ON a.id = k.account_uuid
    WHERE p_account IS NULL OR a.external_id = p_account
    ORDER BY k.created_at, k.id
$$;

-- ---------------------------------------------------------------------------------------------
-- api: an account's keys, as its own key or an admin key reads them
-- ---------------------------------------------------------------------------------------------

-- An account's API keys (its own key's account, or any for admin keys), oldest first, revoked
-- ones too: id, prefix (the first characters, to tell keys apart), admin or not, label, dates.
-- Never a key or its hash. A page of at most p_limit (1-500) after the key p_after (the id of
-- the last of the previous page).
CREATE OR REPLACE FUNCTION api.list_account_keys_v1(p_api_key text, p_account text, p_limit integer, p_after uuid)
RETURNS TABLE (key_id uuid, account_id text, key_prefix text, is_admin boolean, label text,
               created_at timestamptz, revoked_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct  tollgate.accounts := tollgate.account_for(tollgate.authenticate(p_api_key), p_account);
    after tollgate.api_keys;
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    IF p_after IS NOT NULL THEN
        SELECT * INTO after FROM tollgate.api_keys k WHERE k.id = p_after AND k.account_uuid = acct.id;
        IF NOT FOUND THEN
            PERFORM tollgate.refuse_cursor('key', p_after::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT k.id, acct.external_id, k.key_prefix, k.is_admin, k.label, k.created_at, k.revoked_at
    FROM tollgate.api_keys k
    WHERE k.account_uuid = acct.id
      AND (after.id IS NULL OR (k.created_at, k.id) > (after.created_at, after.id))
    ORDER BY k.created_at, k.id
    LIMIT p_limit;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- api: configuration (admin keys)
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tollgate.require_admin(p_api_key text) RETURNS tollgate.api_keys
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k tollgate.api_keys := tollgate.authenticate(p_api_key);
BEGIN
    IF NOT k.is_admin THEN
        RAISE EXCEPTION 'this needs an admin key'
            USING ERRCODE = 'TG002', CONSTRAINT = 'admin_key';
    END IF;
    RETURN k;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.api_keys ---

CREATE OR REPLACE TRIGGER api_keys_10_keep_columns
    BEFORE UPDATE ON tollgate.api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'account_uuid', 'is_admin', 'key_hash', 'key_prefix', 'created_at', 'revoked_at?');

CREATE OR REPLACE TRIGGER api_keys_20_audit
    AFTER INSERT OR UPDATE ON tollgate.api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate.api_keys_audit();

CREATE OR REPLACE TRIGGER api_keys_no_delete
    BEFORE DELETE ON tollgate.api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.accounts ---

CREATE OR REPLACE TRIGGER accounts_10_keep_columns
    BEFORE UPDATE ON tollgate.accounts
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns('id', 'external_id', 'created_at');
