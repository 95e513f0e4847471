-- Retention: what keeps the tables that only grow (Stripe events, usage events, the audit
-- trail, the outbox) the size of their recent history, so that a write costs the same after
-- years as on the first day.
--
-- Not partitioning. Native range partitioning by time would need every unique constraint to
-- hold the partition key, and the keys that make writes idempotent (a Stripe event id, a
-- usage event's (account, id)) must stay unique forever. So old rows in a final state are
-- moved, in bounded batches, to archive tables of the same shape in schema tollgate
-- (*_archive, declared in each concern's file, beside its live table), by the functions of
-- schema retention (this file). An archive keeps its table's primary key, and the writers
-- that must recognise an old id look it up there too: one index probe, whatever the archive
-- holds. What a batch moves:
--
--   payment_events  events in a final state (processed_at set) received and processed before
--                   the horizon; received and pending events stay.
--   usage_events    events received before the horizon.
--   audit           sealed audit rows written before the horizon, with their seals; the chain
--                   is verified across both (tollgate.verify_audit_chain). An unsealed row
--                   (written around the triggers: verify reports it) is never moved.
--   outbox          events created before the horizon that no consumer still waits for (no
--                   pending or dead delivery, and none a consumer still catching up is owed);
--                   their delivered deliveries are forgotten, as `tollgate outbox prune`
--                   forgets them.
--
-- The only way past the append-only triggers: these functions belong to role
-- tollgate_retention, which has DELETE on those six tables, INSERT on the archives and nothing
-- else (90-grants.sql); retention.archive_batch (SECURITY DEFINER, in schema retention, which
-- only tollgate_retention and its members, the migrating role, may use) runs as it. The rule
-- itself is in the triggers, so it holds for a member who SETs ROLE tollgate_retention too: a
-- batch inserts copies of final rows into an archive, and the archive's trigger
-- (tollgate.archive_moves) deletes each live row in the same statement; tollgate.refuse_change
-- lets that DELETE through only for a row in a final state that its archive holds exactly as
-- it is (retention.may_delete: the predicates above), and an archive row whose live row is not
-- deleted with it (never there, not final, or not the same) fails the statement. A delivery
-- retention forgets must be delivered (outbox_deliveries_kept_until_delivered).
--
-- Archived rows: the triggers refuse UPDATE, DELETE and TRUNCATE to every role, and the
-- owner has no INSERT, UPDATE or DELETE on them. What does not hold against the owner (NOLOGIN,
-- only migrations act as it) or a superuser: the owner could re-grant itself privileges and
-- disable the triggers, and a superuser can write around them (session_replication_role).
-- Such a change to the archived audit trail is found by tollgate.verify_audit_chain; the other
-- archives have no such check.
--
-- Concurrency: one batch of a kind at a time (a transaction-level advisory lock per kind; a
-- second run waits, then finds the rows gone). Writers are never refused: the Stripe webhook
-- takes that lock shared before it looks for a duplicate (tollgate.store_stripe_event), so an
-- event is never archived between its lookup and its insert; a usage batch holds its
-- accounts' locks (api.record_usage_v2), which the usage step takes too.

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- The retention role reaches the tables it moves rows of (its privileges: 90-grants.sql); its
-- functions live in its own schema, retention, which no other role may use.
GRANT USAGE ON SCHEMA tollgate TO tollgate_retention;

-- Trigger (AFTER INSERT on each archive table): an archived row is one moved, not written. The
-- live row it copies is deleted here, in the same statement, and that DELETE passes the
-- live table's append-only trigger only if the row is final and the archive holds it exactly
-- as it was (retention.may_delete): a row that is not there, not final, or not the same
-- fails the whole statement. So retention batches insert into the archives, and the rows
-- leave their live tables through this trigger. It takes the lock the batch of its kind
-- takes (already held by the batch): a row moved by hand is serialised with the writers too.
CREATE OR REPLACE FUNCTION tollgate.archive_moves() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE TG_TABLE_NAME
        WHEN 'payment_events_archive' THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:retention:payment_events', 0));
            DELETE FROM tollgate.payment_events e WHERE e.id = NEW.id;
        WHEN 'usage_events_archive' THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:usage:' || NEW.account_uuid, 0));
            DELETE FROM tollgate.usage_events u WHERE u.account_uuid = NEW.account_uuid AND u.id = NEW.id;
        WHEN 'audit_log_archive' THEN
            DELETE FROM tollgate.audit_log l WHERE l.id = NEW.id;
        WHEN 'audit_seals_archive' THEN
            DELETE FROM tollgate.audit_seals s WHERE s.audit_id = NEW.audit_id;
        WHEN 'outbox_archive' THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:retention:outbox', 0));
            DELETE FROM tollgate.outbox o WHERE o.id = NEW.id;
    END CASE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tollgate.%: an archived row is moved from its live table, which has no such row',
                TG_TABLE_NAME
            USING ERRCODE = 'TG012', CONSTRAINT = TG_TABLE_NAME || '_moved',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

-- Trigger (BEFORE DELETE on outbox_deliveries): retention forgets delivered deliveries only; a
-- pending or dead one keeps its event in the outbox.
CREATE OR REPLACE FUNCTION tollgate.retention_forgets_delivered() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_user = 'tollgate_retention' AND OLD.status <> 'delivered' THEN
        RAISE EXCEPTION 'tollgate.outbox_deliveries: retention forgets delivered deliveries only, not a % one',
                OLD.status
            USING ERRCODE = 'TG012', CONSTRAINT = 'outbox_deliveries_kept_until_delivered',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN OLD;
END
$$;

SET LOCAL ROLE tollgate_retention;

-- Whether an outbox event is still owed to a consumer: a pending or dead delivery, or a
-- consumer still catching up (tollgate.outbox_catch_up) whose registration did not see the
-- event's transaction committed (the catch-up's own predicate), with or without a delivery.
-- The registering transaction's own events are not: those written after the registration
-- were fanned out to it, and those written before were visible to it.
CREATE OR REPLACE FUNCTION retention.outbox_owed(p_id bigint, p_xact_id xid8) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM tollgate.outbox_deliveries d
                   WHERE d.outbox_id = p_id AND d.status <> 'delivered')
        OR EXISTS (SELECT FROM tollgate.outbox_consumers c
                   WHERE c.catching_up AND p_xact_id <> c.registered_xact
                     AND p_xact_id >= pg_snapshot_xmin(c.registered_snapshot)
                     AND NOT pg_visible_in_snapshot(p_xact_id, c.registered_snapshot))
$$;

-- Whether retention may delete this row (p_old, as jsonb) of live table p_table: the row is
-- in a final state and its archive holds it exactly as it is. Asked by tollgate.refuse_change
-- for a DELETE as tollgate_retention; every other row stays.
CREATE OR REPLACE FUNCTION retention.may_delete(p_table text, p_old jsonb) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE p_table
        WHEN 'payment_events' THEN
            RETURN p_old ->> 'processed_at' IS NOT NULL
                AND EXISTS (SELECT FROM tollgate.payment_events_archive a
                            WHERE a.id = p_old ->> 'id' AND to_jsonb(a) = p_old);
        WHEN 'usage_events' THEN
            RETURN EXISTS (SELECT FROM tollgate.usage_events_archive a
                           WHERE a.account_uuid = (p_old ->> 'account_uuid')::uuid
                             AND a.id = p_old ->> 'id' AND to_jsonb(a) = p_old);
        WHEN 'audit_log' THEN
            RETURN EXISTS (SELECT FROM tollgate.audit_log_archive a
                           WHERE a.id = (p_old ->> 'id')::bigint AND to_jsonb(a) = p_old)
                AND (EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = (p_old ->> 'id')::bigint)
                     OR EXISTS (SELECT FROM tollgate.audit_seals_archive s
                                WHERE s.audit_id = (p_old ->> 'id')::bigint));
        WHEN 'audit_seals' THEN
            RETURN EXISTS (SELECT FROM tollgate.audit_seals_archive a
                           WHERE a.audit_id = (p_old ->> 'audit_id')::bigint AND to_jsonb(a) = p_old);
        WHEN 'outbox' THEN
            RETURN EXISTS (SELECT FROM tollgate.outbox_archive a
                           WHERE a.id = (p_old ->> 'id')::bigint AND to_jsonb(a) = p_old)
                AND NOT retention.outbox_owed((p_old ->> 'id')::bigint, (p_old ->> 'xact_id')::xid8);
        ELSE
            RETURN false;
    END CASE;
END
$$;

-- Stripe events in a final state, received and processed at or before p_cutoff: at most p_batch.
-- The lock is the one store_stripe_event takes shared: a webhook in flight finishes first, and
-- one arriving now waits for this batch, then finds its id archived.
CREATE OR REPLACE FUNCTION retention.archive_payment_events(p_cutoff timestamptz, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:retention:payment_events', 0));
    -- The archive's trigger deletes each live row (tollgate.archive_moves).
    INSERT INTO tollgate.payment_events_archive
    SELECT e.* FROM tollgate.payment_events e
    WHERE e.received_at <= p_cutoff AND e.processed_at <= p_cutoff
    LIMIT p_batch;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Usage events received at or before p_cutoff: at most p_batch, under their accounts' usage locks
-- (taken in account order, as api.record_usage_v2 takes them), so a batch of the same account
-- looks for duplicates either before the move or after it, never in between.
CREATE OR REPLACE FUNCTION retention.archive_usage_events(p_cutoff timestamptz, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    accounts uuid[];
    n        bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:retention:usage_events', 0));
    SELECT array_agg(DISTINCT u.account_uuid) INTO accounts
    FROM (SELECT u.account_uuid FROM tollgate.usage_events u WHERE u.received_at <= p_cutoff LIMIT p_batch) u;
    IF accounts IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:usage:' || x.account, 0))
    FROM unnest(accounts) AS x (account) ORDER BY x.account;
    INSERT INTO tollgate.usage_events_archive
    SELECT u.* FROM tollgate.usage_events u
    WHERE u.received_at <= p_cutoff AND u.account_uuid = ANY (accounts)
    LIMIT p_batch;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Sealed audit rows written at or before p_cutoff, with their seals: the oldest rows first, in id
-- order, stopping at the first row inside the horizon, so a batch reads about p_batch rows
-- (plus any unsealed ones it passes over) however long the trail is.
CREATE OR REPLACE FUNCTION retention.archive_audit(p_cutoff timestamptz, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r   record;
    ids bigint[] := '{}';
    n   bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:retention:audit', 0));
    FOR r IN SELECT l.id, l.at, EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = l.id) AS sealed
             FROM tollgate.audit_log l ORDER BY l.id LOOP
        EXIT WHEN r.at > p_cutoff OR cardinality(ids) >= p_batch;
        IF r.sealed THEN
            ids := ids || r.id;
        END IF;
    END LOOP;
    INSERT INTO tollgate.audit_seals_archive SELECT s.* FROM tollgate.audit_seals s WHERE s.audit_id = ANY (ids);
    INSERT INTO tollgate.audit_log_archive SELECT l.* FROM tollgate.audit_log l WHERE l.id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Outbox events created at or before p_cutoff that every registered consumer has received (a
-- pending or dead delivery keeps its event, and only it, in the outbox), oldest first, with
-- their delivered deliveries (forgotten). In id order, stopping at the first event inside the
-- horizon. A consumer still catching up (tollgate.outbox_catch_up) is owed the events its
-- registration did not see committed, whether or not they have a delivery for it yet: those
-- stay (the catch-up's own predicate). A registration in flight holds the lock taken here,
-- shared (api.register_consumer_v1): a batch waits for it to commit, then sees the consumer.
CREATE OR REPLACE FUNCTION retention.archive_outbox(p_cutoff timestamptz, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r   record;
    ids bigint[] := '{}';
    n   bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:retention:outbox', 0));
    FOR r IN SELECT o.id, o.created_at, retention.outbox_owed(o.id, o.xact_id) AS waited_for
             FROM tollgate.outbox o ORDER BY o.id LOOP
        EXIT WHEN r.created_at > p_cutoff OR cardinality(ids) >= p_batch;
        IF NOT r.waited_for THEN
            ids := ids || r.id;
        END IF;
    END LOOP;
    -- Delivered deliveries never change again; a delivery added since the loop looked (a
    -- consumer registered from the start) makes the DELETE fail its foreign key: the batch
    -- rolls back whole, and the next one leaves that event.
    DELETE FROM tollgate.outbox_deliveries d
    USING tollgate.outbox_consumers c
    WHERE d.consumer = c.name AND d.outbox_id = ANY (ids) AND d.status = 'delivered';
    INSERT INTO tollgate.outbox_archive SELECT o.* FROM tollgate.outbox o WHERE o.id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- One bounded batch of retention, in a transaction of the caller's: move at most p_batch rows
-- of one kind (payment_events, usage_events, audit, outbox) older than p_older_than to its
-- archive; returns how many were moved (0: nothing older is left to move). `tollgate archive`
-- calls it, one autocommit call per batch, until every kind answers 0.
CREATE OR REPLACE FUNCTION retention.archive_batch(p_kind text, p_older_than interval, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '0' THEN
        RAISE EXCEPTION 'the retention horizon is an interval of zero or more, not %', p_older_than
            USING ERRCODE = 'check_violation', CONSTRAINT = 'retention_horizon';
    END IF;
    IF p_batch IS NULL OR p_batch NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'a retention batch is 1 to 10000 rows, not %', p_batch
            USING ERRCODE = 'check_violation', CONSTRAINT = 'retention_batch';
    END IF;
    CASE p_kind
        WHEN 'payment_events' THEN RETURN retention.archive_payment_events(cutoff, p_batch);
        WHEN 'usage_events' THEN RETURN retention.archive_usage_events(cutoff, p_batch);
        WHEN 'audit' THEN RETURN retention.archive_audit(cutoff, p_batch);
        WHEN 'outbox' THEN RETURN retention.archive_outbox(cutoff, p_batch);
        ELSE
            RAISE EXCEPTION 'retention moves payment_events, usage_events, audit or outbox, not %', p_kind
                USING ERRCODE = 'check_violation', CONSTRAINT = 'retention_kind';
    END CASE;
END
$$;

REVOKE EXECUTE ON FUNCTION
    retention.outbox_owed(bigint, xid8),
    retention.may_delete(text, jsonb),
    retention.archive_payment_events(timestamptz, integer),
    retention.archive_usage_events(timestamptz, integer),
    retention.archive_audit(timestamptz, integer),
    retention.archive_outbox(timestamptz, integer),
    retention.archive_batch(text, interval, integer)
FROM PUBLIC;

COMMENT ON FUNCTION retention.archive_batch(text, interval, integer) IS
    'Retention: move one bounded batch of final rows older than the horizon into the archive tables.';

SET LOCAL ROLE tollgate_owner;
