-- The audit trail's hash chains, and the changes audited beyond status changes (postings,
-- entitlements). One chain per account, extended when a transaction commits: a deferred
-- trigger seals each audit row (tollgate.audit_seals) after locking, in account order, the
-- heads of every chain the transaction extends. Locking the head earlier, at the insert, would
-- put it between locks the writers take in different orders (a wallet, then its audit row; a
-- posting's audit row, then its wallets) and deadlock them; at COMMIT nothing else is locked
-- after the heads, and heads are always locked in the same order.

SET LOCAL ROLE tollgate_owner;

-- Where an account's chain starts.
CREATE OR REPLACE FUNCTION tollgate.audit_genesis(p_account_id uuid) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT sha256(convert_to('tollgate audit chain ' || p_account_id, 'UTF8')) $$;

-- A sealed row's hash: the previous hash, the row's place and its content (a JSON array:
-- unambiguous, and the time as microseconds since the epoch, whatever the session's time zone
-- or date style).
CREATE OR REPLACE FUNCTION tollgate.audit_row_hash(p_prev bytea, p_seq bigint, r tollgate.audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(p_prev || convert_to(jsonb_build_array(
        p_seq, r.id, r.account_id, r.entity, r.entity_id, r.action, r.old_value, r.new_value,
        r.actor, r.db_role, (extract(epoch FROM r.at) * 1000000)::bigint, r.note)::text, 'UTF8'))
$$;

-- Stamp the row, and note its account: the seal locks the heads of all of them at once.
CREATE OR REPLACE FUNCTION tollgate.audit_stamp() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    noted text := coalesce(current_setting('tollgate.audit_accounts', true), '');
BEGIN
    NEW.at := now();
    NEW.db_role := session_user;
    IF position(NEW.account_id::text IN noted) = 0 THEN
        PERFORM set_config('tollgate.audit_accounts', noted || NEW.account_id || ',', true);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER audit_log_10_stamp
    BEFORE INSERT ON tollgate.audit_log
    FOR EACH ROW EXECUTE FUNCTION tollgate.audit_stamp();

-- At COMMIT, for each audit row (SECURITY DEFINER: deferred triggers run as the session's role).
CREATE OR REPLACE FUNCTION tollgate.audit_seal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    accounts uuid[];
    head     tollgate.audit_heads;
    hash     bytea;
BEGIN
    IF coalesce(current_setting('tollgate.audit_heads_locked', true), '') = '' THEN
        accounts := ARRAY(SELECT DISTINCT a::uuid
                          FROM unnest(string_to_array(current_setting('tollgate.audit_accounts', true), ',')) a
                          WHERE a <> '' ORDER BY 1);
        INSERT INTO tollgate.audit_heads (account_id, rows, last_hash)
        SELECT a, 0, tollgate.audit_genesis(a) FROM unnest(accounts) a ORDER BY a
        ON CONFLICT (account_id) DO NOTHING;
        PERFORM FROM tollgate.audit_heads h WHERE h.account_id = ANY (accounts) ORDER BY h.account_id FOR UPDATE;
        PERFORM set_config('tollgate.audit_heads_locked', 'on', true);
    END IF;
    -- Its head is locked already, unless the row was written around the stamp trigger.
    INSERT INTO tollgate.audit_heads (account_id, rows, last_hash)
    VALUES (NEW.account_id, 0, tollgate.audit_genesis(NEW.account_id))
    ON CONFLICT (account_id) DO NOTHING;
    SELECT * INTO STRICT head FROM tollgate.audit_heads WHERE account_id = NEW.account_id FOR UPDATE;
    hash := tollgate.audit_row_hash(head.last_hash, head.rows + 1, NEW);
    INSERT INTO tollgate.audit_seals (account_id, seq, audit_id, prev_hash, row_hash)
    VALUES (NEW.account_id, head.rows + 1, NEW.id, head.last_hash, hash);
    UPDATE tollgate.audit_heads SET rows = head.rows + 1, last_hash = hash WHERE account_id = NEW.account_id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS audit_log_90_seal ON tollgate.audit_log;
CREATE CONSTRAINT TRIGGER audit_log_90_seal
    AFTER INSERT ON tollgate.audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tollgate.audit_seal();

CREATE OR REPLACE TRIGGER audit_heads_written_by_triggers
    BEFORE INSERT ON tollgate.audit_heads
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_direct_insert();
CREATE OR REPLACE TRIGGER audit_seals_written_by_triggers
    BEFORE INSERT ON tollgate.audit_seals
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_direct_insert();
CREATE OR REPLACE TRIGGER audit_seals_append_only
    BEFORE UPDATE OR DELETE ON tollgate.audit_seals
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
CREATE OR REPLACE TRIGGER audit_seals_no_truncate
    BEFORE TRUNCATE ON tollgate.audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- Every way the audit trail disagrees with its chains; no rows means none was tampered with:
--   unsealed     - an audit row without a seal (written around the triggers; or, inside a
--                  transaction, one not committed yet)
--   missing      - a seal whose audit row is gone
--   altered      - a row's content no longer matches its seal's hash
--   broken_link  - a seal does not follow the hash of the one before it (a row was removed or
--                  reordered)
--   gap          - seq numbers skip (a row and its seal were removed)
--   head         - the chain's end is not where audit_heads says (its tail was cut, or seals
--                  were added around the trigger)
-- A superuser who rewrites a whole chain and its head consistently is not caught: keep a copy
-- of audit_heads.last_hash elsewhere (e.g. in the daily report) to compare against.
CREATE OR REPLACE FUNCTION tollgate.verify_audit_chain()
RETURNS TABLE (account_id uuid, problem text, seq bigint, audit_id bigint)
LANGUAGE sql STABLE SECURITY DEFINER  -- reporting.audit_chain_problems calls it for analysts
SET search_path = pg_catalog, pg_temp
AS $$
    WITH chained AS (
        SELECT s.account_id, s.seq, s.audit_id, s.prev_hash, s.row_hash, l AS r, l.id AS found,
               lag(s.row_hash) OVER w AS before_hash, lag(s.seq) OVER w AS before_seq,
               row_number() OVER (PARTITION BY s.account_id ORDER BY s.seq DESC) AS from_end
        FROM tollgate.audit_seals s LEFT JOIN tollgate.audit_log l ON l.id = s.audit_id
        WINDOW w AS (PARTITION BY s.account_id ORDER BY s.seq)
    )
    SELECT l.account_id, 'unsealed', NULL::bigint, l.id FROM tollgate.audit_log l
    WHERE NOT EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = l.id)
    UNION ALL
    SELECT c.account_id, 'missing', c.seq, c.audit_id FROM chained c WHERE c.found IS NULL
    UNION ALL
    SELECT c.account_id, 'altered', c.seq, c.audit_id FROM chained c
    WHERE c.found IS NOT NULL
      AND (c.row_hash <> tollgate.audit_row_hash(c.prev_hash, c.seq, c.r) OR (c.r).account_id <> c.account_id)
    UNION ALL
    SELECT c.account_id, 'broken_link', c.seq, c.audit_id FROM chained c
    WHERE c.prev_hash <> coalesce(c.before_hash, tollgate.audit_genesis(c.account_id))
    UNION ALL
    SELECT c.account_id, 'gap', c.seq, c.audit_id FROM chained c
    WHERE c.seq <> coalesce(c.before_seq, 0) + 1
    UNION ALL
    SELECT h.account_id, 'head', h.rows, c.audit_id
    FROM tollgate.audit_heads h
    LEFT JOIN chained c ON c.account_id = h.account_id AND c.from_end = 1
    WHERE c.seq IS DISTINCT FROM nullif(h.rows, 0)
       OR c.row_hash IS DISTINCT FROM CASE WHEN h.rows = 0 THEN NULL ELSE h.last_hash END
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
