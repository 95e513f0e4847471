-- x402 paid retries: a payment identifier is claimed once per account, bound to its payload and
-- to the request it paid for; its stored answer is built from the hold the same transaction
-- placed, replayed only while that hold is active, and never changes.
BEGIN;
SELECT plan(26);

SELECT has_table('tollgate', 'x402_settlements', 'x402 settlements are a table');
SELECT col_is_pk('tollgate', 'x402_settlements', ARRAY['account_uuid', 'payment_identifier'],
                 'one settlement per account and identifier');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('alice', 'alice-key', false, NULL)) IS NOT NULL, 'alice');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('bob', 'bob-key', false, NULL)) IS NOT NULL, 'bob');
SELECT results_eq($$SELECT price FROM api.set_action_price_v1('ops-key', 'report.generate', 0.50, 'USD', NULL)$$,
                  ARRAY['0.50'], 'a report costs 0.50 USD');
SELECT results_eq($$SELECT price FROM api.set_action_price_v1('ops-key', 'report.premium', 1.00, 'USD', NULL)$$,
                  ARRAY['1.00'], 'a premium report 1.00 USD');

-- Credits for alice and bob, bought by card.
CREATE FUNCTION pg_temp.credits(p_key text, p_stripe_id text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM api.finish_payment_v1(p_key,
        (SELECT payment_id FROM api.begin_payment_v1(p_key, p_stripe_id, NULL, 500, 'USD', 'credits', NULL, NULL)),
        p_stripe_id, 'requires_payment_method', NULL);
    RETURN (SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_' || p_stripe_id,
        'type', 'payment_intent.succeeded', 'created', extract(epoch FROM now())::bigint,
        'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', p_stripe_id, 'status', 'succeeded')))));
END
$$;
SELECT is(pg_temp.credits('alice-key', 'pi_alice_credits'), 'applied', 'alice buys credits');
SELECT is(pg_temp.credits('bob-key', 'pi_bob_credits'), 'applied', 'bob buys credits');
CREATE FUNCTION pg_temp.hold(p_key text, p_action text DEFAULT 'report.generate') RETURNS uuid
LANGUAGE sql AS $$ SELECT hold_id FROM api.authorize_v1(p_key, NULL, p_action, NULL, NULL, NULL, NULL) $$;
CREATE FUNCTION pg_temp.answer(p_hold uuid, p_account text DEFAULT 'alice', p_action text DEFAULT 'report.generate')
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('body', jsonb_build_object('allowed', true, 'via', 'credits', 'account_id', p_account,
                                                         'action', p_action, 'hold_id', p_hold),
                              'payment_response', 'e30=')
$$;
CREATE TEMP TABLE h (who text PRIMARY KEY, id uuid);
GRANT SELECT, INSERT ON h TO tollgate_app;
INSERT INTO h VALUES ('bob', pg_temp.hold('bob-key')), ('premium', pg_temp.hold('alice-key', 'report.premium'));
-- A hold placed before, in a savepoint: not by this transaction's own statements.
SAVEPOINT before;
INSERT INTO h VALUES ('sub', pg_temp.hold('alice-key'));
RELEASE SAVEPOINT before;

SET LOCAL ROLE tollgate_app;
SELECT is(api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one'), 'report.generate', NULL, NULL, NULL),
          NULL, 'a first claim is the caller''s to settle');
SELECT is(api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one'), 'report.generate', NULL, NULL, NULL),
          NULL, 'claimed again before it settled: still to settle');
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('two'), 'report.generate', NULL, NULL, NULL)$$,
                 'TG020', NULL, 'the same identifier with another payload is refused');
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one'), 'report.premium', NULL, NULL, NULL)$$,
                 'TG020', NULL, 'the same identifier for another action is refused');
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one'), 'report.generate', 100, NULL, 'USD')$$,
                 'TG020', NULL, 'the same identifier for another cost is refused');

-- The caller cannot store any answer: only one on a hold of its own, for the claimed action,
-- placed by this transaction.
SELECT throws_ok($$SELECT api.x402_settle_v1('alice-key', NULL, 'pay_0123456789abcdef', (SELECT id FROM h WHERE who = 'bob'),
                                             pg_temp.answer((SELECT id FROM h WHERE who = 'bob'), 'bob'))$$,
                 'TG003', NULL, 'another account''s hold is refused');
SELECT throws_ok($$SELECT api.x402_settle_v1('alice-key', NULL, 'pay_0123456789abcdef', (SELECT id FROM h WHERE who = 'premium'),
                                             pg_temp.answer((SELECT id FROM h WHERE who = 'premium'), 'alice', 'report.premium'))$$,
                 'TG003', NULL, 'a hold for another action is refused');
SELECT throws_ok($$SELECT api.x402_settle_v1('alice-key', NULL, 'pay_0123456789abcdef', (SELECT id FROM h WHERE who = 'sub'),
                                             pg_temp.answer((SELECT id FROM h WHERE who = 'sub')))$$,
                 'TG003', NULL, 'a hold this transaction did not place itself is refused');
INSERT INTO h VALUES ('own', pg_temp.hold('alice-key'));
SELECT throws_ok($$SELECT api.x402_settle_v1('alice-key', NULL, 'pay_0123456789abcdef', (SELECT id FROM h WHERE who = 'own'),
                                             pg_temp.answer((SELECT id FROM h WHERE who = 'bob')))$$,
                 '23514', NULL, 'an answer naming another hold is refused');
SELECT ok(api.x402_settle_v1('alice-key', NULL, 'pay_0123456789abcdef', (SELECT id FROM h WHERE who = 'own'),
                             pg_temp.answer((SELECT id FROM h WHERE who = 'own'))),
          'the answer on its own hold is stored');
SELECT is(api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one'), 'report.generate', NULL, NULL, NULL)
          -> 'body' ->> 'hold_id', (SELECT id::text FROM h WHERE who = 'own'),
          'the same payload and request again replays the stored answer while its hold is active');
SELECT is((SELECT status FROM api.capture_hold_v1('alice-key', (SELECT id FROM h WHERE who = 'own'), NULL)), 'captured',
          'the seller captures the hold');
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'pay_0123456789abcdef', sha256('one'), 'report.generate', NULL, NULL, NULL)$$,
                 'TG022', NULL, 'once its hold is captured, the payment is used: a replay is refused');
SELECT is(api.x402_claim_v1('bob-key', NULL, 'pay_0123456789abcdef', sha256('two'), 'report.generate', NULL, NULL, NULL), NULL,
          'identifiers are per account: bob may use the same one');
RESET ROLE;
SELECT throws_ok($$UPDATE tollgate.x402_settlements SET response = '{}' WHERE payment_identifier = 'pay_0123456789abcdef'
                   AND response IS NOT NULL$$,
                 'TG011', NULL, 'a settled answer never changes');
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'short', sha256('one'), 'report.generate', NULL, NULL, NULL)$$,
                 '23514', NULL, 'an identifier is 16-128 letters, digits, _ and -');
INSERT INTO tollgate.x402_settlements (account_uuid, payment_identifier, payload_sha256, response, settled_at)
SELECT id, 'pay_settled_before_0042', sha256('old'), '{"body": {}}', now() FROM tollgate.accounts WHERE external_id = 'alice';
SELECT throws_ok($$SELECT api.x402_claim_v1('alice-key', NULL, 'pay_settled_before_0042', sha256('old'), 'report.generate', NULL, NULL, NULL)$$,
                 'TG022', NULL, 'a settlement made before requests and holds were recorded is never replayed');

SELECT * FROM finish();
ROLLBACK;
