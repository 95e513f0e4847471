-- Stripe's units are not ISO 4217's: converted in one place, refused when Stripe cannot take them.
BEGIN;
SELECT plan(32);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('stripe_units', 'su-key', false, NULL)) IS NOT NULL,
          'an account and key');

-- What POST /v1/payments sends to Stripe for an amount in ISO minor units.
SELECT is(tollgate.to_stripe_amount(1000, 'USD'), 1000::bigint, 'USD: Stripe takes cents, as ISO');
SELECT is(tollgate.to_stripe_amount(500, 'JPY'), 500::bigint, 'JPY: zero-decimal in both');
SELECT is(tollgate.to_stripe_amount(1000, 'ISK'), 100000::bigint,
          'ISK: 1000 kronur (ISO exponent 0) are 100000 at Stripe (two decimals)');
SELECT is(tollgate.to_stripe_amount(150000, 'MGA'), 1500::bigint,
          'MGA: 1500.00 ariary (ISO exponent 2) are 1500 at Stripe (zero-decimal)');
SELECT is(tollgate.to_stripe_amount(5120, 'KWD'), 5120::bigint, 'KWD: three decimals ending in 0');
SELECT is(tollgate.to_stripe_amount(12345, 'HUF'), 12345::bigint, 'HUF: charges take two decimals');
SELECT is(tollgate.to_stripe_amount(12345, 'TWD'), 12345::bigint, 'TWD: charges take two decimals');
SELECT is(tollgate.to_stripe_amount(2500, 'UGX'), 2500::bigint, 'UGX: zero-decimal in both');
SELECT throws_ok($$SELECT tollgate.to_stripe_amount(150050, 'MGA')$$, '23514', NULL,
                 'MGA below a whole ariary cannot be written at Stripe');
SELECT throws_ok($$SELECT tollgate.to_stripe_amount(5124, 'KWD')$$, '23514', NULL,
                 'three decimals must end in 0');
SELECT throws_ok($$SELECT tollgate.to_stripe_amount(100, 'CLF')$$, '23514', NULL,
                 'a currency Stripe does not charge in is refused');
SELECT is(tollgate.from_stripe_amount(100000, 'isk'), 1000::bigint, 'from Stripe: ISK 100000 is 1000 kronur');
SELECT is(tollgate.from_stripe_amount(1500, 'mga'), 150000::bigint, 'from Stripe: MGA 1500 is 150000 minor units');
SELECT is(tollgate.from_stripe_amount(150, 'isk'), NULL, 'from Stripe: a fraction of a krona is no ISO amount');

-- Minimum charges and the 402's payment amount.
SELECT throws_ok($$SELECT tollgate.stripe_charge_amount(49, 'USD')$$, '23514',
                 '0.49 USD is below the smallest charge Stripe accepts in USD (0.50 USD)',
                 'below Stripe''s minimum charge for the currency');
SELECT is(tollgate.stripe_payable_minor(10, 'USD'), 50::bigint, 'a 0.10 USD price is paid with Stripe''s 0.50 minimum');
SELECT is(tollgate.stripe_payable_minor(1234, 'USD'), 1234::bigint, '... a larger one as it is');
SELECT is(tollgate.stripe_payable_minor(150001, 'MGA'), 150100::bigint, 'MGA rounds up to a whole ariary');
SELECT is(tollgate.stripe_payable_minor(5121, 'KWD'), 5130::bigint, 'KWD rounds up to a last digit of 0');

-- begin_payment_v1 refuses what Stripe cannot take, before any Stripe call; nothing is claimed.
SELECT throws_ok($$SELECT * FROM api.begin_payment_v1('su-key', 'k-mga', NULL, 150050, 'MGA', 'credits', NULL, NULL)$$,
                 '23514', NULL, 'a payment of 1500.50 MGA is refused');
SELECT throws_ok($$SELECT * FROM api.begin_payment_v1('su-key', 'k-usd', NULL, 20, 'USD', 'credits', NULL, NULL)$$,
                 '23514', NULL, 'a payment of 0.20 USD is refused');
SELECT is((SELECT count(*)::int FROM tollgate.idempotency_keys), 0, 'no key was claimed');

-- An event's amounts are read in Stripe's units.
SELECT ok(api.finish_payment_v1('su-key',
    (SELECT payment_id FROM api.begin_payment_v1('su-key', 'k-isk', NULL, 1000, 'ISK', 'credits', NULL, NULL)),
    'pi_isk', 'requires_payment_method', NULL) IS NOT NULL, 'a payment of 1000 ISK');
CREATE FUNCTION pg_temp.succeeded(p_id text, p_amount bigint, p_created bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', p_id, 'type', 'payment_intent.succeeded',
        'created', p_created, 'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent',
        'id', 'pi_isk', 'status', 'succeeded', 'currency', 'isk', 'amount', p_amount, 'amount_received', p_amount))))
$$;
SELECT is(pg_temp.succeeded('evt_isk_1', 1000, 1000), 'rejected',
          'an event saying 1000 (10 kronur at Stripe) does not settle a 1000-krona payment');
SELECT is(pg_temp.succeeded('evt_isk_2', 100000, 1001), 'applied', 'Stripe''s 100000 is the payment''s 1000 kronur');
SELECT is((SELECT t.status::text FROM tollgate.transactions t WHERE t.reference = 'credits-pi_isk'), 'settled',
          '... and the credits it bought are settled');

-- A PaymentIntent of another integration, whose event waits unclaimed, cannot be claimed by
-- recording its id: Stripe's metadata names the payment Tollgate created it for.
SELECT is((SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_foreign', 'type', 'payment_intent.succeeded',
    'created', 2000, 'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', 'pi_foreign',
    'status', 'succeeded', 'currency', 'usd', 'amount', 99999999, 'amount_received', 99999999, 'metadata', '{}'::jsonb))))),
          'pending', 'a foreign PaymentIntent''s success waits, unclaimed');
SELECT ok(api.finish_payment_v1('su-key',
    (SELECT payment_id FROM api.begin_payment_v1('su-key', 'k-claim', NULL, 99999999, 'USD', 'credits', NULL, NULL)),
    'pi_foreign', 'requires_payment_method', NULL) IS NOT NULL, 'a payment recorded under its Stripe id');
SELECT results_eq($$SELECT e.state::text, p.status::text FROM tollgate.payment_events e
                    JOIN tollgate.payment_intents p ON p.id = e.payment_intent_id WHERE e.id = 'evt_foreign'$$,
                  $$VALUES ('rejected', 'requires_payment_method')$$, 'the event is rejected: the payment did not succeed');
SELECT is((SELECT t.status::text FROM tollgate.transactions t WHERE t.reference = 'credits-pi_foreign'), 'pending',
          'and no credits were bought');
SELECT is((SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_own', 'type', 'payment_intent.succeeded',
    'created', 2001, 'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', 'pi_foreign',
    'status', 'succeeded', 'currency', 'usd', 'amount', 99999999,
    'metadata', jsonb_build_object('tollgate_payment_id', (SELECT id FROM tollgate.payment_intents WHERE stripe_id = 'pi_foreign'))))))),
          'applied', 'an event whose metadata names the payment is applied');

SELECT * FROM finish();
ROLLBACK;
