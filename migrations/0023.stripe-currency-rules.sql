-- How Stripe's API writes an amount in each currency, beside ISO 4217's minor units.
--
-- Tollgate's own amounts keep ISO 4217 exponents (tollgate.currencies). Stripe's API takes
-- "the currency's smallest unit", which is not always ISO's: MGA is zero-decimal at Stripe
-- (ISO: 2), ISK is written with two decimals at Stripe (ISO: 0) and must be a whole krona,
-- three-decimal amounts must end in 0. Source: docs.stripe.com/currencies (zero-decimal list,
-- three-decimal currencies, special cases, minimum charge amounts), read 2026-11.
-- HUF and TWD are zero-decimal at Stripe for payouts only; charges and refunds take two
-- decimals, as ISO does, so they need no row of their own here. UGX is on Stripe's
-- zero-decimal list, as in ISO.
-- Converted in one place: tollgate.to_stripe_amount / tollgate.from_stripe_amount
-- (db/sql/55-stripe-amounts.sql).
--
-- Reference data, not owned by an account (replicated to every node if distributed).
-- depends: 0016.outbox-retrying-index

SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.stripe_currencies (
    code        text     PRIMARY KEY REFERENCES tollgate.currencies (code),
    -- Decimals of the amount in Stripe's API: 0 for zero-decimal currencies, else 2 or 3.
    exponent    smallint NOT NULL
                CONSTRAINT stripe_currencies_exponent_range CHECK (exponent BETWEEN 0 AND 3),
    -- Stripe's amount must be a multiple of this: 10 for three-decimal currencies (the last
    -- digit is 0), 100 for ISK (whole kronur written with two decimals), else 1.
    step        integer  NOT NULL DEFAULT 1
                CONSTRAINT stripe_currencies_step_values CHECK (step IN (1, 10, 100)),
    -- The smallest charge Stripe accepts, in ISO minor units, where Stripe states one for the
    -- currency (its settlement currencies); NULL: the minimum is the equivalent of the
    -- settlement currency's, which only Stripe can tell at charge time.
    min_minor   bigint
                CONSTRAINT stripe_currencies_min_positive CHECK (min_minor > 0)
);

COMMENT ON TABLE tollgate.stripe_currencies IS
    'Currencies Stripe charges in, and how its API writes their amounts. A currency without a row cannot be paid through Stripe.';

-- Every ISO currency Tollgate knows, with Stripe's exponent where it differs from ISO's.
-- CLF and UYW (four decimals) are not Stripe currencies.
INSERT INTO tollgate.stripe_currencies (code, exponent, step)
SELECT c.code,
       CASE c.code WHEN 'MGA' THEN 0 WHEN 'ISK' THEN 2 ELSE c.exponent END,
       CASE WHEN c.code = 'ISK' THEN 100 WHEN c.exponent = 3 THEN 10 ELSE 1 END
FROM tollgate.currencies c
WHERE c.exponent <= 3;

-- Minimum charge amounts Stripe publishes per settlement currency, in ISO minor units.
UPDATE tollgate.stripe_currencies s SET min_minor = m.min_minor
FROM (VALUES ('USD', 50), ('AED', 200), ('AUD', 50), ('BGN', 100), ('BRL', 50), ('CAD', 50),
             ('CHF', 50), ('CZK', 1500), ('DKK', 250), ('EUR', 50), ('GBP', 30), ('HKD', 400),
             ('HUF', 17500), ('INR', 50), ('JPY', 50), ('MXN', 1000), ('MYR', 200),
             ('NOK', 300), ('NZD', 50), ('PLN', 200), ('RON', 200), ('SEK', 300), ('SGD', 50),
             ('THB', 1000)) AS m (code, min_minor)
WHERE s.code = m.code;
