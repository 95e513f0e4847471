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
-- tollgate_retention, which tollgate.refuse_change lets delete from the live tables and insert
-- into the archives; it has DELETE on those six tables and nothing else (90-grants.sql), and
-- only retention.archive_batch (SECURITY DEFINER, in schema retention, which only
-- tollgate_retention and its members, the migrating role, may use) runs as it. Nobody updates
-- or deletes archived rows, the owner included.
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

SET LOCAL ROLE tollgate_retention;

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
    WITH picked AS (
        SELECT e.id FROM tollgate.payment_events e
        WHERE e.received_at <= p_cutoff AND e.processed_at <= p_cutoff
        LIMIT p_batch
    ), moved AS (
        DELETE FROM tollgate.payment_events e USING picked p WHERE e.id = p.id RETURNING e.*
    )
    INSERT INTO tollgate.payment_events_archive SELECT * FROM moved;
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
    WITH picked AS (
        SELECT u.account_uuid, u.id FROM tollgate.usage_events u
        WHERE u.received_at <= p_cutoff AND u.account_uuid = ANY (accounts)
        LIMIT p_batch
    ), moved AS (
        DELETE FROM tollgate.usage_events u USING picked p
        WHERE u.account_uuid = p.account_uuid AND u.id = p.id RETURNING u.*
    )
    INSERT INTO tollgate.usage_events_archive SELECT * FROM moved;
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
    WITH moved AS (
        DELETE FROM tollgate.audit_log l WHERE l.id = ANY (ids) RETURNING l.*
    ), seals AS (
        DELETE FROM tollgate.audit_seals s USING moved m WHERE s.audit_id = m.id RETURNING s.*
    ), kept AS (
        INSERT INTO tollgate.audit_log_archive SELECT * FROM moved
    )
    INSERT INTO tollgate.audit_seals_archive SELECT * FROM seals;
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
    FOR r IN SELECT o.id, o.created_at,
                    EXISTS (SELECT FROM tollgate.outbox_consumers c
                            JOIN tollgate.outbox_deliveries d ON d.consumer = c.name AND d.outbox_id = o.id
                            WHERE d.status <> 'delivered')
                    OR EXISTS (SELECT FROM tollgate.outbox_consumers c
                               WHERE c.catching_up
                                 AND o.xact_id >= pg_snapshot_xmin(c.registered_snapshot)
                                 AND NOT pg_visible_in_snapshot(o.xact_id, c.registered_snapshot))
                    AS waited_for
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
    WITH moved AS (
        DELETE FROM tollgate.outbox o WHERE o.id = ANY (ids) RETURNING o.*
    )
    INSERT INTO tollgate.outbox_archive SELECT * FROM moved;
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
    retention.archive_payment_events(timestamptz, integer),
    retention.archive_usage_events(timestamptz, integer),
    retention.archive_audit(timestamptz, integer),
    retention.archive_outbox(timestamptz, integer),
    retention.archive_batch(text, interval, integer)
FROM PUBLIC;

COMMENT ON FUNCTION retention.archive_batch(text, interval, integer) IS
    'Retention: move one bounded batch of final rows older than the horizon into the archive tables.';

SET LOCAL ROLE tollgate_owner;
