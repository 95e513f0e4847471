-- What GET /metrics reports of the database (api/metrics.py): one call per scrape, made by the
-- service's role, as rows of (metric, labels, value) that the service turns into Prometheus
-- gauges named tollgate_<metric>. Every figure reads a partial index (pending events, pending
-- and dead deliveries, active holds) or a bounded window (the newest audit rows), so a scrape
-- costs what the backlog costs, not what the history does: milliseconds when all is well.
-- The figures are counts and sums across accounts: no account, key or payment is named.

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Stripe events stored but not applied yet: pending, an early event whose PaymentIntent is not
-- recorded yet (or never will be: another integration's PaymentIntents sharing the Stripe
-- account); received, stored by a webhook and waiting for the applier (its lag: the age of the
-- oldest should stay well under a second).
CREATE OR REPLACE FUNCTION tollgate.metrics_stripe_events()
RETURNS TABLE (metric text, labels jsonb, value numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.metric, '{}'::jsonb, m.value
    FROM (SELECT count(*) AS pending, min(e.received_at) AS oldest
          FROM tollgate.payment_events e WHERE e.state = 'pending') p
    CROSS JOIN tollgate.received_stripe_events() r
    CROSS JOIN LATERAL (VALUES
        ('stripe_events_pending', p.pending::numeric),
        ('stripe_events_pending_oldest_age_seconds', coalesce(extract(epoch FROM now() - p.oldest), 0)),
        ('stripe_events_received', r.waiting::numeric),
        ('stripe_events_received_oldest_age_seconds', coalesce(extract(epoch FROM now() - r.oldest), 0))
    ) m (metric, value)
$$;

-- Per registered consumer: deliveries not delivered yet (waiting, leased or backing off), the
-- age of the oldest of their events, and dead letters. Every consumer has all three, 0 included.
CREATE OR REPLACE FUNCTION tollgate.metrics_outbox()
RETURNS TABLE (metric text, labels jsonb, value numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.metric, jsonb_build_object('consumer', c.name), m.value
    FROM tollgate.outbox_consumers c
    CROSS JOIN LATERAL (
        SELECT count(*) AS backlog, min(d.outbox_id) AS oldest_id
        FROM tollgate.outbox_deliveries d WHERE d.consumer = c.name AND d.status = 'pending'
    ) p
    CROSS JOIN LATERAL (
        SELECT count(*) AS dead
        FROM tollgate.outbox_deliveries d WHERE d.consumer = c.name AND d.status = 'dead'
    ) x
    LEFT JOIN tollgate.outbox o ON o.id = p.oldest_id
    CROSS JOIN LATERAL (VALUES
        ('outbox_backlog', p.backlog::numeric),
        ('outbox_oldest_pending_age_seconds', coalesce(extract(epoch FROM now() - o.created_at), 0)),
        ('outbox_dead_letters', x.dead::numeric)
    ) m (metric, value)
$$;

-- Holds that reserve credits now (active and not past their expiry), per currency: how many,
-- and how much (in minor units). A currency without one has no row.
CREATE OR REPLACE FUNCTION tollgate.metrics_holds()
RETURNS TABLE (metric text, labels jsonb, value numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.metric, jsonb_build_object('currency', h.currency), m.value
    FROM (SELECT currency, count(*) AS holds, sum(amount) AS amount
          FROM tollgate.holds WHERE status = 'active' AND expires_at > now()
          GROUP BY currency) h
    CROSS JOIN LATERAL (VALUES
        ('holds_active', h.holds::numeric),
        ('holds_active_amount_minor', h.amount::numeric)
    ) m (metric, value)
$$;

-- Every gauge, in one call. Granted to tollgate_app (90-grants.sql): GET /metrics reads it
-- through the service's pool, with no key, so it returns nothing an account owns.
CREATE OR REPLACE FUNCTION api.metrics_v1()
RETURNS TABLE (metric text, labels jsonb, value numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM tollgate.metrics_stripe_events()
    UNION ALL
    SELECT * FROM tollgate.metrics_outbox()
    UNION ALL
    SELECT * FROM tollgate.metrics_holds()
    UNION ALL
    -- The newest 1,000 audit rows only: the full check is verify_audit_chain(), on a schedule.
    SELECT 'audit_chain_problems', '{}'::jsonb, count(*)::numeric
    FROM tollgate.audit_recent_problems(1000)
$$;
