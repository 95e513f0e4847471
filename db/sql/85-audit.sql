-- The audit trail: an append-only row for every change that matters (status changes, keys,
-- postings, entitlements, reviews, caps), written by triggers, and one hash chain per account.
--
-- One chain per account, extended when a transaction commits: the first firing
-- of a deferred trigger seals all of the transaction's audit rows (tollgate.audit_seals),
-- account by account in account order, locking each chain's head as it goes. Locking the head
-- earlier, at the insert, would put it between locks writers take in different orders (a
-- wallet, then its audit row; a posting's audit row, then its wallets) and deadlock them; at
-- COMMIT nothing else is locked after the heads, and heads are always taken in the same order.
-- Two ways around that, both left to the session that chooses them: SET CONSTRAINTS ... IMMEDIATE
-- (heads locked mid-transaction) and PREPARE TRANSACTION (heads held until COMMIT PREPARED).
-- A writer at REPEATABLE READ or SERIALIZABLE may fail at COMMIT with a serialization error
-- when another transaction extended the same chain since its snapshot: retry it.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_uuid  uuid        NOT NULL CONSTRAINT audit_log_account_uuid_fkey REFERENCES tollgate.accounts,
    -- What changed: the table's entity name and the row's id.
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    action      text        NOT NULL,
    old_value   text,
    new_value   text,
    -- Who: "key:<api key id>", "stripe:<event id>", or the database role for direct SQL.
    actor       text        NOT NULL,
    -- The login role of the session, whatever actor it claims: a change made from psql
    -- shows here even if the session set tollgate.actor itself.
    db_role     text        NOT NULL DEFAULT session_user,
    at          timestamptz NOT NULL DEFAULT now(),
    -- Why, in a person's words (a reviewer's decision, for instance).
    note        text        CONSTRAINT audit_log_note_length CHECK (length(note) <= 2000),
    -- The writing transaction (pg_current_xact_id()), so its seal finds its rows at COMMIT.
    xact        bigint      DEFAULT pg_current_xact_id()::text::bigint
);

CREATE INDEX audit_log_entity_idx ON tollgate.audit_log (entity, entity_id, id);
CREATE INDEX audit_log_account_uuid_idx ON tollgate.audit_log (account_uuid, id);
CREATE INDEX audit_log_xact_idx ON tollgate.audit_log (xact);

COMMENT ON TABLE tollgate.audit_log IS 'Append-only trail of every status change: what, old -> new, when and who.';

CREATE TABLE tollgate.audit_heads (
    account_uuid  uuid        PRIMARY KEY CONSTRAINT audit_heads_account_uuid_fkey REFERENCES tollgate.accounts,
    rows        bigint      NOT NULL CONSTRAINT audit_heads_rows_non_negative CHECK (rows >= 0),
    last_hash   bytea       NOT NULL
);

COMMENT ON TABLE tollgate.audit_heads IS 'The end of each account''s audit hash chain: its length and last hash.';

-- No foreign keys: one to audit_log would lock the row FOR KEY SHARE, which takes UPDATE
-- privilege, and audit_log has none for anyone; the account is the audit row's, checked there.
-- verify_audit_chain() pairs seals with rows instead.
CREATE TABLE tollgate.audit_seals (
    account_uuid  uuid        NOT NULL,
    seq         bigint      NOT NULL CONSTRAINT audit_seals_seq_positive CHECK (seq > 0),
    audit_id    bigint      NOT NULL CONSTRAINT audit_seals_audit_id_key UNIQUE,
    prev_hash   bytea       NOT NULL,
    row_hash    bytea       NOT NULL,
    CONSTRAINT audit_seals_pkey PRIMARY KEY (account_uuid, seq)
);

COMMENT ON TABLE tollgate.audit_seals IS 'Each audit row''s place in its account''s hash chain, written when its transaction commits.';

-- Sealed audit rows older than the retention horizon and their seals, moved here together by
-- retention.archive_batch('audit', ...) and by nothing else. Same columns as audit_log and
-- audit_seals: the chain is checked across both (verify_audit_chain), so an archived row is
-- as tamper-evident as a live one, and the live part still links to the archived part.
CREATE TABLE tollgate.audit_log_archive (
    id          bigint      CONSTRAINT audit_log_archive_pkey PRIMARY KEY,
    account_uuid  uuid        NOT NULL CONSTRAINT audit_log_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    action      text        NOT NULL,
    old_value   text,
    new_value   text,
    actor       text        NOT NULL,
    db_role     text        NOT NULL,
    at          timestamptz NOT NULL,
    note        text,
    xact        bigint
);

CREATE INDEX audit_log_archive_entity_idx ON tollgate.audit_log_archive (entity, entity_id, id);
CREATE INDEX audit_log_archive_account_uuid_idx ON tollgate.audit_log_archive (account_uuid, id);

COMMENT ON TABLE tollgate.audit_log_archive IS 'Sealed audit rows moved out of audit_log by retention; append-only, still chained.';

CREATE TABLE tollgate.audit_seals_archive (
    account_uuid  uuid        NOT NULL,
    seq         bigint      NOT NULL,
    audit_id    bigint      NOT NULL CONSTRAINT audit_seals_archive_audit_id_key UNIQUE,
    prev_hash   bytea       NOT NULL,
    row_hash    bytea       NOT NULL,
    CONSTRAINT audit_seals_archive_pkey PRIMARY KEY (account_uuid, seq)
);

COMMENT ON TABLE tollgate.audit_seals_archive IS 'The seals of archived audit rows, moved with them by retention; append-only.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Record one change in the audit trail (sealed into its account's hash chain at COMMIT by
-- trigger audit_log_90_seal).
CREATE OR REPLACE FUNCTION tollgate.audit(
    p_account_uuid uuid, p_entity text, p_entity_id text, p_action text,
    p_old_value text DEFAULT NULL, p_new_value text DEFAULT NULL, p_note text DEFAULT NULL
) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO tollgate.audit_log (account_uuid, entity, entity_id, action, old_value, new_value, actor, note)
    VALUES (p_account_uuid, p_entity, p_entity_id, p_action, p_old_value, p_new_value, tollgate.actor(), p_note)
$$;

-- Where an account's chain starts.
CREATE OR REPLACE FUNCTION tollgate.audit_genesis(p_account_uuid uuid) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT sha256(convert_to('tollgate audit chain ' || p_account_uuid, 'UTF8')) $$;

-- A sealed row's hash: the previous hash, the row's place and its content (a JSON array:
-- unambiguous, and the time as microseconds since the epoch, whatever the session's time zone
-- or date style).
CREATE OR REPLACE FUNCTION tollgate.audit_row_hash(p_prev bytea, p_seq bigint, r tollgate.audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(p_prev || convert_to(jsonb_build_array(
        p_seq, r.id, r.account_uuid, r.entity, r.entity_id, r.action, r.old_value, r.new_value,
        r.actor, r.db_role, (extract(epoch FROM r.at) * 1000000)::bigint, r.note)::text, 'UTF8'))
$$;

-- Stamp the row: when, which login, which transaction (its seal finds it by that). The
-- columns' defaults say the same: the trigger runs only for a row that says otherwise.
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

-- At COMMIT, once per audit row (SECURITY DEFINER: deferred triggers run as the session's
-- role). The first firing seals every row of the transaction, account by account in account
-- order (each chain's head locked as its turn comes), and writes all the seals in one
-- statement; the others find theirs sealed. Generic plans: this runs at every COMMIT that
-- wrote audit rows, and planning its statements again each time cost more than running them.
CREATE OR REPLACE FUNCTION tollgate.audit_seal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    me     bigint := pg_current_xact_id()::text::bigint;
    acct   uuid;
    head   tollgate.audit_heads;
    r      tollgate.audit_log;
    n      bigint;
    hash   bytea;
    owners uuid[] := '{}';  -- the seals, one array per column
    seqs   bigint[] := '{}';
    ids    bigint[] := '{}';
    prevs  bytea[] := '{}';
    hashes bytea[] := '{}';
BEGIN
    IF EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = NEW.id) THEN
        RETURN NULL;
    END IF;
    FOR r IN SELECT l.* FROM tollgate.audit_log l
             WHERE l.xact = me AND NOT EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = l.id)
             ORDER BY l.account_uuid, l.id LOOP
        IF r.account_uuid IS DISTINCT FROM acct THEN
            IF acct IS NOT NULL THEN
                UPDATE tollgate.audit_heads h SET rows = n, last_hash = hash WHERE h.account_uuid = acct;
            END IF;
            acct := r.account_uuid;
            SELECT * INTO head FROM tollgate.audit_heads h WHERE h.account_uuid = acct FOR UPDATE;
            IF NOT FOUND THEN  -- the account's first audit row
                INSERT INTO tollgate.audit_heads AS h (account_uuid, rows, last_hash)
                VALUES (acct, 0, tollgate.audit_genesis(acct))
                ON CONFLICT (account_uuid) DO NOTHING;
                SELECT * INTO STRICT head FROM tollgate.audit_heads h WHERE h.account_uuid = acct FOR UPDATE;
            END IF;
            IF head.rows = 0 AND EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.account_uuid = acct) THEN
                RAISE EXCEPTION 'the audit chain of account % has seals but lost its head: restore audit_heads', acct
                    USING ERRCODE = 'TG012', CONSTRAINT = 'audit_heads_kept';
            END IF;
            n := head.rows;
            hash := head.last_hash;
        END IF;
        n := n + 1;
        owners := owners || acct;
        seqs := seqs || n;
        ids := ids || r.id;
        prevs := prevs || hash;
        hash := tollgate.audit_row_hash(hash, n, r);
        hashes := hashes || hash;
    END LOOP;
    IF acct IS NOT NULL THEN
        UPDATE tollgate.audit_heads h SET rows = n, last_hash = hash WHERE h.account_uuid = acct;
        INSERT INTO tollgate.audit_seals (account_uuid, seq, audit_id, prev_hash, row_hash)
        SELECT * FROM unnest(owners, seqs, ids, prevs, hashes);
    END IF;
    RETURN NULL;
END
$$;

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
-- The chain is checked whole: rows and seals retention archived (audit_log_archive,
-- audit_seals_archive) are read with the live ones, so an archived row is checked like any
-- other and the first live seal must link to the last archived one.
CREATE OR REPLACE FUNCTION tollgate.verify_audit_chain()
RETURNS TABLE (account_uuid uuid, problem text, seq bigint, audit_id bigint)
LANGUAGE sql STABLE SECURITY DEFINER  -- reporting.audit_chain_problems calls it for analysts
SET search_path = pg_catalog, pg_temp
AS $$
    WITH all_rows AS (
        SELECT l AS r, l.id, l.account_uuid FROM tollgate.audit_log l
        UNION ALL
        SELECT ROW(a.*)::tollgate.audit_log, a.id, a.account_uuid FROM tollgate.audit_log_archive a
    ), all_seals AS (
        SELECT s.* FROM tollgate.audit_seals s
        UNION ALL
        SELECT a.* FROM tollgate.audit_seals_archive a
    ), chained AS (
        SELECT s.account_uuid, s.seq, s.audit_id, s.prev_hash, s.row_hash, l.r, l.id AS found,
               lag(s.row_hash) OVER w AS before_hash, lag(s.seq) OVER w AS before_seq,
               row_number() OVER (PARTITION BY s.account_uuid ORDER BY s.seq DESC) AS from_end
        FROM all_seals s LEFT JOIN all_rows l ON l.id = s.audit_id
        WINDOW w AS (PARTITION BY s.account_uuid ORDER BY s.seq)
    )
    SELECT l.account_uuid, 'unsealed', NULL::bigint, l.id FROM all_rows l
    WHERE NOT EXISTS (SELECT FROM all_seals s WHERE s.audit_id = l.id)
    UNION ALL
    SELECT c.account_uuid, 'missing', c.seq, c.audit_id FROM chained c WHERE c.found IS NULL
    UNION ALL
    SELECT c.account_uuid, 'altered', c.seq, c.audit_id FROM chained c
    WHERE c.found IS NOT NULL
      AND (c.row_hash <> tollgate.audit_row_hash(c.prev_hash, c.seq, c.r) OR (c.r).account_uuid <> c.account_uuid)
    UNION ALL
    SELECT c.account_uuid, 'broken_link', c.seq, c.audit_id FROM chained c
    WHERE c.prev_hash <> coalesce(c.before_hash, tollgate.audit_genesis(c.account_uuid))
    UNION ALL
    SELECT c.account_uuid, 'gap', c.seq, c.audit_id FROM chained c
    WHERE c.seq <> coalesce(c.before_seq, 0) + 1
    UNION ALL
    SELECT coalesce(h.account_uuid, e.account_uuid), 'head', coalesce(h.rows, e.seq), e.audit_id
    FROM tollgate.audit_heads h
    FULL JOIN (SELECT * FROM chained c WHERE c.from_end = 1) e ON e.account_uuid = h.account_uuid
    WHERE h.account_uuid IS NULL  -- a chain whose head was deleted
       OR e.seq IS DISTINCT FROM nullif(h.rows, 0)
       OR e.row_hash IS DISTINCT FROM CASE WHEN h.rows = 0 THEN NULL ELSE h.last_hash END
$$;

-- The part of verify_audit_chain() that costs the same at any size, for monitoring
-- (api.metrics_v1, every scrape): the newest p_rows audit rows and seals, each checked the same
-- ways (unsealed, missing, altered; a link to the seal before it, live or archived, that does
-- not match is broken_link, and a missing one a gap), and the heads of their accounts (head). About 1,000
-- rows take a few milliseconds. An edit further back is found only by verify_audit_chain(),
-- which recomputes every hash: run that on a schedule (docs/OPERATIONS.md).
CREATE OR REPLACE FUNCTION tollgate.audit_recent_problems(p_rows integer)
RETURNS TABLE (account_uuid uuid, problem text, seq bigint, audit_id bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH recent_rows AS (
        SELECT l.id, l.account_uuid FROM tollgate.audit_log l ORDER BY l.id DESC LIMIT p_rows
    ), recent_seals AS (
        SELECT s.* FROM tollgate.audit_seals s ORDER BY s.audit_id DESC LIMIT p_rows
    ), chained AS (
        SELECT s.account_uuid, s.seq, s.audit_id, s.prev_hash, s.row_hash, l AS r, l.id AS found,
               coalesce(b.row_hash, ba.row_hash) AS before_hash, coalesce(b.seq, ba.seq) AS before_seq
        FROM recent_seals s
        LEFT JOIN tollgate.audit_log l ON l.id = s.audit_id
        LEFT JOIN tollgate.audit_seals b ON b.account_uuid = s.account_uuid AND b.seq = s.seq - 1
        -- the seal before may have been archived by retention
        LEFT JOIN tollgate.audit_seals_archive ba ON b.seq IS NULL AND ba.account_uuid = s.account_uuid
                                                 AND ba.seq = s.seq - 1
    )
    SELECT r.account_uuid, 'unsealed', NULL::bigint, r.id FROM recent_rows r
    WHERE NOT EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = r.id)
    UNION ALL
    SELECT c.account_uuid, 'missing', c.seq, c.audit_id FROM chained c WHERE c.found IS NULL
    UNION ALL
    SELECT c.account_uuid, 'altered', c.seq, c.audit_id FROM chained c
    WHERE c.found IS NOT NULL
      AND (c.row_hash <> tollgate.audit_row_hash(c.prev_hash, c.seq, c.r) OR (c.r).account_uuid <> c.account_uuid)
    UNION ALL
    SELECT c.account_uuid, 'broken_link', c.seq, c.audit_id FROM chained c
    WHERE c.prev_hash <> CASE WHEN c.seq = 1 THEN tollgate.audit_genesis(c.account_uuid) ELSE c.before_hash END
    UNION ALL
    SELECT c.account_uuid, 'gap', c.seq, c.audit_id FROM chained c WHERE c.seq > 1 AND c.before_seq IS NULL
    UNION ALL
    SELECT a.account_uuid, 'head', h.rows, NULL::bigint
    FROM (SELECT DISTINCT s.account_uuid FROM recent_seals s) a
    LEFT JOIN tollgate.audit_heads h ON h.account_uuid = a.account_uuid
    LEFT JOIN tollgate.audit_seals e ON e.account_uuid = h.account_uuid AND e.seq = h.rows
    -- the last seal is archived when its row was written before the live ones (seq is commit order)
    LEFT JOIN tollgate.audit_seals_archive ea ON e.seq IS NULL AND ea.account_uuid = h.account_uuid
                                             AND ea.seq = h.rows
    WHERE h.account_uuid IS NULL  -- the head was deleted
       OR coalesce(e.row_hash, ea.row_hash) IS DISTINCT FROM CASE WHEN h.rows = 0 THEN NULL ELSE h.last_hash END
       OR EXISTS (SELECT FROM tollgate.audit_seals n WHERE n.account_uuid = h.account_uuid AND n.seq > h.rows)
$$;

-- ---------------------------------------------------------------------------------------------
-- More changes on the record
-- ---------------------------------------------------------------------------------------------

-- Each posting, in the chain of the account it was made for: after each statement that writes
-- postings (REFERENCING NEW TABLE added), one audit row per posting, in one statement.
CREATE OR REPLACE FUNCTION tollgate.ledger_postings_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text := tollgate.actor();
BEGIN
    INSERT INTO tollgate.audit_log (account_uuid, entity, entity_id, action, old_value, new_value, actor)
    SELECT a.account_uuid, 'ledger_posting', a.id::text, 'posted', NULL, a.kind::text, who
    FROM added a;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.payment_entitlements_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.audit(NEW.account_uuid, 'entitlement', NEW.payment_intent_id::text,
                           CASE TG_OP WHEN 'INSERT' THEN 'granted' ELSE 'used' END,
                           CASE TG_OP WHEN 'UPDATE' THEN OLD.uses_left::text END, NEW.uses_left::text);
    RETURN NULL;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.audit_log ---

CREATE OR REPLACE TRIGGER audit_log_10_stamp
    BEFORE INSERT ON tollgate.audit_log
    FOR EACH ROW
    WHEN (NEW.at IS DISTINCT FROM now() OR NEW.db_role IS DISTINCT FROM session_user
          OR NEW.xact IS DISTINCT FROM pg_current_xact_id()::text::bigint)
    EXECUTE FUNCTION tollgate.audit_stamp();

DROP TRIGGER IF EXISTS audit_log_90_seal ON tollgate.audit_log;

CREATE CONSTRAINT TRIGGER audit_log_90_seal
    AFTER INSERT ON tollgate.audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tollgate.audit_seal();

CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON tollgate.audit_log
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON tollgate.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- Depth 0: the INSERT is a statement of its own, not a trigger's (the function, one level
-- deeper, refuses it).
CREATE OR REPLACE TRIGGER audit_log_written_by_triggers
    BEFORE INSERT ON tollgate.audit_log
    FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION tollgate.refuse_direct_insert();

-- --- tollgate.audit_heads ---

CREATE OR REPLACE TRIGGER audit_heads_kept
    BEFORE DELETE ON tollgate.audit_heads
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER audit_heads_no_truncate
    BEFORE TRUNCATE ON tollgate.audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER audit_heads_written_by_triggers
    BEFORE INSERT ON tollgate.audit_heads
    FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION tollgate.refuse_direct_insert();

-- --- tollgate.audit_seals ---

CREATE OR REPLACE TRIGGER audit_seals_append_only
    BEFORE UPDATE OR DELETE ON tollgate.audit_seals
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER audit_seals_no_truncate
    BEFORE TRUNCATE ON tollgate.audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER audit_seals_written_by_triggers
    BEFORE INSERT ON tollgate.audit_seals
    FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION tollgate.refuse_direct_insert();

-- --- tollgate.audit_log_archive ---

CREATE OR REPLACE TRIGGER audit_log_archive_append_only
    BEFORE UPDATE OR DELETE ON tollgate.audit_log_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER audit_log_archive_moved
    AFTER INSERT ON tollgate.audit_log_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.archive_moves();

CREATE OR REPLACE TRIGGER audit_log_archive_no_truncate
    BEFORE TRUNCATE ON tollgate.audit_log_archive
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER audit_log_archive_written_by_retention
    BEFORE INSERT ON tollgate.audit_log_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'rows are archived by retention only');

-- --- tollgate.audit_seals_archive ---

CREATE OR REPLACE TRIGGER audit_seals_archive_append_only
    BEFORE UPDATE OR DELETE ON tollgate.audit_seals_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER audit_seals_archive_moved
    AFTER INSERT ON tollgate.audit_seals_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.archive_moves();

CREATE OR REPLACE TRIGGER audit_seals_archive_no_truncate
    BEFORE TRUNCATE ON tollgate.audit_seals_archive
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER audit_seals_archive_written_by_retention
    BEFORE INSERT ON tollgate.audit_seals_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'rows are archived by retention only');
