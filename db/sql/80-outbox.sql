-- Delivering the outbox to consumers, at least once.
--
-- Every outbox row is fanned out to one delivery row per registered consumer, in the
-- transaction that wrote it, and wakes listeners with NOTIFY tollgate_outbox (the durable
-- state is the delivery row: a listener that was down catches up by polling). A listener
-- leases due deliveries FOR UPDATE SKIP LOCKED with a lease token, runs its handler outside
-- any transaction, and with that token marks them delivered (or failed, with exponential
-- backoff, then dead). A consumer registered while writers were in flight also gets their
-- events, added by its claims (outbox_catch_up): registering takes no lock writers wait on.
--
-- The outbox row is the durable announcement, written in the transaction that makes the
-- change (tollgate.emit); NOTIFY is only the wake-up.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.outbox (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Stable id consumers use to recognise a redelivery.
    event_id    uuid        NOT NULL DEFAULT gen_random_uuid() CONSTRAINT outbox_event_id_key UNIQUE,
    account_uuid  uuid        NOT NULL CONSTRAINT outbox_account_uuid_fkey REFERENCES tollgate.accounts,
    -- e.g. payment.settled; NOTIFY goes to the channel named like the topic with _ for .
    topic       text        NOT NULL CONSTRAINT outbox_topic_format CHECK (topic ~ '^[a-z_]+\.[a-z_]+$'),
    -- Ids, not documents: small enough for a NOTIFY payload (limit 8000 bytes).
    payload     jsonb       NOT NULL CONSTRAINT outbox_payload_size CHECK (octet_length(payload::text) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The transaction that wrote the row, for a new consumer's catch-up. NULL for rows written
    -- before consumers recorded their registration (committed before any consumer registered).
    xact_id     xid8        DEFAULT pg_current_xact_id()
);

CREATE INDEX outbox_account_uuid_idx ON tollgate.outbox (account_uuid, id);
CREATE INDEX outbox_xact_id_idx ON tollgate.outbox (xact_id);

COMMENT ON TABLE tollgate.outbox IS 'Append-only announcements of settled and refunded payments; NOTIFY is only the wake-up.';

-- A consumer sees every event written after it was registered (or all, if registered
-- "from the start"), once; several processes of one consumer share its deliveries.
-- Operator-wide configuration, so it carries no account.
CREATE TABLE tollgate.outbox_consumers (
    name                text        PRIMARY KEY CONSTRAINT outbox_consumers_name_format CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- The registering transaction: catch-up starts once it is seen committed.
    registered_xact     xid8,
    -- What the registration saw: events of transactions it did not see committed are the
    -- consumer's, whether or not their fan-out saw it.
    registered_snapshot pg_snapshot,
    -- Transactions (virtual ids) running when the registration was first seen committed, and
    -- the first transaction id not yet assigned then: until all of those have ended, a writer
    -- may still commit an event fanned out without this consumer.
    catch_up_waits      text[],
    catch_up_xmax       xid8,
    -- Claims still look for such events.
    catching_up         boolean     NOT NULL DEFAULT false
);

CREATE TYPE tollgate.delivery_status AS ENUM (
    'pending',    -- waiting (next_attempt_at) or being handled
    'delivered',  -- the handler succeeded; committed with this row
    'dead'        -- the handler failed max-attempts times; an operator may replay it
);

CREATE TABLE tollgate.outbox_deliveries (
    consumer        text        NOT NULL CONSTRAINT outbox_deliveries_consumer_fkey REFERENCES tollgate.outbox_consumers,
    outbox_id       bigint      NOT NULL CONSTRAINT outbox_deliveries_outbox_id_fkey REFERENCES tollgate.outbox,
    account_uuid      uuid        NOT NULL CONSTRAINT outbox_deliveries_account_uuid_fkey REFERENCES tollgate.accounts,
    status          tollgate.delivery_status NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0 CONSTRAINT outbox_deliveries_attempts_non_negative CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    -- The token of the claim that leased the delivery (NULL: not leased, or handed back).
    lease_token     uuid,
    PRIMARY KEY (consumer, outbox_id),
    CONSTRAINT outbox_deliveries_delivered_when CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);

-- What a consumer should handle next.
CREATE INDEX outbox_deliveries_due_idx ON tollgate.outbox_deliveries (consumer, next_attempt_at, outbox_id)
    WHERE status = 'pending';
CREATE INDEX outbox_deliveries_dead_idx ON tollgate.outbox_deliveries (consumer, outbox_id) WHERE status = 'dead';
-- Finding a consumer's deliveries that used up their attempts without reading all of its
-- pending ones: only a leased delivery (attempts > 0) can have used them up.
CREATE INDEX outbox_deliveries_retrying_idx ON tollgate.outbox_deliveries (consumer, next_attempt_at)
    WHERE status = 'pending' AND attempts > 0;

COMMENT ON TABLE tollgate.outbox_deliveries IS 'One row per consumer and outbox event: at-least-once delivery state.';

-- Outbox events older than the retention horizon that every consumer has received (no
-- delivery left but delivered ones, which are forgotten with them, as `tollgate outbox prune`
-- forgets them), moved here by retention.archive_batch('outbox', ...) and by nothing else.
-- Same columns as outbox.
CREATE TABLE tollgate.outbox_archive (
    id          bigint      CONSTRAINT outbox_archive_pkey PRIMARY KEY,
    event_id    uuid        NOT NULL CONSTRAINT outbox_archive_event_id_key UNIQUE,
    account_uuid  uuid        NOT NULL CONSTRAINT outbox_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    topic       text        NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    xact_id     xid8
);

CREATE INDEX outbox_archive_account_uuid_idx ON tollgate.outbox_archive (account_uuid, id);

COMMENT ON TABLE tollgate.outbox_archive IS 'Outbox events every consumer received, moved out of outbox by retention; append-only.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- Outbox
-- ---------------------------------------------------------------------------------------------

-- Announce a change: a durable outbox row, in the caller's transaction.
CREATE OR REPLACE FUNCTION tollgate.emit(p_account_uuid uuid, p_topic text, p_payload jsonb)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO tollgate.outbox (account_uuid, topic, payload)
    VALUES (p_account_uuid, p_topic, p_payload)
    RETURNING id
$$;

-- Every outbox row wakes listeners of the channel named after its topic (payment.settled ->
-- payment_settled). NOTIFY is delivered on commit, so listeners never see a rolled-back change.
-- The payload carries ids only: anyone can send a NOTIFY statement on any channel, so a
-- listener reads the outbox row it names (id and event id) instead of trusting the message.
-- account_id is the account's external id, as everywhere outside the tables.
-- SECURITY DEFINER: pg_notify is the owner's alone (db/sql/90-grants.sql).
CREATE OR REPLACE FUNCTION tollgate.outbox_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify(
        replace(NEW.topic, '.', '_'),
        jsonb_build_object('outbox_id', NEW.id, 'event_id', NEW.event_id, 'topic', NEW.topic,
                           'account_id', (SELECT a.external_id FROM tollgate.accounts a
                                          WHERE a.id = NEW.account_uuid))::text);
    RETURN NULL;
END
$$;

-- SECURITY DEFINER: pg_notify is the owner's alone (db/sql/90-grants.sql).
CREATE OR REPLACE FUNCTION tollgate.outbox_fan_out() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO tollgate.outbox_deliveries (consumer, outbox_id, account_uuid)
    SELECT c.name, NEW.id, NEW.account_uuid FROM tollgate.outbox_consumers c;
    -- A constant payload: one wake-up per transaction, however many events it wrote.
    PERFORM pg_notify('tollgate_outbox', '');
    RETURN NULL;
END
$$;

-- Delivery rows keep their identity; a delivered one stays delivered.
CREATE OR REPLACE FUNCTION tollgate.outbox_deliveries_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.consumer, NEW.outbox_id, NEW.account_uuid) IS DISTINCT FROM (OLD.consumer, OLD.outbox_id, OLD.account_uuid) THEN
        RAISE EXCEPTION 'delivery %/%: its identity never changes', OLD.consumer, OLD.outbox_id
            USING ERRCODE = 'TG011', CONSTRAINT = 'outbox_deliveries_identity';
    END IF;
    IF OLD.status = 'delivered' AND NEW.status <> 'delivered' THEN
        RAISE EXCEPTION 'delivery %/% was delivered', OLD.consumer, OLD.outbox_id
            USING ERRCODE = 'TG010', CONSTRAINT = 'delivery_transition_allowed';
    END IF;
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- api: for `tollgate listen` (role tollgate_listener)
-- ---------------------------------------------------------------------------------------------

-- Register a consumer (idempotent). A new consumer receives events committed after its
-- registration; with p_from_start also every event already in the outbox. No lock: writers in
-- flight fan out without the new consumer (they do not see it yet), so the registration
-- records the snapshot it ran in, and the consumer's claims add every event it did not see
-- committed until no writer that could have missed it is left (tollgate.outbox_catch_up). A
-- listener idle in the registering transaction delays no writer. It holds retention's outbox
-- lock shared (retention.archive_outbox), so no batch archives an event the registration
-- does not see committed (READ COMMITTED: the snapshot recorded is taken after the lock).
CREATE OR REPLACE FUNCTION api.register_consumer_v1(p_consumer text, p_from_start boolean)
RETURNS TABLE (consumer text, created boolean, backfilled bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n bigint := 0;
BEGIN
    IF EXISTS (SELECT FROM tollgate.outbox_consumers c WHERE c.name = p_consumer) THEN
        RETURN QUERY SELECT p_consumer, false, 0::bigint;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('tollgate:retention:outbox', 0));
    INSERT INTO tollgate.outbox_consumers (name, registered_xact, registered_snapshot, catching_up)
    VALUES (p_consumer, pg_current_xact_id(), pg_current_snapshot(), true)
    ON CONFLICT (name) DO NOTHING;
    IF NOT FOUND THEN
        RETURN QUERY SELECT p_consumer, false, 0::bigint;
        RETURN;
    END IF;
    IF p_from_start THEN
        INSERT INTO tollgate.outbox_deliveries (consumer, outbox_id, account_uuid)
        SELECT p_consumer, o.id, o.account_uuid FROM tollgate.outbox o;
        GET DIAGNOSTICS n = ROW_COUNT;
        -- Statistics taken before this backfill say the new consumer has no deliveries; the
        -- claims planned with them would read all of its rows for each batch.
        IF n > 1000 THEN
            ANALYZE tollgate.outbox_deliveries;
        END IF;
    END IF;
    RETURN QUERY SELECT p_consumer, true, n;
END
$$;

-- Transactions running in this database now (virtual transaction ids, which every transaction
-- holds from its first statement, with or without a transaction id), other than the caller's.
CREATE OR REPLACE FUNCTION tollgate.running_transactions() RETURNS text[]
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(l.virtualxid), '{}')
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_backend_pid()
      AND a.datname = current_database()
$$;

-- A consumer's catch-up, run by its claims until done. A writer whose fan-out missed the
-- consumer started before the registration committed: at the first look after that commit it
-- is still running (recorded in catch_up_waits, with the next transaction id then, for
-- prepared transactions) or has committed. Each look adds the events of every transaction
-- the registration did not see committed (ON CONFLICT: most were fanned out to it); the look
-- after the last recorded writer ended is the last one. The claim's transaction must be READ
-- COMMITTED for that look to see those writers' events (otherwise catch-up just goes on).
CREATE OR REPLACE FUNCTION tollgate.outbox_catch_up(p_consumer text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c        tollgate.outbox_consumers;
    pending  text[];
    next_xid xid8;
    finished boolean;
BEGIN
    SELECT * INTO c FROM tollgate.outbox_consumers
    WHERE name = p_consumer AND catching_up
    FOR NO KEY UPDATE SKIP LOCKED;
    -- Nothing to catch up, another process of the consumer is at it, or the registration is
    -- this very transaction's (not committed yet: the look after its commit is the first).
    IF NOT FOUND OR pg_xact_status(c.registered_xact) IS DISTINCT FROM 'committed' THEN
        RETURN;
    END IF;
    pending := tollgate.running_transactions();
    IF c.catch_up_waits IS NULL THEN
        next_xid := pg_snapshot_xmax(pg_current_snapshot());
    ELSE
        pending := ARRAY(SELECT unnest(c.catch_up_waits) INTERSECT SELECT unnest(pending));
        next_xid := c.catch_up_xmax;
    END IF;
    finished := cardinality(pending) = 0
                AND pg_snapshot_xmin(pg_current_snapshot()) >= next_xid
                AND current_setting('transaction_isolation') = 'read committed';
    -- A statement of its own, so a snapshot taken after the look above.
    INSERT INTO tollgate.outbox_deliveries (consumer, outbox_id, account_uuid)
    SELECT p_consumer, o.id, o.account_uuid FROM tollgate.outbox o
    WHERE o.xact_id >= pg_snapshot_xmin(c.registered_snapshot)
      AND NOT pg_visible_in_snapshot(o.xact_id, c.registered_snapshot)
    ON CONFLICT (consumer, outbox_id) DO NOTHING;
    UPDATE tollgate.outbox_consumers
    SET catch_up_waits = pending, catch_up_xmax = next_xid, catching_up = NOT finished
    WHERE name = p_consumer;
END
$$;

-- Remove a consumer and its undelivered events (a mistyped --consumer, a retired service).
CREATE OR REPLACE FUNCTION api.unregister_consumer_v1(p_consumer text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM tollgate.outbox_deliveries WHERE consumer = p_consumer;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM tollgate.outbox_consumers WHERE name = p_consumer;
    RETURN n;
END
$$;

-- Forget deliveries finished more than p_older_than ago (the outbox rows themselves stay).
CREATE OR REPLACE FUNCTION api.prune_deliveries_v1(p_older_than interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM tollgate.outbox_deliveries
    WHERE status = 'delivered' AND delivered_at < now() - p_older_than;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Lease up to p_limit due deliveries of a consumer, oldest first, in a short transaction of
-- their own: each attempt is counted now, and the delivery is not due again for p_lease (the
-- handler runs outside any transaction; if the process dies, the lease runs out and another
-- claims it). Every row carries the claim's lease token: marking a delivery done or failed,
-- renewing or releasing it needs that token, and a later claim of the same delivery replaces
-- it. A delivery whose attempts are used up (its handler kept crashing the process) is
-- dead-lettered instead of handed out again.
CREATE OR REPLACE FUNCTION api.claim_deliveries_v2(
    p_consumer text, p_limit integer, p_lease interval, p_max_attempts integer
) RETURNS TABLE (lease_token uuid, outbox_id bigint, event_id uuid, topic text, account_id text,
                 payload jsonb, created_at timestamptz, attempt integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    token uuid := gen_random_uuid();
    ids   bigint[];
BEGIN
    PERFORM tollgate.outbox_catch_up(p_consumer);
    -- Only a leased delivery (attempts > 0) can have used up its attempts: the condition lets
    -- outbox_deliveries_retrying_idx find those few rows instead of every pending one, so a
    -- backlog drains in linear time.
    UPDATE tollgate.outbox_deliveries d
    SET status = 'dead', lease_token = NULL,
        last_error = coalesce(d.last_error, 'the handler never reported back')
    WHERE d.consumer = p_consumer AND d.status = 'pending' AND d.attempts > 0
      AND d.next_attempt_at <= clock_timestamp()
      AND d.attempts >= greatest(p_max_attempts, 1);
    -- The batch, locked; then leased by primary key. An array rather than a join: a plan
    -- from statistics that undercount the consumer's deliveries (a consumer registered
    -- since the last ANALYZE) would otherwise join every one of its rows to the batch.
    SELECT array_agg(due.outbox_id) INTO ids
    FROM (SELECT d.outbox_id FROM tollgate.outbox_deliveries d
          WHERE d.consumer = p_consumer AND d.status = 'pending' AND d.next_attempt_at <= clock_timestamp()
          ORDER BY d.next_attempt_at, d.outbox_id
          LIMIT greatest(p_limit, 1)
          FOR UPDATE SKIP LOCKED) due;
    RETURN QUERY
    WITH leased AS (
        UPDATE tollgate.outbox_deliveries d
        SET attempts = d.attempts + 1, next_attempt_at = clock_timestamp() + p_lease, lease_token = token
        WHERE d.consumer = p_consumer AND d.outbox_id = ANY (ids)
        RETURNING d.outbox_id, d.attempts
    )
    SELECT token, o.id, o.event_id, o.topic, a.external_id, o.payload, o.created_at, l.attempts
    FROM leased l
    JOIN tollgate.outbox o ON o.id = l.outbox_id
    JOIN tollgate.accounts a ON a.id = o.account_uuid
    ORDER BY o.id;
END
$$;

-- Acks: each changes only the deliveries of p_consumer that p_lease_token still leases and
-- that are pending, and returns how many it changed (a delivery leased by another claim since,
-- or never leased by this token, is left as it is).
CREATE OR REPLACE FUNCTION api.deliveries_done_v2(p_consumer text, p_lease_token uuid, p_outbox_ids bigint[])
RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH done AS (
        UPDATE tollgate.outbox_deliveries
        SET status = 'delivered', delivered_at = now(), last_error = NULL, lease_token = NULL
        WHERE consumer = p_consumer AND lease_token = p_lease_token AND outbox_id = ANY (p_outbox_ids)
          AND status = 'pending'
        RETURNING 1
    )
    SELECT count(*)::integer FROM done
$$;

-- Keep leased deliveries for another p_lease (a long batch still being worked through).
CREATE OR REPLACE FUNCTION api.renew_leases_v2(
    p_consumer text, p_lease_token uuid, p_outbox_ids bigint[], p_lease interval
) RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH renewed AS (
        UPDATE tollgate.outbox_deliveries SET next_attempt_at = clock_timestamp() + p_lease
        WHERE consumer = p_consumer AND lease_token = p_lease_token AND outbox_id = ANY (p_outbox_ids)
          AND status = 'pending'
        RETURNING 1
    )
    SELECT count(*)::integer FROM renewed
$$;

-- Hand leased deliveries back untried (a listener stopping between events).
CREATE OR REPLACE FUNCTION api.release_deliveries_v2(p_consumer text, p_lease_token uuid, p_outbox_ids bigint[])
RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH released AS (
        UPDATE tollgate.outbox_deliveries
        SET attempts = greatest(attempts - 1, 0), next_attempt_at = clock_timestamp(), lease_token = NULL
        WHERE consumer = p_consumer AND lease_token = p_lease_token AND outbox_id = ANY (p_outbox_ids)
          AND status = 'pending'
        RETURNING 1
    )
    SELECT count(*)::integer FROM released
$$;

-- A handler failed (its attempt was counted when leased): try again after
-- p_retry_base x 2^(attempts - 1), at most an hour, with up to 10% jitter; or, with the
-- attempts used up, dead-letter it. NULL: the token does not lease that delivery.
CREATE OR REPLACE FUNCTION api.delivery_failed_v2(
    p_consumer text, p_lease_token uuid, p_outbox_id bigint, p_error text, p_max_attempts integer,
    p_retry_base interval
) RETURNS text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE tollgate.outbox_deliveries
    SET last_error = left(p_error, 2000),
        status = CASE WHEN attempts >= p_max_attempts THEN 'dead' ELSE 'pending' END::tollgate.delivery_status,
        next_attempt_at = clock_timestamp()
            + least(p_retry_base * power(2, least(greatest(attempts - 1, 0), 30)), interval '1 hour')
              * (1 + random() / 10),
        lease_token = NULL
    WHERE consumer = p_consumer AND lease_token = p_lease_token AND outbox_id = p_outbox_id
      AND status = 'pending'
    RETURNING status::text
$$;

-- When the consumer's next retry falls due (NULL: nothing waits), for the listener's sleep.
CREATE OR REPLACE FUNCTION api.next_delivery_due_v1(p_consumer text) RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(d.next_attempt_at) FROM tollgate.outbox_deliveries d
    WHERE d.consumer = p_consumer AND d.status = 'pending'
$$;

CREATE OR REPLACE FUNCTION api.dead_deliveries_v1(p_consumer text)
RETURNS TABLE (outbox_id bigint, event_id uuid, topic text, account_id text, attempts integer,
               last_error text, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.id, o.event_id, o.topic, a.external_id, d.attempts, d.last_error, o.created_at
    FROM tollgate.outbox_deliveries d
    JOIN tollgate.outbox o ON o.id = d.outbox_id
    JOIN tollgate.accounts a ON a.id = o.account_uuid
    WHERE d.consumer = p_consumer AND d.status = 'dead'
    ORDER BY o.id
$$;

-- Send dead deliveries again (one event by its id, or all of the consumer's): they become
-- pending with a fresh count of attempts, and listeners are woken.
CREATE OR REPLACE FUNCTION api.replay_deliveries_v1(p_consumer text, p_event_id uuid) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    UPDATE tollgate.outbox_deliveries d
    SET status = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL, lease_token = NULL
    WHERE d.consumer = p_consumer AND d.status = 'dead'
      AND (p_event_id IS NULL OR d.outbox_id = (SELECT o.id FROM tollgate.outbox o WHERE o.event_id = p_event_id));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('tollgate_outbox', '');
    END IF;
    RETURN n;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Credits low
-- ---------------------------------------------------------------------------------------------

-- Admin keys: set the balance below which the account is told its credits are low (NULL: never).
CREATE OR REPLACE FUNCTION api.set_low_balance_v1(p_api_key text, p_account text, p_currency text, p_threshold numeric)
RETURNS TABLE (account_id text, currency text, low_balance text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k     tollgate.api_keys := tollgate.require_admin(p_api_key);
    acct  tollgate.accounts := tollgate.account_for(k, p_account);
    minor bigint;
BEGIN
    PERFORM tollgate.to_minor(1, p_currency);  -- the currency must exist
    IF p_threshold IS NOT NULL THEN
        minor := tollgate.to_minor(p_threshold, p_currency);
    END IF;
    UPDATE tollgate.ledger_accounts SET low_balance = minor
    WHERE id = tollgate.ledger_account(acct.id, 'main', p_currency);
    RETURN QUERY SELECT acct.external_id, p_currency, tollgate.format_minor(minor, p_currency);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- An account's events
-- ---------------------------------------------------------------------------------------------

-- The outbox events of an account (its own key's account, or any for admin keys), as listeners
-- receive them, newest first, optionally of one topic: a page of at most p_limit (1-500) of
-- those older than the outbox row p_after (the outbox_id of the last of the previous page).
CREATE OR REPLACE FUNCTION api.list_events_v1(
    p_api_key text, p_account text, p_topic text, p_limit integer, p_after bigint
) RETURNS TABLE (outbox_id bigint, event_id uuid, topic text, account_id text, payload jsonb,
                 created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct tollgate.accounts := tollgate.account_for(tollgate.authenticate(p_api_key), p_account);
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    RETURN QUERY
    SELECT o.id, o.event_id, o.topic, acct.external_id, o.payload, o.created_at
    FROM tollgate.outbox o
    WHERE o.account_uuid = acct.id
      AND (p_topic IS NULL OR o.topic = p_topic)
      AND (p_after IS NULL OR o.id < p_after)
    ORDER BY o.id DESC
    LIMIT p_limit;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.outbox ---

CREATE OR REPLACE TRIGGER outbox_append_only
    BEFORE UPDATE OR DELETE ON tollgate.outbox
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER outbox_fan_out
    AFTER INSERT ON tollgate.outbox
    FOR EACH ROW EXECUTE FUNCTION tollgate.outbox_fan_out();

CREATE OR REPLACE TRIGGER outbox_no_truncate
    BEFORE TRUNCATE ON tollgate.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER outbox_notify
    AFTER INSERT ON tollgate.outbox
    FOR EACH ROW EXECUTE FUNCTION tollgate.outbox_notify();

CREATE OR REPLACE TRIGGER outbox_written_by_triggers
    BEFORE INSERT ON tollgate.outbox
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_direct_insert();

-- --- tollgate.outbox_archive ---

CREATE OR REPLACE TRIGGER outbox_archive_append_only
    BEFORE UPDATE OR DELETE ON tollgate.outbox_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER outbox_archive_moved
    AFTER INSERT ON tollgate.outbox_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.archive_moves();

CREATE OR REPLACE TRIGGER outbox_archive_no_truncate
    BEFORE TRUNCATE ON tollgate.outbox_archive
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER outbox_archive_written_by_retention
    BEFORE INSERT ON tollgate.outbox_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'rows are archived by retention only');

-- --- tollgate.outbox_deliveries ---

-- Only an update that could break a rule calls the function: leasing and acking, two updates
-- per delivery, skip a PL/pgSQL call each.
CREATE OR REPLACE TRIGGER outbox_deliveries_10_guard
    BEFORE UPDATE ON tollgate.outbox_deliveries
    FOR EACH ROW
    WHEN (OLD.status = 'delivered'
          OR (NEW.consumer, NEW.outbox_id, NEW.account_uuid) IS DISTINCT FROM (OLD.consumer, OLD.outbox_id, OLD.account_uuid))
    EXECUTE FUNCTION tollgate.outbox_deliveries_guard();

-- Retention forgets delivered deliveries only (db/sql/89-retention.sql).
CREATE OR REPLACE TRIGGER outbox_deliveries_kept_until_delivered
    BEFORE DELETE ON tollgate.outbox_deliveries
    FOR EACH ROW WHEN (OLD.status <> 'delivered')
    EXECUTE FUNCTION tollgate.retention_forgets_delivered();
