-- Stripe events: stored once, stale ones ignored, early ones applied when the payment appears.
BEGIN;
SELECT plan(23);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('events_account', sha256('ev-key'), 'tg_events', false, NULL)) IS NOT NULL,
          'an account and key');

-- Creates a payment the way POST /v1/payments does; returns its Stripe id.
CREATE FUNCTION pg_temp.pay(p_stripe_id text, p_status text DEFAULT 'requires_payment_method') RETURNS text
LANGUAGE sql AS $$
    SELECT api.finish_payment_v1(sha256('ev-key'),
        (SELECT payment_id FROM api.begin_payment_v1(sha256('ev-key'), p_stripe_id, NULL, 2000, 'EUR', 'report.generate', NULL, NULL)),
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
SELECT is(pg_temp.ingest(pg_temp.event('evt_A2', 'pi_A', 'succeeded', 1000)), 'duplicate', 'a replayed event answers duplicate');
SELECT is((SELECT count(*)::int FROM tollgate.payment_events WHERE id = 'evt_A2'), 1, '... and is stored once');
SELECT is(pg_temp.ingest(pg_temp.event('evt_A1', 'pi_A', 'processing', 999)), 'stale', 'an older event is stale');
SELECT is(pg_temp.ingest(pg_temp.event('evt_A3', 'pi_A', 'processing', 1000)), 'stale',
          'an event of the same second earlier in the lifecycle is stale');
SELECT is(pg_temp.status('pi_A'), 'succeeded', 'stale events never move the status backwards');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE payload ->> 'stripe_id' = 'pi_A'), 1, 'one settlement announced');

-- An event that arrives before its payment is kept, then applied when the payment is recorded.
SELECT is(pg_temp.ingest(pg_temp.event('evt_B1', 'pi_B', 'succeeded', 2000)), 'pending', 'an early event waits');
SELECT is(pg_temp.pay('pi_B'), 'pi_B', 'payment B recorded after its event');
SELECT is(pg_temp.status('pi_B'), 'succeeded', 'the early event was applied when the payment appeared');
SELECT is((SELECT state::text FROM tollgate.payment_events WHERE id = 'evt_B1'), 'applied', '... and is marked applied');

-- A full refund of a payment still processing implies it succeeded first.
SELECT is(pg_temp.pay('pi_C', 'processing'), 'pi_C', 'payment C processing');
SELECT is(pg_temp.ingest(jsonb_build_object('id', 'evt_C1', 'type', 'charge.refunded', 'created', 3000,
          'data', jsonb_build_object('object', jsonb_build_object('object', 'charge', 'id', 'ch_C', 'payment_intent', 'pi_C', 'refunded', true)))),
          'applied', 'a full refund is applied');
SELECT results_eq($$SELECT topic FROM tollgate.outbox WHERE payload ->> 'stripe_id' = 'pi_C' ORDER BY id$$,
                  ARRAY['payment.settled', 'payment.refunded'], 'settled, then refunded');

SELECT is(pg_temp.pay('pi_D', 'canceled'), 'pi_D', 'payment D canceled');
SELECT is(pg_temp.ingest(pg_temp.event('evt_D1', 'pi_D', 'succeeded', 4000)), 'rejected', 'a canceled payment cannot succeed');
SELECT is(pg_temp.ingest(jsonb_build_object('id', 'evt_X', 'type', 'customer.created', 'created', 1,
          'data', jsonb_build_object('object', jsonb_build_object('object', 'customer', 'id', 'cus_1')))),
          'ignored', 'other event types are stored and ignored');
SELECT is(pg_temp.ingest(jsonb_build_object('id', 'evt_Y', 'type', 'charge.refunded', 'created', 1,
          'data', jsonb_build_object('object', jsonb_build_object('object', 'charge', 'id', 'ch_Y', 'refunded', true)))),
          'ignored', 'a refund that names no payment intent is stored and ignored, not left pending');
SELECT throws_ok($$SELECT * FROM api.ingest_stripe_event_v1('{"id": "evt_bad"}')$$, 'TG030', NULL,
                 'a malformed event is refused');
SELECT throws_ok($$UPDATE tollgate.payment_events SET payload = '{}' WHERE id = 'evt_A2'$$, 'TG011', NULL,
                 'a stored event cannot be altered');

SELECT * FROM finish();
ROLLBACK;
