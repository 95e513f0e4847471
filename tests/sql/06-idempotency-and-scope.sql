-- Idempotency records and account scoping of keys.
BEGIN;
SELECT plan(14);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('alice', sha256('alice-key'), 'tg_alice', false, NULL)) IS NOT NULL, 'alice');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('bob', sha256('bob-key'), 'tg_bobby', false, NULL)) IS NOT NULL, 'bob');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', sha256('admin-key'), 'tg_admin', true, NULL)) IS NOT NULL, 'an admin');

SELECT is((SELECT replayed FROM api.begin_payment_v1(sha256('alice-key'), 'same', NULL, 700, 'USD', NULL, NULL, NULL)),
          false, 'a first request claims the key');
SELECT ok(api.finish_payment_v1(sha256('alice-key'),
          (SELECT payment_id FROM tollgate.idempotency_keys WHERE key = 'same'), 'pi_alice', 'requires_payment_method', 'secret')
          ->> 'id' IS NOT NULL, 'and records its payment');
SELECT results_eq($$SELECT replayed, response ->> 'stripe_id', response ->> 'client_secret'
                    FROM api.begin_payment_v1(sha256('alice-key'), 'same', NULL, 700, 'USD', NULL, NULL, NULL)$$,
                  $$VALUES (true, 'pi_alice', 'secret')$$, 'the same request again replays the stored response');
SELECT throws_ok($$SELECT * FROM api.begin_payment_v1(sha256('alice-key'), 'same', NULL, 701, 'USD', NULL, NULL, NULL)$$,
                 'TG020', NULL, 'the same key with another body is refused');
SELECT is((SELECT replayed FROM api.begin_payment_v1(sha256('bob-key'), 'same', NULL, 701, 'USD', NULL, NULL, NULL)),
          false, 'keys are per account: bob may use the same key');
SELECT throws_ok($$SELECT * FROM api.begin_payment_v1(sha256('alice-key'), 'has space', NULL, 700, 'USD', NULL, NULL, NULL)$$,
                 '23514', NULL, 'idempotency keys are printable ASCII without spaces');

SELECT throws_ok($$SELECT * FROM api.get_payment_v1(sha256('bob-key'), 'pi_alice')$$, 'TG003', 'payment pi_alice not found',
                 'another account''s payment is not found');
SELECT throws_ok($$SELECT * FROM api.can_continue_v1(sha256('bob-key'), 'alice', NULL)$$, 'TG003', 'account alice not found',
                 'another account is not found');
SELECT results_eq($$SELECT stripe_id FROM api.get_payment_v1(sha256('admin-key'), 'pi_alice')$$, ARRAY['pi_alice'],
                  'an admin key sees every account');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1(sha256('admin-key'), 'alice', NULL)$$,
                  $$VALUES (false, 'requires_payment_method')$$, 'alice may not continue before paying');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1(sha256('bob-key'), NULL, 'report.generate')$$,
                  $$VALUES (false, NULL::text)$$, 'no payment for a purpose: not allowed, no status');

SELECT * FROM finish();
ROLLBACK;
