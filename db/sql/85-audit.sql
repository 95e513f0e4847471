-- The audit trail's hash chains, and the changes audited beyond status changes (postings,
-- entitlements). One chain per account: inserting an audit row locks the account's head, so
-- the chain is a strict sequence even under concurrency.

SET LOCAL ROLE tollgate_owner;

-- Where an account's chain starts.
CREATE OR REPLACE FUNCTION tollgate.audit_genesis(p_account_id uuid) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT sha256(convert_to('tollgate audit chain ' || p_account_id, 'UTF8')) $$;

-- A row's hash: its predecessor's hash and its content (a JSON array: unambiguous, and the
-- time as microseconds since the epoch, whatever the session's time zone or date style).
CREATE OR REPLACE FUNCTION tollgate.audit_row_hash(p_prev bytea, r tollgate.audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(p_prev || convert_to(jsonb_build_array(
        r.seq, r.account_id, r.entity, r.entity_id, r.action, r.old_value, r.new_value,
        r.actor, r.db_role, (extract(epoch FROM r.at) * 1000000)::bigint, r.note)::text, 'UTF8'))
$$;

CREATE OR REPLACE FUNCTION tollgate.audit_chain() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    head tollgate.audit_heads;
BEGIN
    INSERT INTO tollgate.audit_heads (account_id, rows, last_hash)
    VALUES (NEW.account_id, 0, tollgate.audit_genesis(NEW.account_id))
    ON CONFLICT (account_id) DO NOTHING;
    SELECT * INTO STRICT head FROM tollgate.audit_heads WHERE account_id = NEW.account_id FOR UPDATE;
    NEW.at := now();
    NEW.db_role := session_user;
    NEW.seq := head.rows + 1;
    NEW.prev_hash := head.last_hash;
    NEW.row_hash := tollgate.audit_row_hash(NEW.prev_hash, NEW);
    UPDATE tollgate.audit_heads SET rows = NEW.seq, last_hash = NEW.row_hash WHERE account_id = NEW.account_id;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER audit_log_10_chain
    BEFORE INSERT ON tollgate.audit_log
    FOR EACH ROW EXECUTE FUNCTION tollgate.audit_chain();
CREATE OR REPLACE TRIGGER audit_heads_written_by_triggers
    BEFORE INSERT ON tollgate.audit_heads
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_direct_insert();

-- Every way the audit trail disagrees with its chains; no rows means none was tampered with:
--   altered      - a row's content no longer matches its hash
--   broken_link  - a row does not follow the hash of the one before it (one was removed or
--                  reordered)
--   gap          - seq numbers skip (a row was removed)
--   head         - the chain's end is not where audit_heads says (its tail was cut, or rows
--                  were added around the trigger)
--   unchained    - a row written without a hash
CREATE OR REPLACE FUNCTION tollgate.verify_audit_chain()
RETURNS TABLE (account_id uuid, problem text, seq bigint, audit_id bigint)
LANGUAGE sql STABLE SECURITY DEFINER  -- reporting.audit_chain_problems calls it for analysts
SET search_path = pg_catalog, pg_temp
AS $$
    WITH chained AS (
        SELECT a AS r, a.id, a.account_id, a.seq, a.prev_hash, a.row_hash,
               lag(a.row_hash) OVER w AS before_hash, lag(a.seq) OVER w AS before_seq,
               row_number() OVER (PARTITION BY a.account_id ORDER BY a.seq DESC) AS from_end
        FROM tollgate.audit_log a
        WINDOW w AS (PARTITION BY a.account_id ORDER BY a.seq)
    )
    SELECT c.account_id, 'unchained', c.seq, c.id FROM chained c WHERE c.row_hash IS NULL
    UNION ALL
    SELECT c.account_id, 'altered', c.seq, c.id FROM chained c
    WHERE c.row_hash IS NOT NULL AND c.row_hash <> tollgate.audit_row_hash(c.prev_hash, c.r)
    UNION ALL
    SELECT c.account_id, 'broken_link', c.seq, c.id FROM chained c
    WHERE c.row_hash IS NOT NULL
      AND c.prev_hash IS DISTINCT FROM coalesce(c.before_hash, tollgate.audit_genesis(c.account_id))
    UNION ALL
    SELECT c.account_id, 'gap', c.seq, c.id FROM chained c
    WHERE c.seq IS DISTINCT FROM coalesce(c.before_seq, 0) + 1
    UNION ALL
    SELECT h.account_id, 'head', h.rows, c.id
    FROM tollgate.audit_heads h
    LEFT JOIN chained c ON c.account_id = h.account_id AND c.from_end = 1
    WHERE c.seq IS DISTINCT FROM nullif(h.rows, 0) OR c.row_hash IS DISTINCT FROM
          CASE WHEN h.rows = 0 THEN NULL ELSE h.last_hash END
$$;

-- ---------------------------------------------------------------------------------------------
-- More changes on the record
-- ---------------------------------------------------------------------------------------------

-- Each posting, in the chain of the account it was made for.
CREATE OR REPLACE FUNCTION tollgate.ledger_postings_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.audit(NEW.account_id, 'ledger_posting', NEW.id::text, 'posted', NULL, NEW.kind::text);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER ledger_postings_50_audit
    AFTER INSERT ON tollgate.ledger_postings
    FOR EACH ROW EXECUTE FUNCTION tollgate.ledger_postings_audit();

CREATE OR REPLACE FUNCTION tollgate.payment_entitlements_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.audit(NEW.account_id, 'entitlement', NEW.payment_intent_id::text,
                           CASE TG_OP WHEN 'INSERT' THEN 'granted' ELSE 'used' END,
                           CASE TG_OP WHEN 'UPDATE' THEN OLD.uses_left::text END, NEW.uses_left::text);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER payment_entitlements_50_audit
    AFTER INSERT OR UPDATE OF uses_left ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_entitlements_audit();
