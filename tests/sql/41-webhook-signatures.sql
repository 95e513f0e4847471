-- Stripe webhook signatures are verified by PostgreSQL: the service role cannot apply an event
-- that Stripe did not sign with an active secret, so it cannot create money.
BEGIN;
SELECT plan(58);

-- HMAC-SHA256 built from sha256(), against RFC 4231's test cases (case 5 is truncated to 128 bits).
SELECT is(encode(tollgate.hmac_sha256(decode(repeat('0b', 20), 'hex'), convert_to('Hi There', 'UTF8')), 'hex'),
          'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7', 'RFC 4231 test case 1');
SELECT is(encode(tollgate.hmac_sha256(convert_to('Jefe', 'UTF8'), convert_to('what do ya want for nothing?', 'UTF8')), 'hex'),
          '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843', 'RFC 4231 test case 2');
SELECT is(encode(tollgate.hmac_sha256(decode(repeat('aa', 20), 'hex'), decode(repeat('dd', 50), 'hex')), 'hex'),
          '773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe', 'RFC 4231 test case 3');
SELECT is(encode(tollgate.hmac_sha256('\x0102030405060708090a0b0c0d0e0f10111213141516171819'::bytea,
                                      decode(repeat('cd', 50), 'hex')), 'hex'),
          '82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b', 'RFC 4231 test case 4');
SELECT is(left(encode(tollgate.hmac_sha256(decode(repeat('0c', 20), 'hex'), convert_to('Test With Truncation', 'UTF8')), 'hex'), 32),
          'a3b6167473100ee06e0c796c2955552b', 'RFC 4231 test case 5 (truncated)');
SELECT is(encode(tollgate.hmac_sha256(decode(repeat('aa', 131), 'hex'),
                                      convert_to('Test Using Larger Than Block-Size Key - Hash Key First', 'UTF8')), 'hex'),
          '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54', 'RFC 4231 test case 6 (a key longer than the block)');
SELECT is(encode(tollgate.hmac_sha256(decode(repeat('aa', 131), 'hex'),
                                      convert_to('This is a test using a larger than block-size key and a larger than block-size data. '
                                                 'The key needs to be hashed before being used by the HMAC algorithm.', 'UTF8')), 'hex'),
          '9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2', 'RFC 4231 test case 7');

-- Secrets: registered once, listed without the secret, removable.
SELECT ok((SELECT added FROM tollgate.add_stripe_webhook_secret('whsec_first_secret_of_the_pgtap_test', 'first')),
          'a secret is registered');
SELECT ok(NOT (SELECT added FROM tollgate.add_stripe_webhook_secret('whsec_first_secret_of_the_pgtap_test', 'again')),
          'registering it again changes nothing');
SELECT ok((SELECT added FROM tollgate.add_stripe_webhook_secret('whsec_second_secret_of_the_pgtap_test', 'second')),
          'a second secret is active beside it (rotation)');
SELECT ok((SELECT added FROM tollgate.add_stripe_webhook_secret('whsec_retired_secret_of_the_pgtap_test', 'retired')),
          'and a third');
SELECT throws_ok($$SELECT * FROM tollgate.add_stripe_webhook_secret('whsec_short', NULL)$$, '23514', NULL,
                 'a secret too short to be Stripe''s is refused');
SELECT throws_ok($$SELECT * FROM tollgate.add_stripe_webhook_secret('whsec_with a space in the middle of it', NULL)$$, '23514', NULL,
                 'so is one with spaces');
SELECT results_eq($$SELECT prefix, label FROM tollgate.list_stripe_webhook_secrets() ORDER BY label$$,
                  $$VALUES ('whsec_firs', 'first'), ('whsec_reti', 'retired'), ('whsec_seco', 'second')$$,
                  'the listing shows a prefix and the label, never the secret');
SELECT is_empty($$SELECT FROM tollgate.stripe_webhook_secrets
                  WHERE position(convert_to('whsec_first_secret', 'UTF8') IN inner_key || outer_key) > 0$$,
                'the secret itself is not stored, only its key blocks');
SELECT ok(tollgate.remove_stripe_webhook_secret((SELECT secret_id FROM tollgate.list_stripe_webhook_secrets() WHERE label = 'retired')),
          'the third is removed');
SELECT is((SELECT count(*)::int FROM tollgate.list_stripe_webhook_secrets()), 2, 'two secrets are active');

-- Only the owner reads or changes them.
SELECT table_privs_are('tollgate', 'stripe_webhook_secrets', r, ARRAY[]::text[],
                       format('%s has no privilege on the webhook secrets', r))
FROM unnest(ARRAY['tollgate_app', 'tollgate_listener', 'tollgate_analyst', 'public']) AS r;
SELECT ok(NOT has_function_privilege('tollgate_app', 'api.ingest_stripe_event_v1(jsonb)', 'EXECUTE'),
          'the service cannot apply an event without its signature');
SELECT ok(has_function_privilege('tollgate_app', 'api.ingest_stripe_webhook_v1(text, text)', 'EXECUTE'),
          'it can deliver a signed webhook');
SELECT ok(NOT has_function_privilege('public', 'api.ingest_stripe_webhook_v1(text, text)', 'EXECUTE'),
          'PUBLIC cannot');

-- Two credits payments, recorded as POST /v1/payments does, as the service role: their Stripe
-- ids are the service's word only.
SELECT ok((SELECT key_id FROM api.create_api_key_v1('forger', 'forger-key', false, NULL)) IS NOT NULL, 'an account and key');
SET LOCAL ROLE tollgate_app;
SELECT is(api.finish_payment_v1('forger-key',
            (SELECT payment_id FROM api.begin_payment_v1('forger-key', 'k1', NULL, 99999900, 'USD', 'credits', NULL, NULL)),
            'pi_invented_1', 'requires_payment_method', NULL) ->> 'status',
          'requires_payment_method', 'the service records a payment with an invented Stripe id');
SELECT is(api.finish_payment_v1('forger-key',
            (SELECT payment_id FROM api.begin_payment_v1('forger-key', 'k2', NULL, 1000, 'USD', 'credits', NULL, NULL)),
            'pi_invented_2', 'requires_payment_method', NULL) ->> 'status',
          'requires_payment_method', 'and another');
RESET ROLE;

-- The deliveries, signed here (by the owner, with the secrets' own values) and read by the service.
CREATE FUNCTION pg_temp.event(p_id text, p_pi text, p_amount bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', p_id, 'object', 'event', 'type', 'payment_intent.succeeded',
        'created', extract(epoch FROM now())::bigint,
        'data', jsonb_build_object('object', jsonb_build_object('id', p_pi, 'object', 'payment_intent',
            'status', 'succeeded', 'amount', p_amount, 'amount_received', p_amount, 'currency', 'usd')))::text
$$;
CREATE FUNCTION pg_temp.mac(p_payload text, p_secret text, p_t bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT encode(tollgate.hmac_sha256(convert_to(p_secret, 'UTF8'), convert_to(p_t || '.' || p_payload, 'UTF8')), 'hex')
$$;
CREATE FUNCTION pg_temp.sign(p_payload text, p_secret text, p_t bigint DEFAULT extract(epoch FROM now())::bigint) RETURNS text
LANGUAGE sql AS $$ SELECT 't=' || p_t || ',v1=' || pg_temp.mac(p_payload, p_secret, p_t) $$;

CREATE TEMP TABLE deliveries (name text PRIMARY KEY, payload text, signature text);
INSERT INTO deliveries
SELECT d.name, d.payload, d.signature
FROM (VALUES (pg_temp.event('evt_forged_1', 'pi_invented_1', 99999900),
              extract(epoch FROM now())::bigint)) AS e(payload, now_t),
     LATERAL (VALUES
        ('unsigned', e.payload, NULL),
        ('an empty header', e.payload, ''),
        ('a header without a signature', e.payload, 't=' || e.now_t),
        ('a header without a timestamp', e.payload, 'v1=' || pg_temp.mac(e.payload, 'whsec_first_secret_of_the_pgtap_test', e.now_t)),
        ('a header that is not one', e.payload, 'hello'),
        ('only a v0 signature', e.payload, 't=' || e.now_t || ',v0=' || pg_temp.mac(e.payload, 'whsec_first_secret_of_the_pgtap_test', e.now_t)),
        ('a made-up signature', e.payload, 't=' || e.now_t || ',v1=' || repeat('0', 64)),
        ('a non-ASCII signature', e.payload, 't=' || e.now_t || ',v1=é'),
        ('signed with an unknown secret', e.payload, pg_temp.sign(e.payload, 'whsec_an_attacker_made_this_one_up')),
        ('signed with the removed secret', e.payload, pg_temp.sign(e.payload, 'whsec_retired_secret_of_the_pgtap_test')),
        ('signed 301 s ago', e.payload, pg_temp.sign(e.payload, 'whsec_first_secret_of_the_pgtap_test', e.now_t - 301)),
        ('signed 301 s ahead', e.payload, pg_temp.sign(e.payload, 'whsec_first_secret_of_the_pgtap_test', e.now_t + 301)),
        ('a good signature with its timestamp changed', e.payload,
            't=' || (e.now_t - 1) || ',v1=' || pg_temp.mac(e.payload, 'whsec_first_secret_of_the_pgtap_test', e.now_t)),
        ('a body changed after signing', replace(e.payload, 'evt_forged_1', 'evt_forged_2'),
            pg_temp.sign(e.payload, 'whsec_first_secret_of_the_pgtap_test')),
        ('first secret', pg_temp.event('evt_paid_2', 'pi_invented_2', 1000),
            pg_temp.sign(pg_temp.event('evt_paid_2', 'pi_invented_2', 1000), 'whsec_first_secret_of_the_pgtap_test')),
        ('second secret, after a bad one', pg_temp.event('evt_paid_1', 'pi_invented_1', 99999900),
            't=' || e.now_t || ',v1=' || repeat('ab', 32)
            || ',v1=' || pg_temp.mac(pg_temp.event('evt_paid_1', 'pi_invented_1', 99999900), 'whsec_second_secret_of_the_pgtap_test', e.now_t)
            || ',v0=' || repeat('cd', 32))
     ) AS d(name, payload, signature);
GRANT SELECT ON deliveries TO tollgate_app;

-- The service delivers each; every bad one is refused with TG031 (14 tests).
SET LOCAL ROLE tollgate_app;
SELECT throws_ok($$SELECT * FROM api.ingest_stripe_event_v1($$ || quote_literal(payload) || $$::jsonb)$$, '42501', NULL,
                 'the service cannot pass an unsigned event to ingest_stripe_event_v1')
FROM deliveries WHERE name = 'unsigned';
SELECT throws_ok(format('SELECT * FROM api.ingest_stripe_webhook_v1(%L, %L)', payload, signature), 'TG031', NULL,
                 'refused: ' || name)
FROM deliveries
WHERE name NOT IN ('first secret', 'second secret, after a bad one')
ORDER BY name;
RESET ROLE;

SELECT is((SELECT count(*)::int FROM tollgate.payment_events), 0, 'no refused delivery stored an event');
SELECT results_eq($$SELECT stripe_id, status::text FROM tollgate.payment_intents ORDER BY stripe_id$$,
                  $$VALUES ('pi_invented_1', 'requires_payment_method'), ('pi_invented_2', 'requires_payment_method')$$,
                  'nor moved a payment');
SELECT is((SELECT count(*)::int FROM tollgate.ledger_postings), 0, 'nor posted anything to the ledger');
SELECT is((SELECT count(*)::int FROM tollgate.outbox), 0, 'nor announced anything');

-- Signed with either active secret, the service's deliveries are stored, then applied by the
-- applier (a replay: duplicate).
SET LOCAL ROLE tollgate_app;
SELECT results_eq(format('SELECT outcome, payment_id, payment_status FROM api.ingest_stripe_webhook_v1(%L, %L)', payload, signature),
                  $$VALUES ('received', NULL::uuid, NULL::text)$$, 'received: signed with the first secret')
FROM deliveries WHERE name = 'first secret';
SELECT results_eq(format('SELECT outcome FROM api.ingest_stripe_webhook_v1(%L, %L)', payload, signature),
                  $$VALUES ('received')$$, 'received: signed with the second secret, after a v1 that does not match')
FROM deliveries WHERE name = 'second secret, after a bad one';
SELECT results_eq(format('SELECT outcome, payment_status FROM api.ingest_stripe_webhook_v1(%L, %L)', payload, signature),
                  $$VALUES ('duplicate', NULL::text)$$, 'a replay before the event is applied: duplicate')
FROM deliveries WHERE name = 'first secret';
SELECT is((SELECT count(*)::int FROM api.balances_v1('forger-key', NULL)), 0,
          'stored, not applied: nothing credited yet');
SELECT is(api.apply_stripe_events_v1(200, false), 2, 'the applier applies both stored events');
SELECT results_eq(format('SELECT outcome, payment_status FROM api.ingest_stripe_webhook_v1(%L, %L)', payload, signature),
                  $$VALUES ('duplicate', 'succeeded')$$, 'a replayed delivery changes nothing, and names the payment''s status')
FROM deliveries WHERE name = 'first secret';
SELECT results_eq($$SELECT balance_minor FROM api.balances_v1('forger-key', NULL)$$,
                  $$VALUES (100000900::bigint)$$, 'the signed payments credited the account, once each');
SELECT throws_ok($$SELECT * FROM tollgate.stripe_webhook_secrets$$, '42501', NULL, 'the service cannot read the secrets');
SELECT throws_ok($$SELECT * FROM tollgate.add_stripe_webhook_secret('whsec_the_service_would_like_its_own', NULL)$$,
                 '42501', NULL, 'nor register one of its own');
RESET ROLE;

SELECT results_eq($$SELECT id, state::text FROM tollgate.payment_events ORDER BY id$$,
                  $$VALUES ('evt_paid_1', 'applied'), ('evt_paid_2', 'applied')$$, 'the two signed events are stored');

-- With no secret at all, nothing verifies.
SELECT ok(bool_and(tollgate.remove_stripe_webhook_secret(secret_id)), 'every secret removed')
FROM tollgate.list_stripe_webhook_secrets();
SELECT throws_ok(format('SELECT * FROM api.ingest_stripe_webhook_v1(%L, %L)', payload, signature), 'TG031',
                 'no Stripe webhook secret is registered (tollgate webhook-secret add)', 'no secret: refused, and the message says why')
FROM deliveries WHERE name = 'first secret';

SELECT * FROM finish();
ROLLBACK;
