-- The audit trail's hash chains, and the changes audited beyond status changes (postings,
-- entitlements). One chain per account, extended when a transaction commits: the first firing
-- of a deferred trigger seals all of the transaction's audit rows (tollgate.audit_seals),
-- account by account in account order, locking each chain's head as it goes. Locking the head
-- earlier, at the insert, would put it between locks writers take in different orders (a
-- wallet, then its audit row; a posting's audit row, then its wallets) and deadlock them; at
-- COMMIT nothing else is locked after the heads, and heads are always taken in the same order.
-- Two ways around that, both left to the session that chooses them: SET CONSTRAINTS ... IMMEDIATE
-- (heads locked mid-transaction) and PREPARE TRANSACTION (heads held until COMMIT PREPARED).
-- A writer at REPEATABLE READ or SERIALIZABLE may fail at COMMIT with a serialization error
-- when another transaction extended the same chain since its snapshot: retry it.

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

-- Stamp the row: when, which login, which transaction (its seal finds it by that).
CREATE OR REPLACE FUNCTION tollgate.audit_stamp() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.at := now();
    NEW.db_role := session_user;
    NEW.xact := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER audit_log_10_stamp
    BEFORE INSERT ON tollgate.audit_log
    FOR EACH ROW EXECUTE FUNCTION tollgate.audit_stamp();

-- At COMMIT, once per audit row (SECURITY DEFINER: deferred triggers run as the session's
-- role). The first firing seals every row of the transaction; the others find theirs sealed.
CREATE OR REPLACE FUNCTION tollgate.audit_seal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me    bigint := pg_current_xact_id()::text::bigint;
    acct  uuid;
    head  tollgate.audit_heads;
    r     tollgate.audit_log;
    n     bigint;
    hash  bytea;
    next  bytea;
BEGIN
    IF EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = NEW.id) THEN
        RETURN NULL;
    END IF;
    FOR acct IN SELECT DISTINCT l.account_id FROM tollgate.audit_log l WHERE l.xact = me ORDER BY 1 LOOP
        SELECT * INTO head FROM tollgate.audit_heads h WHERE h.account_id = acct FOR UPDATE;
        IF NOT FOUND THEN  -- the account's first audit row
            INSERT INTO tollgate.audit_heads AS h (account_id, rows, last_hash)
            VALUES (acct, 0, tollgate.audit_genesis(acct))
            ON CONFLICT (account_id) DO NOTHING;
            SELECT * INTO STRICT head FROM tollgate.audit_heads h WHERE h.account_id = acct FOR UPDATE;
        END IF;
        IF head.rows = 0 AND EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.account_id = acct) THEN
            RAISE EXCEPTION 'the audit chain of account % has seals but lost its head: restore audit_heads', acct
                USING ERRCODE = 'TG012', CONSTRAINT = 'audit_heads_kept';
        END IF;
        n := head.rows;
        hash := head.last_hash;
        FOR r IN SELECT l.* FROM tollgate.audit_log l
                 WHERE l.xact = me AND l.account_id = acct
                   AND NOT EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = l.id)
                 ORDER BY l.id LOOP
            n := n + 1;
            next := tollgate.audit_row_hash(hash, n, r);
            INSERT INTO tollgate.audit_seals (account_id, seq, audit_id, prev_hash, row_hash)
            VALUES (acct, n, r.id, hash, next);
            hash := next;
        END LOOP;
        IF n > head.rows THEN
            UPDATE tollgate.audit_heads h SET rows = n, last_hash = hash WHERE h.account_id = acct;
        END IF;
    END LOOP;
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
CREATE OR REPLACE TRIGGER audit_heads_kept
    BEFORE DELETE ON tollgate.audit_heads
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
CREATE OR REPLACE TRIGGER audit_heads_no_truncate
    BEFORE TRUNCATE ON tollgate.audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();
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
--   head         - the chain's end is not where audit_heads says (its tail was cut, seals
--                  were added around the trigger, or the head itself was deleted)
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
    SELECT coalesce(h.account_id, e.account_id), 'head', coalesce(h.rows, e.seq), e.audit_id
    FROM tollgate.audit_heads h
    FULL JOIN (SELECT * FROM chained c WHERE c.from_end = 1) e ON e.account_id = h.account_id
    WHERE h.account_id IS NULL  -- a chain whose head was deleted
       OR e.seq IS DISTINCT FROM nullif(h.rows, 0)
       OR e.row_hash IS DISTINCT FROM CASE WHEN h.rows = 0 THEN NULL ELSE h.last_hash END
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
