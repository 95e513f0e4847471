-- The outbox is append-only; the service role may only call the api functions.
BEGIN;
SELECT plan(31);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('grants_account', 'gr-key', false, NULL)) IS NOT NULL,
          'an account and key');
INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status)
SELECT id, 'pi_grants', 500, 'USD', 'requires_payment_method' FROM tollgate.accounts WHERE external_id = 'grants_account';
UPDATE tollgate.payment_intents SET status = 'processing' WHERE stripe_id = 'pi_grants';
SELECT is((SELECT count(*)::int FROM tollgate.outbox), 0, 'no announcement before success');
UPDATE tollgate.payment_intents SET status = 'succeeded' WHERE stripe_id = 'pi_grants';
SELECT results_eq($$SELECT topic, payload ->> 'stripe_id' FROM tollgate.outbox$$,
                  $$VALUES ('payment.settled', 'pi_grants')$$,
                  'succeeding writes one payment.settled row in the same transaction');
SELECT throws_ok($$UPDATE tollgate.outbox SET topic = 'payment.refunded'$$, 'TG012', NULL, 'outbox rows cannot change');
SELECT throws_ok($$DELETE FROM tollgate.outbox$$, 'TG012', NULL, 'nor be deleted');
SELECT throws_ok($$TRUNCATE tollgate.outbox CASCADE$$, 'TG012', NULL, 'nor truncated');
SELECT throws_ok($$INSERT INTO tollgate.outbox (account_uuid, topic, payload)
                   SELECT account_uuid, 'payment.settled', '{}' FROM tollgate.outbox$$,
                 'TG012', NULL, 'and only triggers write outbox rows');

SELECT schema_privs_are('api', 'tollgate_app', ARRAY['USAGE']);
SELECT schema_privs_are('tollgate', 'tollgate_app', ARRAY[]::text[]);
SELECT table_privs_are('tollgate', t, 'tollgate_app', ARRAY[]::text[], format('tollgate_app has no privilege on %s', t))
FROM unnest(ARRAY['payment_intents', 'payment_events', 'outbox', 'audit_log', 'api_keys']) AS t;
SELECT table_privs_are('tollgate', 'audit_log', 'tollgate_owner', ARRAY['INSERT', 'SELECT', 'REFERENCES', 'TRIGGER'],
                       'no SECURITY DEFINER function (running as the owner) can update or delete audit rows');
SELECT ok(NOT has_function_privilege('public', 'api.create_api_key_v1(text, text, boolean, text)', 'EXECUTE'),
          'PUBLIC cannot create keys');
SELECT ok(NOT has_function_privilege('tollgate_app', 'api.create_api_key_v1(text, text, boolean, text)', 'EXECUTE'),
          'the service cannot create keys');
SELECT ok(NOT has_function_privilege('public', 'api.ingest_stripe_event_v1(jsonb)', 'EXECUTE'),
          'PUBLIC cannot ingest events');
-- Large objects are storage outside every table's grants, and pg_notify sends what listeners
-- may take for Tollgate's own word: neither is PUBLIC's (revoked on every migrate).
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p
                  WHERE p.pronamespace = 'pg_catalog'::regnamespace
                    AND (p.proname ~ '^lo_' OR p.proname IN ('loread', 'lowrite', 'pg_notify'))
                    AND has_function_privilege('public', p.oid, 'EXECUTE')$$,
                'PUBLIC may call no large-object function, nor pg_notify');
SELECT ok(has_function_privilege('tollgate_owner', 'pg_notify(text, text)', 'EXECUTE'),
          'the owner, whose triggers wake listeners, may notify');

SET LOCAL ROLE tollgate_app;
SELECT throws_ok($$SELECT * FROM tollgate.payment_intents$$, '42501', NULL, 'the service cannot read tables');
SELECT throws_ok($$UPDATE tollgate.payment_intents SET status = 'refunded'$$, '42501', NULL, 'nor update them');
SELECT throws_ok($$INSERT INTO tollgate.outbox (account_uuid, topic, payload) VALUES (gen_random_uuid(), 'a.b', '{}')$$,
                 '42501', NULL, 'nor insert');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, '42501', NULL, 'nor delete');
SELECT throws_ok($$SELECT tollgate.emit(gen_random_uuid(), 'a.b', '{}')$$, '42501', NULL, 'nor call internal functions');
SELECT throws_ok($$SELECT * FROM api.create_api_key_v1('x', 'x', true, NULL)$$, '42501', NULL,
                 'nor mint keys');
SELECT throws_ok($$SELECT lo_create(0)$$, '42501', NULL, 'nor store large objects');
SELECT throws_ok($$SELECT lo_from_bytea(0, '\x00')$$, '42501', NULL, 'of any kind');
SELECT throws_ok($$SELECT pg_notify('payment_settled', '{"payment_id": "forged"}')$$, '42501', NULL,
                 'nor send notifications');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('gr-key', NULL, NULL)$$,
                  $$VALUES (true, 'succeeded')$$, 'but it can call the api functions');
SELECT throws_ok($$SELECT * FROM api.can_continue_v1('wrong', NULL, NULL)$$, 'TG001', 'invalid or revoked API key',
                 'which authenticate the key themselves');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
