-- Money: integer minor units, a positive amount below a maximum, ISO 4217 currencies.
BEGIN;
SELECT plan(15);

INSERT INTO tollgate.accounts (id, external_id)
VALUES ('00000000-0000-0000-0000-0000000000a1', 'money_account');

SELECT results_eq(
    $$SELECT code, exponent::int FROM tollgate.currencies WHERE code IN ('JPY', 'USD', 'KWD', 'CLF') ORDER BY code$$,
    $$VALUES ('CLF', 4), ('JPY', 0), ('KWD', 3), ('USD', 2)$$,
    'currency exponents follow ISO 4217 (JPY 0, USD 2, KWD 3, CLF 4)');
SELECT cmp_ok((SELECT count(*)::int FROM tollgate.currencies), '>=', 150, 'the active ISO 4217 currencies are known');
ALTER TABLE tollgate.currencies DISABLE TRIGGER currencies_reference_data;
SELECT throws_ok($$INSERT INTO tollgate.currencies VALUES ('usd', 2)$$, '23514', NULL, 'currency codes are three capital letters');
ALTER TABLE tollgate.currencies ENABLE TRIGGER currencies_reference_data;

CREATE TEMP TABLE attempt (amount bigint, currency text, sqlstate text, why text);
INSERT INTO attempt VALUES
    (0,          'USD', '23514', 'zero is refused'),
    (-1,         'USD', '23514', 'a negative amount is refused'),
    (100000000,  'USD', '23514', 'more than eight digits of minor units is refused'),
    (1250,       'XYZ', '23503', 'an unknown currency is refused'),
    (1250,       'usd', '23503', 'currency codes are upper case in storage');

SELECT throws_ok(
    format($$INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status)
             VALUES ('00000000-0000-0000-0000-0000000000a1', 'pi_money_%s', %s, %L, 'requires_payment_method')$$,
           md5(a.why), a.amount, a.currency),
    a.sqlstate, NULL, 'table: ' || a.why)
FROM attempt a;

SELECT lives_ok(
    $$INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status)
      VALUES ('00000000-0000-0000-0000-0000000000a1', 'pi_money_min', 1, 'USD', 'requires_payment_method'),
             ('00000000-0000-0000-0000-0000000000a1', 'pi_money_max', 99999999, 'JPY', 'requires_payment_method'),
             ('00000000-0000-0000-0000-0000000000a1', 'pi_money_kwd', 1250, 'KWD', 'requires_payment_method')$$,
    'one minor unit, the maximum, and three-decimal currencies are accepted');

-- The api checks a request against the same rules before Stripe is ever called.
SELECT ok((SELECT key_id FROM api.create_api_key_v1('money_api', 'money-key', false, NULL)) IS NOT NULL, 'a key for the api checks');
SELECT throws_ok(
    format($$SELECT * FROM api.begin_payment_v1('money-key', 'k-%s', NULL, %s, %L, NULL, NULL, NULL)$$,
           md5(a.why), a.amount, a.currency),
    a.sqlstate, NULL, 'api: ' || a.why)
FROM attempt a WHERE a.currency <> 'usd';

SELECT is((SELECT count(*)::int FROM tollgate.idempotency_keys), 0, 'refused requests leave no idempotency record');

SELECT * FROM finish();
ROLLBACK;
