-- Currencies: ISO 4217 codes and their exponents (the number of minor-unit digits), and how
-- every amount crosses the API in two forms: `x` (a decimal in the currency's major units,
-- "0.50") and `x_minor` (an integer of minor units, 50), converted exactly with these exponents
-- (tollgate.to_minor, tollgate.format_minor; api/money.py on the Python side).
--
-- Reference data, not owned by an account: if the schema is distributed by account this table
-- is replicated to every node as a reference table. Fund codes (BOV, CHE, ...) and precious
-- metals (XAU, ...) are left out: nobody pays in them.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.currencies (
    code     text     PRIMARY KEY
             CONSTRAINT currencies_code_format CHECK (code ~ '^[A-Z]{3}$'),
    -- 0 for JPY (1 yen is the smallest unit), 2 for USD (cents), 3 for KWD (fils), 4 for CLF.
    exponent smallint NOT NULL
             CONSTRAINT currencies_exponent_range CHECK (exponent BETWEEN 0 AND 4)
);

COMMENT ON TABLE tollgate.currencies IS 'ISO 4217 currencies Tollgate accepts, with their minor-unit exponent.';

INSERT INTO tollgate.currencies (code, exponent) VALUES
    ('AED', 2), ('AFN', 2), ('ALL', 2), ('AMD', 2), ('ANG', 2), ('AOA', 2), ('ARS', 2),
    ('AUD', 2), ('AWG', 2), ('AZN', 2), ('BAM', 2), ('BBD', 2), ('BDT', 2), ('BGN', 2),
    ('BHD', 3), ('BIF', 0), ('BMD', 2), ('BND', 2), ('BOB', 2), ('BRL', 2), ('BSD', 2),
    ('BTN', 2), ('BWP', 2), ('BYN', 2), ('BZD', 2), ('CAD', 2), ('CDF', 2), ('CHF', 2),
    ('CLF', 4), ('CLP', 0), ('CNY', 2), ('COP', 2), ('CRC', 2), ('CUP', 2), ('CVE', 2),
    ('CZK', 2), ('DJF', 0), ('DKK', 2), ('DOP', 2), ('DZD', 2), ('EGP', 2), ('ERN', 2),
    ('ETB', 2), ('EUR', 2), ('FJD', 2), ('FKP', 2), ('GBP', 2), ('GEL', 2), ('GHS', 2),
    ('GIP', 2), ('GMD', 2), ('GNF', 0), ('GTQ', 2), ('GYD', 2), ('HKD', 2), ('HNL', 2),
    ('HTG', 2), ('HUF', 2), ('IDR', 2), ('ILS', 2), ('INR', 2), ('IQD', 3), ('IRR', 2),
    ('ISK', 0), ('JMD', 2), ('JOD', 3), ('JPY', 0), ('KES', 2), ('KGS', 2), ('KHR', 2),
    ('KMF', 0), ('KPW', 2), ('KRW', 0), ('KWD', 3), ('KYD', 2), ('KZT', 2), ('LAK', 2),
    ('LBP', 2), ('LKR', 2), ('LRD', 2), ('LSL', 2), ('LYD', 3), ('MAD', 2), ('MDL', 2),
    ('MGA', 2), ('MKD', 2), ('MMK', 2), ('MNT', 2), ('MOP', 2), ('MRU', 2), ('MUR', 2),
    ('MVR', 2), ('MWK', 2), ('MXN', 2), ('MYR', 2), ('MZN', 2), ('NAD', 2), ('NGN', 2),
    ('NIO', 2), ('NOK', 2), ('NPR', 2), ('NZD', 2), ('OMR', 3), ('PAB', 2), ('PEN', 2),
    ('PGK', 2), ('PHP', 2), ('PKR', 2), ('PLN', 2), ('PYG', 0), ('QAR', 2), ('RON', 2),
    ('RSD', 2), ('RUB', 2), ('RWF', 0), ('SAR', 2), ('SBD', 2), ('SCR', 2), ('SDG', 2),
    ('SEK', 2), ('SGD', 2), ('SHP', 2), ('SLE', 2), ('SOS', 2), ('SRD', 2), ('SSP', 2),
    ('STN', 2), ('SVC', 2), ('SYP', 2), ('SZL', 2), ('THB', 2), ('TJS', 2), ('TMT', 2),
    ('TND', 3), ('TOP', 2), ('TRY', 2), ('TTD', 2), ('TWD', 2), ('TZS', 2), ('UAH', 2),
    ('UGX', 0), ('USD', 2), ('UYU', 2), ('UYW', 4), ('UZS', 2), ('VED', 2), ('VES', 2),
    ('VND', 0), ('VUV', 0), ('WST', 2), ('XAF', 0), ('XCD', 2), ('XCG', 2), ('XOF', 0),
    ('XPF', 0), ('YER', 2), ('ZAR', 2), ('ZMW', 2), ('ZWG', 2);

-- Every amount Tollgate stores: a positive count of minor units, below a sane maximum
-- (10^12 - 1 minor units, i.e. just under 10 billion dollars).
CREATE DOMAIN tollgate.amount_minor AS bigint
    CONSTRAINT amount_minor_range CHECK (VALUE BETWEEN 1 AND 999999999999);

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- Money: decimal amounts at the edge, integer minor units inside
-- ---------------------------------------------------------------------------------------------

-- p_amount (e.g. 1250.50) as minor units of p_currency (125050), exactly or not at all:
-- more decimals than the currency has are refused, never rounded.
CREATE OR REPLACE FUNCTION tollgate.to_minor(p_amount numeric, p_currency text) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    exp    smallint;
    scaled numeric;
BEGIN
    IF p_amount IS NULL THEN
        RAISE EXCEPTION 'an amount is required'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'amount_minor_range';
    END IF;
    SELECT c.exponent INTO exp FROM tollgate.currencies c WHERE c.code = p_currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown currency %', p_currency
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'currency_known';
    END IF;
    scaled := p_amount * 10::numeric ^ exp;
    IF scaled <> trunc(scaled) THEN
        RAISE EXCEPTION '% amounts have at most % decimals: % has more', p_currency, exp, p_amount
            USING ERRCODE = 'check_violation', CONSTRAINT = 'amount_decimals';
    END IF;
    IF scaled < 1 OR scaled > 999999999999 THEN
        RAISE EXCEPTION 'amount % is not between one minor unit and the maximum', p_amount
            USING ERRCODE = 'check_violation', CONSTRAINT = 'amount_minor_range';
    END IF;
    RETURN scaled::bigint;
END
$$;

-- Minor units as a decimal string with the currency's decimals: (125050, USD) -> '1250.50'.
CREATE OR REPLACE FUNCTION tollgate.format_minor(p_amount bigint, p_currency text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT round(p_amount::numeric / 10::numeric ^ c.exponent, c.exponent)::text
    FROM tollgate.currencies c WHERE c.code = p_currency
$$;

-- Every currency Tollgate accepts and its exponent: the number of decimals of its minor unit
-- (2 for USD, 0 for JPY, 3 for KWD).
CREATE OR REPLACE FUNCTION api.currencies_v1() RETURNS TABLE (code text, exponent smallint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.code, c.exponent FROM tollgate.currencies c ORDER BY c.code
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.currencies ---

-- Reference data (currencies, the status machines) changes only in migrations, which call
-- SELECT tollgate.allow_reference_data_change(); first (10-guards.sql). The new rows go into
-- this file's Tables section too, for fresh installs. See CONTRIBUTING.md.
CREATE OR REPLACE TRIGGER currencies_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.currencies
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

CREATE OR REPLACE TRIGGER currencies_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.currencies
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');
