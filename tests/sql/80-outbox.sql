-- Outbox delivery: fan-out per consumer, claim, retry with backoff, dead letters, replay;
-- credits.low; the listener role's privileges.
BEGIN;
SELECT plan(43);

SELECT results_eq($$SELECT consumer, created FROM api.register_consumer_v1('crm', false)$$, $$VALUES ('crm', true)$$,
                  'a consumer is registered');
SELECT results_eq($$SELECT created FROM api.register_consumer_v1('crm', false)$$, ARRAY[false], 'once');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'ops', 'o-1', 10, 'USD', NULL)), 'pending', 'a transaction');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'ops', 'o-1', 'settled')), 'settled', 'settles: one event');
SELECT results_eq($$SELECT d.consumer, d.status::text FROM tollgate.outbox_deliveries d JOIN tollgate.outbox o ON o.id = d.outbox_id
                    WHERE o.topic = 'transaction.settled'$$,
                  $$VALUES ('crm', 'pending')$$, 'the event waits for the consumer, written with it');
SELECT results_eq($$SELECT created, backfilled FROM api.register_consumer_v1('audit', true)$$, $$VALUES (true, 1::bigint)$$,
                  'a consumer registered from the start gets the past events too');

CREATE FUNCTION pg_temp.claim(p_consumer text DEFAULT 'crm') RETURNS TABLE (lease_token uuid, outbox_id bigint, topic text, attempt integer)
LANGUAGE sql AS $$ SELECT lease_token, outbox_id, topic, attempt FROM api.claim_deliveries_v2(p_consumer, 10, '1 minute', 3) $$;
CREATE FUNCTION pg_temp.make_due() RETURNS void
LANGUAGE sql AS $$ UPDATE tollgate.outbox_deliveries SET next_attempt_at = now() - interval '1 second' WHERE consumer = 'crm' $$;
-- The token of crm's current lease, as its latest claim returned it.
CREATE FUNCTION pg_temp.token() RETURNS uuid
LANGUAGE sql AS $$ SELECT lease_token FROM tollgate.outbox_deliveries WHERE consumer = 'crm' $$;

CREATE TEMP TABLE claimed AS SELECT * FROM pg_temp.claim();
SELECT results_eq($$SELECT topic, attempt FROM claimed$$, $$VALUES ('transaction.settled', 1)$$, 'leased: first attempt');
SELECT is_empty($$SELECT * FROM pg_temp.claim()$$, 'a leased delivery is not handed out twice');

-- Acks need the lease: without its token (or with it, under another consumer's name) nothing changes.
SELECT is(api.deliveries_done_v2('crm', gen_random_uuid(), ARRAY(SELECT outbox_id FROM claimed)), 0,
          'marking a delivery done without its lease token changes nothing');
SELECT is(api.deliveries_done_v2('audit', (SELECT lease_token FROM claimed), ARRAY(SELECT outbox_id FROM claimed)), 0,
          'nor does a token of one consumer mark another consumer''s delivery done');
SELECT is(api.delivery_failed_v2('crm', gen_random_uuid(), (SELECT outbox_id FROM claimed), 'x', 3, '10 seconds'), NULL,
          'nor fail it');
SELECT is(api.release_deliveries_v2('crm', gen_random_uuid(), ARRAY(SELECT outbox_id FROM claimed)), 0, 'nor release it');
SELECT is(api.renew_leases_v2('crm', gen_random_uuid(), ARRAY(SELECT outbox_id FROM claimed), '1 day'), 0, 'nor renew it');
SELECT results_eq($$SELECT d.consumer, d.status::text, d.attempts, d.next_attempt_at < clock_timestamp() + interval '2 minutes'
                    FROM tollgate.outbox_deliveries d ORDER BY d.consumer$$,
                  $$VALUES ('audit', 'pending', 0, true), ('crm', 'pending', 1, true)$$, 'both deliveries as they were');

SELECT is(api.delivery_failed_v2('crm', (SELECT lease_token FROM claimed), (SELECT outbox_id FROM claimed), 'boom', 3, '10 seconds'),
          'pending', 'a failure is retried');
SELECT results_eq($$SELECT attempts, next_attempt_at > clock_timestamp() + interval '9 seconds', last_error FROM tollgate.outbox_deliveries
                    WHERE consumer = 'crm'$$,
                  $$VALUES (1, true, 'boom')$$, 'after the retry base');
SELECT is(api.deliveries_done_v2('crm', (SELECT lease_token FROM claimed), ARRAY(SELECT outbox_id FROM claimed)), 0,
          'a lease ends with its outcome: the token acks nothing more');
SELECT pg_temp.make_due();
SELECT results_eq($$SELECT attempt FROM pg_temp.claim()$$, ARRAY[2], 'second attempt');
SELECT ok(pg_temp.token() <> (SELECT lease_token FROM claimed), 'under a new lease token');
SELECT is(api.delivery_failed_v2('crm', pg_temp.token(), (SELECT outbox_id FROM claimed), 'boom', 3, '10 seconds'), 'pending', 'failure 2');
SELECT results_eq($$SELECT next_attempt_at > clock_timestamp() + interval '19 seconds' FROM tollgate.outbox_deliveries WHERE consumer = 'crm'$$,
                  ARRAY[true], 'the wait doubles');
SELECT pg_temp.make_due();
SELECT results_eq($$SELECT attempt FROM pg_temp.claim()$$, ARRAY[3], 'third attempt');
SELECT is(api.delivery_failed_v2('crm', pg_temp.token(), (SELECT outbox_id FROM claimed), 'boom', 3, '10 seconds'), 'dead', 'failure 3: dead');
SELECT results_eq($$SELECT topic, attempts FROM api.dead_deliveries_v1('crm')$$, $$VALUES ('transaction.settled', 3)$$,
                  'listed as a dead letter');
SELECT is(api.replay_deliveries_v1('crm', NULL), 1, 'replayed');
SELECT results_eq($$SELECT attempt FROM pg_temp.claim()$$, ARRAY[1], 'with a fresh count');
SELECT is(api.deliveries_done_v2('crm', pg_temp.token(), ARRAY(SELECT outbox_id FROM claimed)), 1, 'and delivered');
SELECT throws_ok($$UPDATE tollgate.outbox_deliveries SET status = 'pending' WHERE consumer = 'crm'$$, 'TG010', NULL,
                 'a delivered event stays delivered');
-- A handler that kills its process never reports back: once its attempts are used up, the
-- next claim dead-letters the event instead of handing it out again.
UPDATE tollgate.outbox_deliveries SET attempts = 3, next_attempt_at = now() - interval '1 second' WHERE consumer = 'audit';
SELECT is_empty($$SELECT * FROM pg_temp.claim('audit')$$, 'an event whose attempts are used up is not handed out');
SELECT results_eq($$SELECT status::text, last_error FROM tollgate.outbox_deliveries WHERE consumer = 'audit'$$,
                  $$VALUES ('dead', 'the handler never reported back')$$, 'it is dead-lettered');

-- credits.low: once, when a balance crosses below its threshold.
SELECT results_eq($$SELECT low_balance FROM api.set_low_balance_v1('ops-key', 'ops', 'USD', 5)$$, ARRAY['5.00'],
                  'tell ops when its USD balance falls below 5.00');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('peer', 'peer-key', false, NULL)) IS NOT NULL, 'a peer');
SELECT ok((SELECT NOT replayed FROM api.transfer_v1('ops-key', 'ops', 'peer', 4, 'USD', 't1')), '10.00 -> 6.00: above');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE topic = 'credits.low'), 0, 'no notice yet');
SELECT ok((SELECT NOT replayed FROM api.transfer_v1('ops-key', 'ops', 'peer', 2, 'USD', 't2')), '6.00 -> 4.00: crossed');
SELECT ok((SELECT NOT replayed FROM api.transfer_v1('ops-key', 'ops', 'peer', 1, 'USD', 't3')), '4.00 -> 3.00: still below');
SELECT results_eq($$SELECT payload ->> 'balance', payload ->> 'low_balance' FROM tollgate.outbox WHERE topic = 'credits.low'$$,
                  $$VALUES ('400', '500')$$, 'one credits.low notice, at the crossing');

SET LOCAL ROLE tollgate_listener;
SELECT throws_ok($$SELECT * FROM tollgate.outbox$$, '42501', NULL, 'the listener role cannot read tables');
SELECT throws_ok($$SELECT * FROM api.can_continue_v1('ops-key', NULL, NULL)$$, '42501', NULL,
                 'nor call the service''s functions');
SELECT throws_ok($$SELECT lo_create(0)$$, '42501', NULL, 'nor store large objects');
SELECT throws_ok($$SELECT lo_from_bytea(0, '\x00')$$, '42501', NULL, 'of any kind');
SELECT throws_ok($$SELECT pg_notify('payment_settled', '{"payment_id": "forged"}')$$, '42501', NULL,
                 'nor send notifications');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
