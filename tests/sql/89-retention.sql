-- Retention: only final rows older than the horizon move to the archives; ids stay unique
-- across live and archive; the audit chain verifies across both and finds tampering in the
-- archive; nobody else writes or changes an archive, nor deletes from a live table.
BEGIN;
SELECT plan(63);

-- Seals are written at COMMIT; this test never commits, so it seals at each statement's end.
SET CONSTRAINTS tollgate.audit_log_90_seal IMMEDIATE;

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ria', 'ria-key', false, NULL)) IS NOT NULL, 'ria');
SELECT results_eq($$SELECT consumer FROM api.register_consumer_v1('crm', false)$$, ARRAY['crm'], 'a consumer');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'ria', 'credits', 5.00, 'USD', NULL)), 'pending', 'ria''s credits');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'ria', 'credits', 'settled')), 'settled', 'settled: an outbox event');

CREATE FUNCTION pg_temp.archive(p_kind text, p_older_than interval DEFAULT '0') RETURNS bigint
LANGUAGE sql AS $$ SELECT retention.archive_batch(p_kind, p_older_than, 1000) $$;
CREATE FUNCTION pg_temp.event(p_id text, p_type text, p_object jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', p_id, 'type', p_type, 'created', extract(epoch FROM now())::bigint,
                              'data', jsonb_build_object('object', p_object))
$$;
CREATE FUNCTION pg_temp.ingest(p_event jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT outcome FROM api.ingest_stripe_event_v1(p_event) $$;
CREATE FUNCTION pg_temp.usage(p_ids text[]) RETURNS SETOF text
LANGUAGE sql AS $$
    SELECT outcome FROM api.record_usage_v2('ria-key', ARRAY(
        SELECT ROW(i, NULL, NULL, 'calls', 1, now())::api.usage_event_v1 FROM unnest(p_ids) AS i))
$$;

-- Stripe events: one ignored (final), one pending (its PaymentIntent is unknown: not final).
SELECT is(pg_temp.ingest(pg_temp.event('evt_ignored', 'customer.created', '{"object": "customer", "id": "cus_1"}')),
          'ignored', 'an event of a type Tollgate ignores: final');
SELECT is(pg_temp.ingest(pg_temp.event('evt_waiting', 'payment_intent.succeeded',
                                       '{"object": "payment_intent", "id": "pi_unknown", "status": "succeeded"}')),
          'pending', 'an event of an unknown PaymentIntent: pending');
SELECT results_eq($$SELECT pg_temp.usage(ARRAY['u1', 'u2'])$$, ARRAY['accepted', 'accepted'], 'two usage events');

-- Inside the horizon nothing moves.
SELECT results_eq($$SELECT pg_temp.archive(k, '1 hour') FROM unnest(ARRAY['payment_events', 'usage_events', 'audit', 'outbox']) k$$,
                  ARRAY[0::bigint, 0, 0, 0], 'rows newer than the horizon stay');

-- The outbox event waits for crm: it stays until delivered.
SELECT is(pg_temp.archive('outbox'), 0::bigint, 'an outbox event a consumer still waits for stays');
CREATE TEMP TABLE claimed AS SELECT * FROM api.claim_deliveries_v2('crm', 10, '1 minute', 3);
SELECT is(api.deliveries_done_v2('crm', (SELECT lease_token FROM claimed LIMIT 1), ARRAY(SELECT outbox_id FROM claimed)),
          (SELECT count(*)::integer FROM claimed), 'delivered');
CREATE TEMP TABLE outbox_before AS SELECT * FROM tollgate.outbox;
SELECT is(pg_temp.archive('outbox'), (SELECT count(*) FROM outbox_before), 'then it moves');
SELECT is_empty($$SELECT FROM tollgate.outbox$$, 'the outbox is empty');
SELECT is_empty($$SELECT FROM tollgate.outbox_deliveries$$, 'its delivered deliveries are forgotten');
SELECT bag_eq($$SELECT * FROM tollgate.outbox_archive$$, $$SELECT * FROM outbox_before$$, 'archived as it was');

-- Stripe events: the final one moves, the pending one stays.
SELECT is(pg_temp.archive('payment_events'), 1::bigint, 'one Stripe event moved');
SELECT results_eq($$SELECT id, state::text FROM tollgate.payment_events$$, $$VALUES ('evt_waiting', 'pending')$$,
                  'the pending event stays live');
SELECT results_eq($$SELECT id, state::text FROM tollgate.payment_events_archive$$, $$VALUES ('evt_ignored', 'ignored')$$,
                  'the ignored one is archived');
SELECT is(pg_temp.ingest(pg_temp.event('evt_ignored', 'customer.created', '{"object": "customer", "id": "cus_1"}')),
          'duplicate', 'an archived event id delivered again is a duplicate');
SELECT is((SELECT count(*)::int FROM tollgate.payment_events WHERE id = 'evt_ignored'), 0, 'and is not stored again');

-- Usage events: moved; their ids are still duplicates; usage reads count them.
SELECT is(pg_temp.archive('usage_events'), 2::bigint, 'two usage events moved');
SELECT results_eq($$SELECT pg_temp.usage(ARRAY['u1', 'u3'])$$, ARRAY['duplicate', 'accepted'],
                  'an archived usage event id is a duplicate; a new one is accepted');
SELECT results_eq($$SELECT events FROM api.usage_v1('ria-key', NULL, 'calls', 'day', NULL, NULL)$$, ARRAY[3::bigint],
                  'the account''s usage counts archived events');
SELECT results_eq($$SELECT sum(events) FROM reporting.usage_daily WHERE account_id = 'ria'$$, ARRAY[3::numeric],
                  'so does the analysts'' view');

-- The audit trail: sealed rows move with their seals; the chain still verifies.
CREATE TEMP TABLE audit_before AS SELECT count(*) AS n FROM tollgate.audit_log;
SELECT ok((SELECT n FROM audit_before) >= 3, 'an audit trail');
SELECT is(pg_temp.archive('audit'), (SELECT n FROM audit_before), 'every sealed row moved');
SELECT is((SELECT count(*) FROM tollgate.audit_seals_archive), (SELECT n FROM audit_before), 'with its seal');
SELECT is_empty($$SELECT * FROM tollgate.verify_audit_chain()$$, 'the chain verifies across the archive');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'ria', 't-2', 1, 'USD', NULL)), 'pending',
          'a new audited change after archiving');
SELECT ok((SELECT count(*) FROM tollgate.audit_log) > 0, 'live rows again');
SELECT is_empty($$SELECT * FROM tollgate.verify_audit_chain()$$, 'the live chain links to the archived part');
SELECT is_empty($$SELECT * FROM tollgate.audit_recent_problems(1000)$$, 'so does the recent check');
SELECT ok((SELECT count(*) FROM reporting.audit_trail) >= (SELECT n FROM audit_before) + 1,
          'the analysts'' audit trail shows archived and live rows');
SELECT is(pg_temp.archive('audit'), (SELECT count(*) FROM tollgate.audit_log), 'a second run moves only what is new');
SELECT is(pg_temp.archive('usage_events'), 1::bigint, 'and the usage event recorded since');
SELECT results_eq($$SELECT pg_temp.archive(k) FROM unnest(ARRAY['payment_events', 'usage_events', 'audit', 'outbox']) k$$,
                  ARRAY[0::bigint, 0, 0, 0], 'then nothing: retention is idempotent');

-- Nobody else writes or changes an archive; the live tables still refuse a DELETE.
SELECT throws_ok($$UPDATE tollgate.audit_log_archive SET note = 'x'$$, 'TG012', NULL, 'an archived row is never changed');
SELECT throws_ok($$DELETE FROM tollgate.usage_events_archive$$, 'TG012', NULL, 'nor removed');
SELECT throws_ok($$INSERT INTO tollgate.payment_events_archive SELECT * FROM tollgate.payment_events$$, 'TG012', NULL,
                 'nor written around retention');
SELECT throws_ok($$DELETE FROM tollgate.payment_events$$, 'TG012', NULL, 'a live event is still never deleted');
SET LOCAL ROLE tollgate_owner;
SELECT throws_ok($$DELETE FROM tollgate.audit_seals_archive$$, '42501', NULL, 'the owner may not delete an archived seal');
SELECT throws_ok($$INSERT INTO tollgate.outbox_archive SELECT * FROM tollgate.outbox_archive$$, '42501', NULL,
                 'nor write an archive');
RESET ROLE;
SET LOCAL ROLE tollgate_app;
SELECT throws_ok($$SELECT retention.archive_batch('audit', '0', 10)$$, '42501', NULL, 'the service cannot run retention');
RESET ROLE;
SET LOCAL ROLE tollgate_analyst;
SELECT throws_ok($$SELECT * FROM tollgate.audit_log_archive$$, '42501', NULL, 'analysts read no archive table directly');
RESET ROLE;

-- Retention's own role (which a member may SET ROLE to) deletes only final rows, and only as
-- moved to their archive; an archive row is one moved from its live table, as it was there.
SELECT is(pg_temp.ingest(pg_temp.event('evt_final', 'customer.created', '{"object": "customer", "id": "cus_2"}')),
          'ignored', 'another final Stripe event');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'ria', 't-2', 'settled')), 'settled',
          'an outbox event crm waits for');
SET LOCAL ROLE tollgate_retention;
SELECT throws_ok($$DELETE FROM tollgate.payment_events WHERE state = 'pending'$$, 'TG012', NULL,
                 'retention deletes no pending Stripe event');
SELECT throws_ok($$DELETE FROM tollgate.payment_events WHERE id = 'evt_final'$$, 'TG012', NULL,
                 'nor a final one it has not archived');
SELECT throws_ok($$INSERT INTO tollgate.payment_events_archive SELECT * FROM tollgate.payment_events WHERE state = 'pending'$$,
                 '23502', NULL, 'nor archives a pending one (an archived event has processed_at)');
SELECT throws_ok($$INSERT INTO tollgate.payment_events_archive
                   SELECT (jsonb_populate_record(NULL::tollgate.payment_events_archive, to_jsonb(a) || '{"id": "evt_future"}')).*
                   FROM tollgate.payment_events_archive a LIMIT 1$$,
                 'TG012', 'tollgate.payment_events_archive: an archived row is moved from its live table, which has no such row',
                 'an archive row for an event never received is refused');
SELECT throws_ok($$INSERT INTO tollgate.payment_events_archive
                   SELECT (jsonb_populate_record(NULL::tollgate.payment_events_archive, to_jsonb(e) || '{"type": "charge.refunded"}')).*
                   FROM tollgate.payment_events e WHERE e.id = 'evt_final'$$,
                 'TG012', NULL, 'so is one that differs from its live row');
SELECT throws_ok($$DELETE FROM tollgate.outbox_deliveries$$, 'TG012', NULL, 'retention forgets no pending delivery');
SELECT throws_ok($$INSERT INTO tollgate.outbox_archive SELECT * FROM tollgate.outbox$$, 'TG012', NULL,
                 'nor archives an outbox event a consumer waits for');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, 'TG012', NULL, 'nor deletes audit rows');
RESET ROLE;
SELECT is(pg_temp.archive('payment_events'), 1::bigint, 'the batch still moves the final event');
SELECT results_eq($$SELECT id FROM tollgate.payment_events$$, ARRAY['evt_waiting'], 'and leaves the pending one');
SELECT is((SELECT count(*)::int FROM tollgate.outbox), 1, 'the outbox event crm waits for stays');

-- Who may do what: retention deletes from six tables and writes the archives, nothing else.
SELECT is(ARRAY(SELECT c.relname::text FROM pg_class c
                WHERE c.relnamespace = 'tollgate'::regnamespace AND c.relkind = 'r'
                  AND has_table_privilege('tollgate_retention', c.oid, 'DELETE') ORDER BY 1),
          ARRAY['audit_log', 'audit_seals', 'outbox', 'outbox_deliveries', 'payment_events', 'usage_events'],
          'retention may delete from the six tables it archives, and from no other');
SELECT is(ARRAY(SELECT c.relname::text FROM pg_class c
                WHERE c.relnamespace = 'tollgate'::regnamespace AND c.relkind = 'r'
                  AND (has_table_privilege('tollgate_retention', c.oid, 'INSERT')
                       OR has_table_privilege('tollgate_retention', c.oid, 'UPDATE')) ORDER BY 1),
          ARRAY['audit_log_archive', 'audit_seals_archive', 'outbox_archive', 'payment_events_archive',
                'usage_events_archive'],
          'it writes the archives only, and changes no row anywhere');
SELECT ok(NOT has_schema_privilege('tollgate_app', 'retention', 'USAGE')
          AND NOT has_schema_privilege('tollgate_listener', 'retention', 'USAGE')
          AND NOT has_schema_privilege('tollgate_analyst', 'retention', 'USAGE')
          AND NOT has_schema_privilege('tollgate_owner', 'retention', 'USAGE'),
          'no other role reaches the retention functions');
SELECT ok(NOT has_function_privilege('public', 'retention.archive_batch(text, interval, integer)', 'EXECUTE'),
          'nor may PUBLIC execute them');

-- Tampering in the archive is found.
SET LOCAL session_replication_role = replica;  -- a superuser writing around the triggers
UPDATE tollgate.audit_log_archive SET new_value = 'forged'
WHERE id = (SELECT min(id) FROM tollgate.audit_log_archive
            WHERE new_value IS NOT NULL AND account_uuid = (SELECT id FROM tollgate.accounts WHERE external_id = 'ops'));
DELETE FROM tollgate.audit_seals_archive WHERE seq = 2 AND account_uuid = (SELECT id FROM tollgate.accounts WHERE external_id = 'ria');
SET LOCAL session_replication_role = origin;
SELECT ok((SELECT count(*) FROM tollgate.verify_audit_chain() WHERE problem = 'altered') = 1,
          'an archived row edited is found altered');
SELECT ok((SELECT count(*) FROM tollgate.verify_audit_chain() WHERE problem IN ('gap', 'unsealed')) >= 2,
          'an archived seal removed leaves a gap and an unsealed row');

SELECT * FROM finish();
ROLLBACK;
