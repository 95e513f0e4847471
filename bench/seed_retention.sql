-- History for bench/retention.py (parameter: rows): %(rows)s Stripe events in a final state,
-- %(rows)s usage events and %(rows)s sealed audit rows, all 200 days old, for 100 accounts of
-- their own. Written in bulk with triggers off (session_replication_role = replica, superuser
-- only); the audit rows' seals and heads are computed here as tollgate.audit_seal would have,
-- so tollgate.verify_audit_chain() finds nothing (the benchmark checks). Three rows per
-- writing transaction (xact, negative so as never to be a real transaction's id): the seal
-- finds a transaction's rows by xact with a generic plan, which one value shared by every
-- seeded row would turn into a scan of the whole trail.
SET session_replication_role = replica;

INSERT INTO tollgate.accounts (external_id)
SELECT 'old_' || i FROM generate_series(1, 100) i;

CREATE TEMPORARY TABLE old_accounts ON COMMIT DROP AS
SELECT row_number() OVER (ORDER BY a.id) - 1 AS n, a.id FROM tollgate.accounts a WHERE a.external_id LIKE 'old\_%%';

-- About 1 kB of payload each, as a small Stripe event is.
INSERT INTO tollgate.payment_events
    (id, type, stripe_created, payload, state, note, received_at, processed_at)
SELECT 'evt_old_' || g, 'customer.updated', t,
       jsonb_build_object('id', 'evt_old_' || g, 'type', 'customer.updated', 'created', extract(epoch FROM t)::bigint,
                          'data', jsonb_build_object('object', jsonb_build_object(
                              'object', 'customer', 'id', 'cus_' || g, 'description', repeat(md5(g::text), 28)))),
       'ignored', 'not an event Tollgate acts on', t, t
FROM generate_series(1, %(rows)s) g, LATERAL (SELECT now() - interval '200 days' + g * interval '10 ms' AS t) x;

INSERT INTO tollgate.usage_events (account_uuid, id, agent_id, metric, quantity, occurred_at, received_at)
SELECT a.id, 'old-' || g, 'agent-1', 'tokens', 1 + g %% 1000, t, t
FROM generate_series(1, %(rows)s) g
JOIN old_accounts a ON a.n = g %% 100,
LATERAL (SELECT now() - interval '200 days' + g * interval '10 ms' AS t) x;

INSERT INTO tollgate.audit_log (account_uuid, entity, entity_id, action, old_value, new_value, actor, db_role, at, xact)
SELECT a.id, 'usage', 'old-' || g, 'recorded', NULL, (1 + g %% 1000)::text, 'db:bench', 'bench',
       now() - interval '200 days' + g * interval '10 ms', -(g / 3)
FROM generate_series(1, %(rows)s) g
JOIN old_accounts a ON a.n = g %% 100
ORDER BY g;

-- Each account's chain, from its genesis, in id order.
DO $seal$
DECLARE
    r    tollgate.audit_log;
    acct uuid;
    n    bigint;
    h    bytea;
BEGIN
    FOR r IN SELECT l.* FROM tollgate.audit_log l JOIN old_accounts a ON a.id = l.account_uuid
             ORDER BY l.account_uuid, l.id LOOP
        IF r.account_uuid IS DISTINCT FROM acct THEN
            IF acct IS NOT NULL THEN
                INSERT INTO tollgate.audit_heads (account_uuid, rows, last_hash) VALUES (acct, n, h);
            END IF;
            acct := r.account_uuid;
            n := 0;
            h := tollgate.audit_genesis(acct);
        END IF;
        n := n + 1;
        INSERT INTO tollgate.audit_seals (account_uuid, seq, audit_id, prev_hash, row_hash)
        VALUES (acct, n, r.id, h, tollgate.audit_row_hash(h, n, r));
        h := tollgate.audit_row_hash(h, n, r);
    END LOOP;
    IF acct IS NOT NULL THEN
        INSERT INTO tollgate.audit_heads (account_uuid, rows, last_hash) VALUES (acct, n, h);
    END IF;
END
$seal$;

SET session_replication_role = origin;
