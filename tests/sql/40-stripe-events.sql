-- Stripe events: stored once, stale ones ignored, early ones applied when the payment appears.
BEGIN;
SELECT plan(55);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('events_account', 'ev-key', false, NULL)) IS NOT NULL,
          'an account and key');

-- Creates a payment the way POST /v1/payments does; returns its Stripe id.
CREATE FUNCTION pg_temp.pay(p_stripe_id text, p_status text DEFAULT 'requires_payment_method') RETURNS text
LANGUAGE sql AS $$
    SELECT api.finish_payment_v1('ev-key',
        (SELECT payment_id FROM api.begin_payment_v1('ev-key', p_stripe_id, NULL, 2000, 'EUR', 'report.generate', NULL, NULL)),
        p_stripe_id, p_status, NULL) ->> 'stripe_id'
$$;
CREATE FUNCTION pg_temp.event(p_id text, p_pi text, p_status text, p_created bigint) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', p_id, 'type', 'payment_intent.' || p_status, 'created', p_created,
        'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', p_pi, 'status', p_status)))
$$;
CREATE FUNCTION pg_temp.ingest(p_event jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT outcome FROM api.ingest_stripe_event_v1(p_event) $$;
CREATE FUNCTION pg_temp.status(p_pi text) RETURNS text
LANGUAGE sql AS $$ SELECT status::text FROM tollgate.payment_intents WHERE stripe_id = p_pi $$;

SELECT is(pg_temp.pay('pi_A'), 'pi_A', 'payment A recorded');
SELECT is(pg_temp.ingest(pg_temp.event('evt_A2', 'pi_A', 'succeeded', 1000)), 'applied', 'a newer event is applied');
SELECT is(pg_temp.status('pi_A'), 'succeeded', '... and moves the status');
SELECT is((SELECT actor FROM tollgate.audit_log WHERE entity = 'payment_intent' AND new_value = 'succeeded'),
          'stripe:evt_A2', '... and the audit trail names the event as the actor');
SELECT is(pg_temp.ingest(pg_temp.event('evt_A2', 'pi_A', 'succeeded', 1000)), 'duplicate', 'a replayed event answers duplicate');
SELECT is((SELECT count(*)::int FROM tollgate.payment_events WHERE id = 'evt_A2'), 1, '... and is stored once');
SELECT is(pg_temp.ingest(pg_temp.event('evt_A1', 'pi_A', 'processing', 999)), 'stale', 'an older event is stale');
SELECT is(pg_temp.ingest(pg_temp.event('evt_A3', 'pi_A', 'processing', 1000)), 'stale',
          'a refused move back in the lifecycle within the same second is stale');
SELECT is(pg_temp.status('pi_A'), 'succeeded', 'stale events never move the status backwards');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE payload ->> 'stripe_id' = 'pi_A'), 1, 'one settlement announced');

-- Two events of one second are not ordered by Stripe: an allowed move between them applies.
SELECT is(pg_temp.pay('pi_E', 'requires_confirmation'), 'pi_E', 'payment E awaiting confirmation');
SELECT is(pg_temp.ingest(pg_temp.event('evt_E1', 'pi_E', 'requires_confirmation', 5000)), 'applied', 'confirmation seen');
SELECT is(pg_temp.ingest(pg_temp.event('evt_E2', 'pi_E', 'requires_payment_method', 5000)), 'applied',
          'a decline in the same second still applies');
SELECT is(pg_temp.status('pi_E'), 'requires_payment_method', '... so the payment asks for a new payment method');

-- An event that arrives before its payment is kept, then applied when the payment is recorded.
SELECT is(pg_temp.ingest(pg_temp.event('evt_B1', 'pi_B', 'succeeded', 2000)), 'pending', 'an early event waits');
SELECT is(pg_temp.pay('pi_B'), 'pi_B', 'payment B recorded after its event');
SELECT is(pg_temp.status('pi_B'), 'succeeded', 'the early event was applied when the payment appeared');
SELECT is((SELECT state::text FROM tollgate.payment_events WHERE id = 'evt_B1'), 'applied', '... and is marked applied');

-- A full refund of a payment still processing implies it succeeded first.
SELECT is(pg_temp.pay('pi_C'), 'pi_C', 'payment C');
SELECT is(pg_temp.ingest(pg_temp.event('evt_C0', 'pi_C', 'processing', 2999)), 'applied', 'payment C processing');
SELECT is(pg_temp.ingest(jsonb_build_object('id', 'evt_C1', 'type', 'charge.refunded', 'created', 3000,
          'data', jsonb_build_object('object', jsonb_build_object('object', 'charge', 'id', 'ch_C', 'payment_intent', 'pi_C', 'refunded', true)))),
          'applied', 'a full refund is applied');
SELECT results_eq($$SELECT topic FROM tollgate.outbox WHERE payload ->> 'stripe_id' = 'pi_C' ORDER BY id$$,
                  ARRAY['payment.settled', 'payment.refunded'], 'settled, then refunded');

SELECT is(pg_temp.pay('pi_D'), 'pi_D', 'payment D');
SELECT is(pg_temp.ingest(pg_temp.event('evt_D0', 'pi_D', 'canceled', 3999)), 'applied', 'payment D canceled');
SELECT is(pg_temp.ingest(pg_temp.event('evt_D1', 'pi_D', 'succeeded', 4000)), 'rejected', 'a canceled payment cannot succeed');

SELECT is(pg_temp.ingest(jsonb_build_object('id', 'evt_X', 'type', 'customer.created', 'created', 1,
          'data', jsonb_build_object('object', jsonb_build_object('object', 'customer', 'id', 'cus_1')))),
          'ignored', 'other event types are stored and ignored');
SELECT is(pg_temp.ingest(jsonb_build_object('id', 'evt_Y', 'type', 'charge.refunded', 'created', 1,
          'data', jsonb_build_object('object', jsonb_build_object('object', 'charge', 'id', 'ch_Y', 'refunded', true)))),
          'ignored', 'a refund that names no payment intent is stored and ignored, not left pending');
SELECT is(pg_temp.ingest(jsonb_build_object('id', 'evt_Z', 'type', 'payment_intent.succeeded', 'created', 1,
          'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', jsonb_build_object('a', 1), 'status', 'succeeded')))),
          'ignored', 'an event whose object id is not a PaymentIntent id is ignored');
SELECT throws_ok($$SELECT * FROM api.ingest_stripe_event_v1('{"id": "evt_bad"}')$$, 'TG030', NULL,
                 'a malformed event is refused');

-- The inbox cannot be rewritten, even by its owner.
SELECT throws_ok($$UPDATE tollgate.payment_events SET payload = '{}' WHERE id = 'evt_A2'$$, 'TG011', NULL,
                 'a stored event cannot be altered');
SELECT throws_ok($$UPDATE tollgate.payment_events SET note = 'nothing to see' WHERE id = 'evt_D1'$$, 'TG011', NULL,
                 'nor can a processed event''s note');
SELECT throws_ok($$UPDATE tollgate.payment_events SET payment_intent_id = NULL WHERE id = 'evt_D1'$$, 'TG011',
                 'tollgate.payment_events.payment_intent_id cannot change once set (row evt_D1)',
                 'a filled-in link cannot be taken back');
SELECT throws_ok($$UPDATE tollgate.payment_events SET stripe_created = stripe_created + interval '1 second' WHERE id = 'evt_D1'$$,
                 'TG011', 'tollgate.payment_events.stripe_created cannot change once set (row evt_D1)',
                 'nor an event''s creation time');
SELECT ok(pg_temp.ingest(pg_temp.event('evt_F1', 'pi_F', 'succeeded', 6000)) = 'pending', 'an event waiting for pi_F');
SELECT throws_ok($$UPDATE tollgate.payment_events SET state = 'applied', processed_at = now() WHERE id = 'evt_F1'$$,
                 'TG011', NULL, 'a pending event cannot be marked applied without its payment');

-- Store, then apply: events stored received are applied in batches, in arrival order, by the
-- same rules.
CREATE FUNCTION pg_temp.store(p_event jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT CASE WHEN stored THEN state::text ELSE 'duplicate' END FROM tollgate.store_stripe_event(p_event) $$;
CREATE FUNCTION pg_temp.state(p_id text) RETURNS text
LANGUAGE sql AS $$ SELECT state::text FROM tollgate.payment_events WHERE id = p_id $$;
-- Every event of this transaction was received at the same now(): arrival order is by id.
SELECT is(pg_temp.pay('pi_G'), 'pi_G', 'payment G');
SELECT is(pg_temp.store(pg_temp.event('evt_G1', 'pi_G', 'processing', 7000)), 'received', 'an event stored received');
SELECT is(pg_temp.store(pg_temp.event('evt_G2', 'pi_G', 'succeeded', 7001)), 'received', 'and a newer one');
SELECT is(pg_temp.store(pg_temp.event('evt_G3', 'pi_G', 'processing', 6999)), 'received', 'and an older one, arriving last');
SELECT is(pg_temp.store(pg_temp.event('evt_H1', 'pi_H', 'succeeded', 7000)), 'received', 'an event for a payment not recorded yet');
SELECT is(pg_temp.store(pg_temp.event('evt_G2', 'pi_G', 'succeeded', 7001)), 'duplicate', 'a duplicate stores nothing');
SELECT is(pg_temp.status('pi_G'), 'requires_payment_method', 'stored events move nothing');
SELECT is((SELECT waiting::int FROM tollgate.received_stripe_events()), 4, 'four events wait for the applier');
SELECT throws_ok($$SELECT api.apply_stripe_events_v1(0, false)$$, '23514', NULL, 'a batch applies at least one event');
SELECT is(api.apply_stripe_events_v1(2, false), 2, 'a batch of two');
SELECT results_eq($$SELECT pg_temp.state('evt_G1'), pg_temp.state('evt_G2'), pg_temp.state('evt_G3'), pg_temp.status('pi_G')$$,
                  $$VALUES ('applied', 'applied', 'received', 'succeeded')$$, '... applies the two oldest, in order');
SELECT is(api.apply_stripe_events_v1(200, false), 2, 'the next batch takes the rest');
SELECT results_eq($$SELECT pg_temp.state('evt_G3'), pg_temp.state('evt_H1'), pg_temp.status('pi_G')$$,
                  $$VALUES ('stale', 'pending', 'succeeded')$$, '... by the same rules: stale, and early (pending)');
SELECT is(api.apply_stripe_events_v1(200, false), 0, 'nothing is left');
SELECT is(pg_temp.pay('pi_H'), 'pi_H', 'payment H recorded after its event was looked at');
SELECT results_eq($$SELECT pg_temp.state('evt_H1'), pg_temp.status('pi_H')$$, $$VALUES ('applied', 'succeeded')$$,
                  'the early event was applied when its payment appeared');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE payload ->> 'stripe_id' IN ('pi_G', 'pi_H')), 2,
          'each settlement announced once');
SELECT throws_ok($$UPDATE tollgate.payment_events SET state = 'received', processed_at = NULL WHERE id = 'evt_F1'$$,
                 'TG011', NULL, 'no event is received again');
SELECT throws_ok($$INSERT INTO tollgate.payment_events (id, type, stripe_created, payload, state, processed_at)
                   VALUES ('evt_I1', 'payment_intent.succeeded', now(), '{}', 'applied', now())$$,
                 'TG011', NULL, 'an event is stored received, not applied');

SELECT * FROM finish();
ROLLBACK;
