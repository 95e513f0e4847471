-- Idempotency records and account scoping of keys.
BEGIN;
SELECT plan(16);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('alice', 'alice-key', false, NULL)) IS NOT NULL, 'alice');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('bob', 'bob-key', false, NULL)) IS NOT NULL, 'bob');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'admin-key', true, NULL)) IS NOT NULL, 'an admin');

SELECT is((SELECT replayed FROM api.begin_payment_v1('alice-key', 'same', NULL, 700, 'USD', NULL, NULL, NULL)),
          false, 'a first request claims the key');
SELECT ok(api.finish_payment_v1('alice-key',
          (SELECT payment_id FROM tollgate.idempotency_keys WHERE key = 'same'), 'pi_alice', 'requires_payment_method', 'secret')
          ->> 'id' IS NOT NULL, 'and records its payment');
SELECT results_eq($$SELECT replayed, response ->> 'stripe_id', response ->> 'client_secret'
                    FROM api.begin_payment_v1('alice-key', 'same', NULL, 700, 'USD', NULL, NULL, NULL)$$,
                  $$VALUES (true, 'pi_alice', 'secret')$$, 'the same request again replays the stored response');
SELECT results_eq($$SELECT api.finish_payment_v1('alice-key',
                        (SELECT payment_id FROM tollgate.idempotency_keys WHERE key = 'same'), 'pi_other', 'requires_confirmation', 'x')
                        ->> 'stripe_id'$$,
                  ARRAY['pi_alice'], 'finishing again returns the stored payment, not a second one');
SELECT is((SELECT count(*)::int FROM tollgate.payment_intents), 1, 'one payment recorded');
SELECT throws_ok($$SELECT * FROM api.begin_payment_v1('alice-key', 'same', NULL, 701, 'USD', NULL, NULL, NULL)$$,
                 'TG020', NULL, 'the same key with another body is refused');
SELECT is((SELECT replayed FROM api.begin_payment_v1('bob-key', 'same', NULL, 701, 'USD', NULL, NULL, NULL)),
          false, 'keys are per account: bob may use the same key');
SELECT throws_ok($$SELECT * FROM api.begin_payment_v1('alice-key', 'has space', NULL, 700, 'USD', NULL, NULL, NULL)$$,
                 '23514', NULL, 'idempotency keys are printable ASCII without spaces');

SELECT throws_ok($$SELECT * FROM api.get_payment_v1('bob-key', 'pi_alice')$$, 'TG003', 'payment pi_alice not found',
                 'another account''s payment is not found');
SELECT throws_ok($$SELECT * FROM api.can_continue_v1('bob-key', 'alice', NULL)$$, 'TG003', 'account alice not found',
                 'another account is not found');
SELECT results_eq($$SELECT stripe_id FROM api.get_payment_v1('admin-key', 'pi_alice')$$, ARRAY['pi_alice'],
                  'an admin key sees every account');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('admin-key', 'alice', NULL)$$,
                  $$VALUES (false, 'requires_payment_method')$$, 'alice may not continue before paying');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('bob-key', NULL, 'report.generate')$$,
                  $$VALUES (false, NULL::text)$$, 'no payment for a purpose: not allowed, no status');

SELECT * FROM finish();
ROLLBACK;
