-- api.metrics_v1: the database's gauges for GET /metrics, each counted right, and the cheap
-- audit check finding tampering among the newest rows (and, by design, not further back).
BEGIN;
SELECT plan(27);

-- Seals are written at COMMIT; this test never commits, so it seals at each statement's end.
SET CONSTRAINTS tollgate.audit_log_90_seal IMMEDIATE;

CREATE FUNCTION pg_temp.gauge(p_metric text, p_labels jsonb DEFAULT '{}') RETURNS numeric
LANGUAGE sql AS $$ SELECT value FROM api.metrics_v1() WHERE metric = p_metric AND labels = p_labels $$;

SELECT ok(has_function_privilege('tollgate_app', 'api.metrics_v1()', 'EXECUTE'), 'the service''s role may read the gauges');
SELECT ok(NOT has_function_privilege('tollgate_analyst', 'api.metrics_v1()', 'EXECUTE'), 'analysts read the reporting views instead');
SELECT results_eq($$SELECT metric, labels, value FROM api.metrics_v1() ORDER BY metric$$,
                  $$VALUES ('audit_chain_problems', '{}'::jsonb, 0::numeric), ('stripe_events_pending', '{}', 0),
                           ('stripe_events_pending_oldest_age_seconds', '{}', 0), ('stripe_events_received', '{}', 0),
                           ('stripe_events_received_oldest_age_seconds', '{}', 0)$$,
                  'a new database: nothing pending, held or wrong, and no consumer');

-- A Stripe event for a PaymentIntent Tollgate has not recorded stays pending.
SELECT is((SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_early_1',
           'type', 'payment_intent.succeeded', 'created', extract(epoch FROM now())::bigint,
           'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', 'pi_unknown_1',
                                                                   'status', 'succeeded'))))),
          'pending', 'an early event');
ALTER TABLE tollgate.payment_events DISABLE TRIGGER USER;  -- received 90 s ago
UPDATE tollgate.payment_events SET received_at = now() - interval '90 seconds' WHERE id = 'evt_early_1';
ALTER TABLE tollgate.payment_events ENABLE TRIGGER USER;
SELECT is(pg_temp.gauge('stripe_events_pending'), 1::numeric, 'it is counted pending');
SELECT is(pg_temp.gauge('stripe_events_pending_oldest_age_seconds'), 90::numeric, 'with its age');
-- One a webhook stored, not applied yet: the applier's backlog.
SELECT ok((SELECT stored FROM tollgate.store_stripe_event(jsonb_build_object('id', 'evt_stored_1',
           'type', 'payment_intent.succeeded', 'created', extract(epoch FROM now())::bigint,
           'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', 'pi_unknown_2',
                                                                   'status', 'succeeded'))))),
          'an event stored for the applier');
SELECT results_eq($$SELECT pg_temp.gauge('stripe_events_received'), pg_temp.gauge('stripe_events_pending')$$,
                  $$VALUES (1::numeric, 1::numeric)$$, 'it is counted received, apart from the pending one');
SELECT is(api.apply_stripe_events_v1(100, false), 1, 'the applier looks at it');
SELECT results_eq($$SELECT pg_temp.gauge('stripe_events_received'), pg_temp.gauge('stripe_events_pending')$$,
                  $$VALUES (0::numeric, 2::numeric)$$, 'no backlog; its payment is unknown, so it is pending now');

-- Outbox: two consumers, one of which dead-letters an event.
SELECT ok((SELECT created FROM api.register_consumer_v1('crm', false)), 'a consumer');
SELECT ok((SELECT created FROM api.register_consumer_v1('ledger-export', false)), 'another');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ann', 'ann-key', false, NULL)) IS NOT NULL, 'ann');
SELECT is((SELECT status FROM api.create_transaction_v1('ann-key', NULL, 't-1', 10, 'USD', NULL)), 'pending', 'a top-up');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'ann', 't-1', 'settled')), 'settled', 'settled: announced');
SELECT is(pg_temp.gauge('outbox_backlog', '{"consumer": "crm"}'),
          (SELECT count(*)::numeric FROM tollgate.outbox), 'every event waits for crm');
SELECT is(pg_temp.gauge('outbox_dead_letters', '{"consumer": "crm"}'), 0::numeric, 'no dead letter yet');
SELECT is((SELECT api.delivery_failed_v2('crm', c.lease_token, c.outbox_id, 'boom', 1, '1 second')
           FROM api.claim_deliveries_v2('crm', 1, '1 minute', 1) c), 'dead', 'crm''s handler fails its only attempt');
SELECT results_eq($$SELECT pg_temp.gauge('outbox_backlog', '{"consumer": "crm"}') + 1,
                           pg_temp.gauge('outbox_dead_letters', '{"consumer": "crm"}'),
                           pg_temp.gauge('outbox_dead_letters', '{"consumer": "ledger-export"}')$$,
                  $$SELECT count(*)::numeric, 1::numeric, 0::numeric FROM tollgate.outbox$$,
                  'one dead letter for crm, out of its backlog; none for the other consumer');

-- Holds reserving credits, per currency.
SELECT is((SELECT price FROM api.set_action_price_v1('ops-key', 'report.generate', 0.50, 'USD', NULL)), '0.50', 'a price');
SELECT is((SELECT via FROM api.authorize_v1('ann-key', NULL, 'report.generate', NULL, NULL, NULL, 900)), 'credits',
          'a hold of 0.50 USD');
SELECT results_eq($$SELECT pg_temp.gauge('holds_active', '{"currency": "USD"}'),
                           pg_temp.gauge('holds_active_amount_minor', '{"currency": "USD"}')$$,
                  $$VALUES (1::numeric, 50::numeric)$$, 'one hold, 50 minor units');

-- Audit: an edit among the newest rows is counted; one further back only verify_audit_chain finds.
ALTER TABLE tollgate.audit_log DISABLE TRIGGER USER;
UPDATE tollgate.audit_log SET note = 'edited' WHERE id = (SELECT max(id) FROM tollgate.audit_log);
SELECT is(pg_temp.gauge('audit_chain_problems'), 1::numeric, 'the newest row edited: one problem');
UPDATE tollgate.audit_log SET note = NULL WHERE note = 'edited';
UPDATE tollgate.audit_log SET note = 'edited' WHERE id = (SELECT min(id) FROM tollgate.audit_log);
SELECT results_eq($$SELECT (SELECT count(*) FROM tollgate.audit_recent_problems(2)),
                           (SELECT count(*) FROM tollgate.verify_audit_chain())$$,
                  $$VALUES (0::bigint, 1::bigint)$$,
                  'an edit older than the window: not in the cheap check, found by the full one');
UPDATE tollgate.audit_log SET note = NULL WHERE note = 'edited';
INSERT INTO tollgate.audit_log (account_uuid, entity, entity_id, action, actor, db_role, at)
SELECT id, 'transaction', 'forged', 'created', 'me', 'postgres', now() FROM tollgate.accounts WHERE external_id = 'ann';
SELECT results_eq($$SELECT problem FROM tollgate.audit_recent_problems(1000)$$, ARRAY['unsealed'],
                  'a row written around the triggers is unsealed');
DELETE FROM tollgate.audit_log WHERE entity_id = 'forged';
ALTER TABLE tollgate.audit_heads DISABLE TRIGGER USER;
DELETE FROM tollgate.audit_heads WHERE account_uuid = (SELECT id FROM tollgate.accounts WHERE external_id = 'ann');
SELECT results_eq($$SELECT problem FROM tollgate.audit_recent_problems(1000)$$, ARRAY['head'],
                  'a deleted head shows');
ALTER TABLE tollgate.audit_heads ENABLE TRIGGER USER;
ALTER TABLE tollgate.audit_log ENABLE TRIGGER USER;

SELECT * FROM finish();
ROLLBACK;
