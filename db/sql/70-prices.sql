-- The price list: what a paid action costs (one run: the one-off payment a 402 asks for, and
-- the default hold on credits) and what a unit of a metered metric costs. Operator-wide
-- configuration (like currencies), so it carries no account; set with api.set_action_price_v1,
-- api.set_metric_price_v1 or `tollgate actions set`.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.actions (
    name        tollgate.purpose PRIMARY KEY,
    -- What one run of the action costs: the one-off payment a 402 asks for, and the default
    -- hold on credits.
    price       tollgate.payment_amount NOT NULL,
    currency    text        NOT NULL CONSTRAINT actions_currency_fkey REFERENCES tollgate.currencies,
    description tollgate.description,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Metered metrics with a price per unit, debited from credits as usage is recorded.
CREATE TABLE tollgate.metric_prices (
    metric      text        PRIMARY KEY CONSTRAINT metric_prices_metric_format CHECK (metric ~ '^[a-z][a-z0-9_.:-]{0,99}$'),
    -- Minor units per unit of quantity; may be fractional (0.002 cents per token). The cost of
    -- an event is quantity x unit_price, rounded half up to a whole minor unit.
    unit_price  numeric     NOT NULL CONSTRAINT metric_prices_unit_price_positive CHECK (unit_price > 0 AND unit_price < 1e12),
    currency    text        NOT NULL CONSTRAINT metric_prices_currency_fkey REFERENCES tollgate.currencies,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Set what an action costs (a decimal price in p_currency).
CREATE OR REPLACE FUNCTION tollgate.set_action_price(p_action text, p_price numeric, p_currency text, p_description text)
RETURNS TABLE (action text, price text, currency text, description text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    minor bigint := tollgate.to_minor(p_price, p_currency);
BEGIN
    IF p_action = 'credits' THEN
        RAISE EXCEPTION '"credits" is the purpose of buying credits, not an action'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'purpose_format';
    END IF;
    INSERT INTO tollgate.actions AS a (name, price, currency, description)
    VALUES (p_action, minor, p_currency, p_description)
    ON CONFLICT (name) DO UPDATE
    SET price = excluded.price, currency = excluded.currency, description = excluded.description, updated_at = now();
    RETURN QUERY SELECT p_action, tollgate.format_minor(minor, p_currency), p_currency, p_description;
END
$$;

CREATE OR REPLACE FUNCTION api.set_action_price_v1(
    p_api_key text, p_action text, p_price numeric, p_currency text, p_description text
) RETURNS TABLE (action text, price text, currency text, description text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.require_admin(p_api_key);
    RETURN QUERY SELECT * FROM tollgate.set_action_price(p_action, p_price, p_currency, p_description);
END
$$;

-- Set the price of a metered metric, per unit, as a decimal in p_currency (may be fractional:
-- 0.00002 USD a token).
CREATE OR REPLACE FUNCTION tollgate.set_metric_price(p_metric text, p_unit_price numeric, p_currency text)
RETURNS TABLE (metric text, unit_price numeric, currency text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    exp smallint;
BEGIN
    PERFORM tollgate.to_minor(1, p_currency);  -- the currency must exist
    SELECT c.exponent INTO exp FROM tollgate.currencies c WHERE c.code = p_currency;
    INSERT INTO tollgate.metric_prices AS m (metric, unit_price, currency)
    VALUES (p_metric, p_unit_price * 10::numeric ^ exp, p_currency)
    ON CONFLICT (metric) DO UPDATE SET unit_price = excluded.unit_price, currency = excluded.currency, updated_at = now();
    RETURN QUERY SELECT p_metric, p_unit_price, p_currency;
END
$$;

CREATE OR REPLACE FUNCTION api.set_metric_price_v1(p_api_key text, p_metric text, p_unit_price numeric, p_currency text)
RETURNS TABLE (metric text, unit_price numeric, currency text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.require_admin(p_api_key);
    RETURN QUERY SELECT * FROM tollgate.set_metric_price(p_metric, p_unit_price, p_currency);
END
$$;

-- Every priced action, by name: a page of at most p_limit (1-500) after the action p_after (the
-- last of the previous page). Any key may read prices: an agent needs to know what a run costs.
CREATE OR REPLACE FUNCTION api.list_actions_v1(p_api_key text, p_limit integer, p_after text)
RETURNS TABLE (action text, price text, price_minor bigint, currency text, description text,
               updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.authenticate(p_api_key);
    PERFORM tollgate.check_page_limit(p_limit);
    RETURN QUERY
    SELECT a.name::text, tollgate.format_minor(a.price, a.currency), a.price::bigint, a.currency,
           a.description::text, a.updated_at
    FROM tollgate.actions a
    WHERE p_after IS NULL OR a.name > p_after
    ORDER BY a.name
    LIMIT p_limit;
END
$$;

-- Every metered metric with a price, by name, paged as api.list_actions_v1. unit_price is per
-- unit in the currency's units, exactly (it may be a fraction of a minor unit), with at least
-- the currency's decimals.
CREATE OR REPLACE FUNCTION api.list_metric_prices_v1(p_api_key text, p_limit integer, p_after text)
RETURNS TABLE (metric text, unit_price numeric, currency text, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.authenticate(p_api_key);
    PERFORM tollgate.check_page_limit(p_limit);
    RETURN QUERY
    SELECT m.metric, tollgate.format_exact(m.unit_price, m.currency)::numeric, m.currency, m.updated_at
    FROM tollgate.metric_prices m
    WHERE p_after IS NULL OR m.metric > p_after
    ORDER BY m.metric
    LIMIT p_limit;
END
$$;
