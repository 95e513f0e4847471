-- Generic guards used by several tables: who is acting, append-only tables, immutable columns.
--
-- SQLSTATEs raised by Tollgate's own rules (class TG); db/errors.py maps them to API errors:
--   TG001 invalid API key            TG002 admin key required      TG003 not found / not yours
--   TG010 payment transition refused TG011 immutable column        TG012 change refused (append-only,
--   TG020 idempotency key reused with another request                     reference data, trigger-written)
--   TG021 idempotency key in use by a request in progress           TG030 malformed Stripe event
--   TG031 Stripe webhook signature missing, wrong or stale
-- Each RAISE also names the rule in CONSTRAINT, so errors carry a stable name.

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Who is acting, for the audit trail: set per transaction by the api functions
-- ("key:<id>", "stripe:<event id>"); otherwise the database role of a direct SQL session.
CREATE OR REPLACE FUNCTION tollgate.actor() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(nullif(current_setting('tollgate.actor', true), ''), 'db:' || session_user)
$$;

CREATE OR REPLACE FUNCTION tollgate.set_actor(p_actor text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT set_config('tollgate.actor', p_actor, true)
$$;

-- Trigger: refuse the operation. Arguments: the rule's name (default append_only) and why.
-- The rule reference_data lets the change through in a transaction that called
-- tollgate.allow_reference_data_change() (a migration). Retention is the one sanctioned way
-- past the others: running as role tollgate_retention (the SECURITY DEFINER functions of
-- 89-retention.sql, or a member of that role), an INSERT into an archive table (rule
-- archived) goes through, and its trigger (tollgate.archive_moves) deletes the live row it
-- copies; that DELETE goes through only for a row in a final state that the archive holds
-- exactly as it is (retention.may_delete). tollgate_retention has DELETE on the six tables
-- retention moves rows out of and nothing else (90-grants.sql).
CREATE OR REPLACE FUNCTION tollgate.refuse_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rule text := coalesce(TG_ARGV[0], 'append_only');
BEGIN
    IF current_user = 'tollgate_retention' THEN
        IF rule = 'archived' AND TG_OP = 'INSERT' THEN
            RETURN NEW;
        END IF;
        -- Nested, so no other role ever calls into schema retention.
        IF rule = 'append_only' AND TG_OP = 'DELETE' THEN
            IF retention.may_delete(TG_TABLE_NAME, to_jsonb(OLD)) THEN
                RETURN OLD;
            END IF;
        END IF;
    END IF;
    IF rule = 'reference_data'
       AND current_setting('tollgate.reference_data_change', true) = 'on' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;  -- NULL for a statement-level trigger (TRUNCATE), where it is ignored
    END IF;
    RAISE EXCEPTION 'tollgate.%: % refused (%)', TG_TABLE_NAME, TG_OP,
            coalesce(TG_ARGV[1], 'rows are never changed or removed')
        USING ERRCODE = 'TG012',
              CONSTRAINT = TG_TABLE_NAME || '_' || rule,
              SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
END
$$;

-- Lets this transaction change reference data (tables guarded by *_reference_data triggers):
-- a migration that changes currencies or a status machine calls it first. Only the owner may
-- write reference data (no grants), so the setting opens nothing to others.
CREATE OR REPLACE FUNCTION tollgate.allow_reference_data_change() RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT set_config('tollgate.reference_data_change', 'on', true)
$$;

COMMENT ON FUNCTION tollgate.allow_reference_data_change() IS
    'Lets this transaction change reference data (guarded by *_reference_data triggers): for migrations.';

-- Trigger (BEFORE INSERT): rows of this table are written only by other triggers (the audit
-- trail, the outbox), never by a statement of their own.
CREATE OR REPLACE FUNCTION tollgate.refuse_direct_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'tollgate.% rows are written by Tollgate''s triggers only', TG_TABLE_NAME
            USING ERRCODE = 'TG012',
                  CONSTRAINT = TG_TABLE_NAME || '_written_by_triggers',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$;

-- Trigger (BEFORE UPDATE): the columns named in the trigger arguments never change. A name
-- ending in "?" may be filled in once (NULL -> value) and then never changes.
CREATE OR REPLACE FUNCTION tollgate.keep_columns() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_row jsonb := to_jsonb(OLD);
    new_row jsonb := to_jsonb(NEW);
    arg     text;
    col     text;
BEGIN
    FOREACH arg IN ARRAY TG_ARGV LOOP
        col := rtrim(arg, '?');
        IF old_row -> col IS DISTINCT FROM new_row -> col
           AND NOT (arg LIKE '%?' AND old_row -> col = 'null'::jsonb) THEN
            RAISE EXCEPTION 'tollgate.%.% cannot change once set (row %)', TG_TABLE_NAME, col,
                    coalesce(old_row ->> 'id', old_row::text)
                USING ERRCODE = 'TG011',
                      CONSTRAINT = TG_TABLE_NAME || '_' || col || '_immutable',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = col;
        END IF;
    END LOOP;
    RETURN NEW;
END
$$;

-- Trigger (BEFORE UPDATE): a status change must be a row of the transitions table named in the
-- first argument; the second names the entity in the error (SQLSTATE TG010, constraint
-- <entity>_transition_allowed). Used by payments, transactions, holds and reviews. Their
-- tables are looked up by static queries, planned once per session (this runs per status
-- change); another table named here is looked up by dynamic SQL.
CREATE OR REPLACE FUNCTION tollgate.check_transition() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    allowed boolean;
BEGIN
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    END IF;
    CASE TG_ARGV[0]
        WHEN 'payment_transitions' THEN
            allowed := EXISTS (SELECT FROM tollgate.payment_transitions t
                               WHERE t.from_status = OLD.status AND t.to_status = NEW.status);
        WHEN 'transaction_transitions' THEN
            allowed := EXISTS (SELECT FROM tollgate.transaction_transitions t
                               WHERE t.from_status = OLD.status AND t.to_status = NEW.status);
        WHEN 'hold_transitions' THEN
            allowed := EXISTS (SELECT FROM tollgate.hold_transitions t
                               WHERE t.from_status = OLD.status AND t.to_status = NEW.status);
        WHEN 'review_transitions' THEN
            allowed := EXISTS (SELECT FROM tollgate.review_transitions t
                               WHERE t.from_status = OLD.status AND t.to_status = NEW.status);
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT FROM tollgate.%I WHERE from_status = $1 AND to_status = $2)',
                           TG_ARGV[0])
            INTO allowed USING OLD.status, NEW.status;
    END CASE;
    IF NOT allowed THEN
        RAISE EXCEPTION '% % cannot go from % to %', TG_ARGV[1], OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'TG010', CONSTRAINT = TG_ARGV[1] || '_transition_allowed',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'status';
    END IF;
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Lists: every api.list_*_v1 answers a page of at most p_limit rows (1-500) after p_after, the
-- key of the last row of the previous page (NULL: from the start)
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tollgate.check_page_limit(p_limit integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION 'a page holds 1 to 500 rows, not %', coalesce(p_limit::text, 'none')
            USING ERRCODE = 'check_violation', CONSTRAINT = 'page_limit';
    END IF;
END
$$;

-- A page's p_after that names no row of the list (its own, as the key sees it): refused the
-- same way whether or not such a row exists elsewhere.
CREATE OR REPLACE FUNCTION tollgate.refuse_cursor(p_what text, p_after text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'the cursor names no % of this list (%)', p_what, p_after
        USING ERRCODE = 'check_violation', CONSTRAINT = 'page_cursor';
END
$$;
