-- Accounts and API keys: authentication, and which account a caller may act for.

SET LOCAL ROLE tollgate_owner;

-- What is stored of an API key: its SHA-256. Keys are 256-bit random strings, so a fast hash
-- is enough, and a stored hash is useless as a credential: every api function takes the key.
CREATE OR REPLACE FUNCTION tollgate.key_hash(p_api_key text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(convert_to(p_api_key, 'UTF8'))
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
        SELECT * INTO STRICT a FROM tollgate.accounts WHERE id = p_key.account_id;
        RETURN a;
    END IF;
    SELECT * INTO a FROM tollgate.accounts WHERE external_id = p_external_id;
    IF NOT FOUND OR NOT (p_key.is_admin OR a.id = p_key.account_id) THEN
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
    FROM tollgate.authenticate(p_api_key) k JOIN tollgate.accounts a ON a.id = k.account_id
$$;

CREATE OR REPLACE FUNCTION tollgate.api_keys_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tollgate.audit(NEW.account_id, 'api_key', NEW.id::text, 'created', NULL,
                               CASE WHEN NEW.is_admin THEN 'admin' ELSE 'account' END);
    ELSIF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
        PERFORM tollgate.audit(NEW.account_id, 'api_key', NEW.id::text, 'revoked', 'active', 'revoked');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER api_keys_10_keep_columns
    BEFORE UPDATE ON tollgate.api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'account_id', 'is_admin', 'key_hash', 'key_prefix', 'created_at', 'revoked_at?');
CREATE OR REPLACE TRIGGER api_keys_20_audit
    AFTER INSERT OR UPDATE ON tollgate.api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate.api_keys_audit();
CREATE OR REPLACE TRIGGER api_keys_no_delete
    BEFORE DELETE ON tollgate.api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER accounts_10_keep_columns
    BEFORE UPDATE ON tollgate.accounts
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns('id', 'external_id', 'created_at');
