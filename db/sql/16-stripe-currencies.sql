-- How Stripe's API writes an amount in each currency, beside ISO 4217's minor units, and the
-- conversions between the two, made in one place.
--
-- Tollgate stores ISO 4217 minor units. Stripe's API takes "the currency's smallest unit",
-- which is not always ISO's: MGA is zero-decimal at Stripe (ISO: 2), ISK is written with two
-- decimals at Stripe (ISO: 0) and must be a whole krona, three-decimal amounts must end in 0.
-- Source: docs.stripe.com/currencies (zero-decimal list, three-decimal currencies, special
-- cases, minimum charge amounts), read 2026-11. HUF and TWD are zero-decimal at Stripe for
-- payouts only; charges and refunds take two decimals, as ISO does. UGX is on Stripe's
-- zero-decimal list, as in ISO.
--
-- Every amount that goes to Stripe (a PaymentIntent, a refund) passes tollgate.to_stripe_amount,
-- every amount read from Stripe (an event's amount, amount_received, amount_refunded) passes
-- tollgate.from_stripe_amount, and what a 402 asks for is tollgate.stripe_payable_minor. A
-- conversion that is not exact is refused, never rounded.
--
-- Reference data, not owned by an account (replicated to every node if distributed).

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
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

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ISO minor units -> Stripe's amount. Refuses (SQLSTATE 23514, 422 at the API) a currency
-- Stripe does not charge in, an amount Stripe's API cannot write (MGA below a whole ariary,
-- ISK below a whole krona, three decimals not ending in 0) and one above Stripe's largest.
CREATE OR REPLACE FUNCTION tollgate.to_stripe_amount(p_minor bigint, p_currency text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    iso     smallint;
    s       tollgate.stripe_currencies;
    amount  numeric;
BEGIN
    SELECT c.exponent INTO iso FROM tollgate.currencies c WHERE c.code = p_currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown currency %', p_currency
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'currency_known';
    END IF;
    SELECT * INTO s FROM tollgate.stripe_currencies sc WHERE sc.code = p_currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Stripe does not take payments in %', p_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'stripe_currency';
    END IF;
    amount := p_minor * power(10::numeric, s.exponent - iso);
    IF amount <> trunc(amount) OR mod(amount, s.step) <> 0 THEN
        RAISE EXCEPTION '% % is not an amount Stripe can charge or refund: use a multiple of % %',
                tollgate.format_minor(p_minor, p_currency), p_currency,
                tollgate.format_minor(tollgate.stripe_unit_minor(p_currency), p_currency), p_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'stripe_amount_step';
    END IF;
    IF amount > 99999999 THEN
        RAISE EXCEPTION '% % is above the largest amount Stripe takes', tollgate.format_minor(p_minor, p_currency), p_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_amount_max';
    END IF;
    RETURN amount::bigint;
END
$$;

-- The smallest ISO minor-unit amount Stripe can write in the currency (100 for MGA, 10 for the
-- three-decimal currencies, else 1); NULL when Stripe does not take the currency.
-- PL/pgSQL, as stripe_payable_minor below: a 402 asks for both several times, and a SQL
-- function with its own search_path is never inlined and is planned again at every call.
CREATE OR REPLACE FUNCTION tollgate.stripe_unit_minor(p_currency text) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unit bigint;
BEGIN
    SELECT CASE WHEN s.exponent >= c.exponent
                THEN greatest(1, s.step / power(10, s.exponent - c.exponent))::bigint
                ELSE (power(10, c.exponent - s.exponent) * s.step)::bigint END
    INTO unit
    FROM tollgate.stripe_currencies s JOIN tollgate.currencies c USING (code)
    WHERE s.code = p_currency;
    RETURN unit;
END
$$;

-- A charge: to_stripe_amount, and at least Stripe's minimum charge for the currency.
CREATE OR REPLACE FUNCTION tollgate.stripe_charge_amount(p_minor bigint, p_currency text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    amount  bigint := tollgate.to_stripe_amount(p_minor, p_currency);
    least_  bigint;
BEGIN
    SELECT s.min_minor INTO least_ FROM tollgate.stripe_currencies s WHERE s.code = p_currency;
    IF p_minor < least_ THEN
        RAISE EXCEPTION '% % is below the smallest charge Stripe accepts in % (% %)',
                tollgate.format_minor(p_minor, p_currency), p_currency, p_currency,
                tollgate.format_minor(least_, p_currency), p_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'stripe_minimum_charge';
    END IF;
    RETURN amount;
END
$$;

-- Stripe's amount -> ISO minor units; NULL when it is not a whole number of minor units (or
-- Stripe does not take the currency), which the caller treats as a mismatch.
CREATE OR REPLACE FUNCTION tollgate.from_stripe_amount(p_amount numeric, p_currency text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN m = trunc(m) AND m BETWEEN 0 AND 999999999999 THEN m::bigint END
    FROM (SELECT p_amount * power(10::numeric, c.exponent - s.exponent) AS m
          FROM tollgate.stripe_currencies s JOIN tollgate.currencies c USING (code)
          WHERE s.code = upper(p_currency)) AS converted
$$;

-- What a payment for p_minor must ask for at Stripe: p_minor rounded up to an amount Stripe
-- can write, and at least Stripe's minimum charge. NULL when Stripe does not take the currency.
CREATE OR REPLACE FUNCTION tollgate.stripe_payable_minor(p_minor bigint, p_currency text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payable bigint;
BEGIN
    SELECT ((greatest(p_minor, coalesce(s.min_minor, 1)) + u.unit - 1) / u.unit) * u.unit
    INTO payable
    FROM tollgate.stripe_currencies s,
         LATERAL (SELECT tollgate.stripe_unit_minor(s.code) AS unit) u
    WHERE s.code = p_currency;
    RETURN payable;
END
$$;

-- For the service: the amount to send Stripe for a payment begin_payment_v1 accepted (which
-- already refused what Stripe cannot take), in the same statement.
CREATE OR REPLACE FUNCTION api.stripe_charge_amount_v1(p_amount bigint, p_currency text)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tollgate.stripe_charge_amount(p_amount, p_currency) $$;

-- For the 402: what a payment covering p_amount asks for (see stripe_payable_minor), in minor
-- units and formatted in major units. No row when Stripe does not take the currency.
CREATE OR REPLACE FUNCTION api.stripe_payable_v1(p_amount bigint, p_currency text)
RETURNS TABLE (amount_minor bigint, amount text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m, tollgate.format_minor(m, p_currency)
    FROM (SELECT tollgate.stripe_payable_minor(p_amount, p_currency) AS m) AS payable
    WHERE m IS NOT NULL
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.stripe_currencies ---

CREATE OR REPLACE TRIGGER stripe_currencies_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.stripe_currencies
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

CREATE OR REPLACE TRIGGER stripe_currencies_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.stripe_currencies
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');
