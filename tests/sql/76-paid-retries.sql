-- x402 paid retries: a payment identifier is claimed once per account, bound to its payload;
-- its stored answer is replayed and never changes.
BEGIN;
SELECT plan(12);

SELECT has_table('tollgate', 'x402_settlements', 'x402 settlements are a table');
SELECT col_is_pk('tollgate', 'x402_settlements', ARRAY['account_uuid', 'payment_identifier'],
                 'one settlement per account and identifier');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('alice', 'alice-key', false, NULL)) IS NOT NULL, 'alice');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('bob', 'bob-key', false, NULL)) IS NOT NULL, 'bob');

SELECT is(api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one')), NULL,
          'a first claim is the caller''s to settle');
SELECT is(api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one')), NULL,
          'claimed again before it settled: still to settle');
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('two'))$$,
                 'TG020', NULL, 'the same identifier with another payload is refused');
SELECT ok(api.x402_settle_v1('alice-key', NULL, 'pay_0123456789abcdef', '{"body": {"hold_id": "h1"}}'),
          'the answer is stored');
SELECT is(api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one')) -> 'body' ->> 'hold_id', 'h1',
          'the same payload again replays the stored answer');
SELECT is(api.x402_claim_v1('bob-key', NULL, 'pay_0123456789abcdef', sha256('two')), NULL,
          'identifiers are per account: bob may use the same one');
SELECT throws_ok($$UPDATE tollgate.x402_settlements SET response = '{}' WHERE payment_identifier = 'pay_0123456789abcdef'
                   AND response IS NOT NULL$$,
                 'TG011', NULL, 'a settled answer never changes');
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'short', sha256('one'))$$,
                 '23514', NULL, 'an identifier is 16-128 letters, digits, _ and -');

SELECT * FROM finish();
ROLLBACK;
