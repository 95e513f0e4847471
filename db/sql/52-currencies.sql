-- Currencies as the API sees them: every amount crosses the API in two forms, `x` (a decimal
-- in the currency's major units, "0.50") and `x_minor` (an integer of minor units, 50). The
-- API converts between them with the exponents read here, exactly (api/money.py).

SET LOCAL ROLE tollgate_owner;

-- Every currency Tollgate accepts and its exponent: the number of decimals of its minor unit
-- (2 for USD, 0 for JPY, 3 for KWD).
CREATE OR REPLACE FUNCTION api.currencies_v1() RETURNS TABLE (code text, exponent smallint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.code, c.exponent FROM tollgate.currencies c ORDER BY c.code
$$;
