-- Spend caps: a limit on what an account, or one of its agents, may spend per UTC day or month.
-- Caps bind every movement out of an account's credits (holds and captures, metered usage,
-- transfers), whoever asks: the account's key, an agent, or an admin key acting for the
-- account. Reaching the hard limit refuses the spending (spend_cap_exceeded); crossing the soft
-- threshold announces spend.threshold_reached once per period. Reversals and refunds take money
-- back, so caps do not count them.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TYPE tollgate.spend_period AS ENUM ('day', 'month');

-- A limit on what an account (agent_id '') or one of its agents may spend in a period (UTC
-- days and months). Reaching hard_limit refuses spending; crossing soft_pct percent of it
-- announces spend.threshold_reached once per period.
CREATE TABLE tollgate.spend_caps (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid  uuid        NOT NULL CONSTRAINT spend_caps_account_uuid_fkey REFERENCES tollgate.accounts,
    agent_id    text        NOT NULL DEFAULT '' CONSTRAINT spend_caps_agent_id_format CHECK (agent_id ~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})?$'),
    period      tollgate.spend_period NOT NULL,
    currency    text        NOT NULL CONSTRAINT spend_caps_currency_fkey REFERENCES tollgate.currencies,
    hard_limit  tollgate.amount_minor NOT NULL,
    soft_pct    smallint    NOT NULL DEFAULT 80 CONSTRAINT spend_caps_soft_pct_range CHECK (soft_pct BETWEEN 1 AND 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT spend_caps_scope_key UNIQUE (account_uuid, agent_id, period, currency)
);

-- What was spent, per account, agent, currency and UTC day, in minor units: held credits (the
-- whole hold while active, the captured amount after) and metered usage (exact, so possibly
-- fractional). Maintained by the hold triggers and the usage function; caps read it.
CREATE TABLE tollgate.spend_daily (
    account_uuid  uuid        NOT NULL CONSTRAINT spend_daily_account_uuid_fkey REFERENCES tollgate.accounts,
    agent_id    text        NOT NULL,
    currency    text        NOT NULL CONSTRAINT spend_daily_currency_fkey REFERENCES tollgate.currencies,
    day         date        NOT NULL,
    spent       numeric     NOT NULL DEFAULT 0 CONSTRAINT spend_daily_spent_non_negative CHECK (spent >= 0),
    PRIMARY KEY (account_uuid, currency, day, agent_id)
);

-- One row per cap and period whose soft threshold was crossed: the notice goes out once.
CREATE TABLE tollgate.spend_notices (
    cap_id       uuid        NOT NULL CONSTRAINT spend_notices_cap_id_fkey REFERENCES tollgate.spend_caps,
    account_uuid   uuid        NOT NULL CONSTRAINT spend_notices_account_uuid_fkey REFERENCES tollgate.accounts,
    period_start timestamptz NOT NULL,
    spent        numeric     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cap_id, period_start)
);

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Today, and the start of a spend period, in UTC.
CREATE OR REPLACE FUNCTION tollgate.utc_day() RETURNS date
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (now() AT TIME ZONE 'UTC')::date $$;

CREATE OR REPLACE FUNCTION tollgate.period_start(p_period tollgate.spend_period) RETURNS date
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_period WHEN 'day' THEN tollgate.utc_day()
                         ELSE date_trunc('month', now() AT TIME ZONE 'UTC')::date END
$$;

-- ---------------------------------------------------------------------------------------------
-- Spend: what was spent per day, caps, the soft-threshold notice
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tollgate.spend_caps_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.audit(NEW.account_uuid, 'spend_cap', NEW.id::text,
                           CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'changed' END,
                           CASE TG_OP WHEN 'UPDATE' THEN tollgate.format_minor(OLD.hard_limit, OLD.currency) END,
                           tollgate.format_minor(NEW.hard_limit, NEW.currency));
    RETURN NULL;
END
$$;

-- What the account (p_agent NULL: all its agents) spent in p_currency since p_since.
CREATE OR REPLACE FUNCTION tollgate.spent_since(p_account_uuid uuid, p_agent text, p_currency text, p_since date)
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(d.spent), 0) FROM tollgate.spend_daily d
    WHERE d.account_uuid = p_account_uuid AND d.currency = p_currency AND d.day >= p_since
      AND (p_agent IS NULL OR d.agent_id = p_agent)
$$;

-- The first cap that spending p_amount more would break, or no row. Caps of the account
-- (agent_id '') count all its agents; an agent's cap counts that agent.
CREATE OR REPLACE FUNCTION tollgate.cap_exceeded(p_account_uuid uuid, p_agent text, p_currency text, p_amount numeric)
RETURNS TABLE (cap_id uuid, agent_id text, period tollgate.spend_period, hard_limit bigint, spent numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id, c.agent_id, c.period, c.hard_limit::bigint, s.spent
    FROM tollgate.spend_caps c
    CROSS JOIN LATERAL (
        SELECT tollgate.spent_since(c.account_uuid, nullif(c.agent_id, ''), c.currency,
                                    tollgate.period_start(c.period)) AS spent
    ) s
    WHERE c.account_uuid = p_account_uuid AND c.currency = p_currency AND c.agent_id IN ('', p_agent)
      AND s.spent + p_amount > c.hard_limit
    ORDER BY c.agent_id DESC, c.period
    LIMIT 1
$$;

-- Refuse (23514 spend_cap) spending p_amount more if it would pass a cap of the account, or of
-- the agent p_agent ('' for none).
CREATE OR REPLACE FUNCTION tollgate.check_spend_cap(p_account_uuid uuid, p_agent text, p_currency text, p_amount numeric)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap record;
BEGIN
    SELECT * INTO cap FROM tollgate.cap_exceeded(p_account_uuid, p_agent, p_currency, p_amount);
    IF FOUND THEN
        RAISE EXCEPTION '%', format('the %s cap of %s %s%s is reached: %s spent, %s more would pass it',
                cap.period, tollgate.format_minor(cap.hard_limit, p_currency), p_currency,
                CASE WHEN cap.agent_id <> '' THEN ' for agent ' || cap.agent_id ELSE '' END,
                tollgate.format_exact(cap.spent, p_currency), tollgate.format_exact(p_amount, p_currency))
            USING ERRCODE = 'check_violation', CONSTRAINT = 'spend_cap';
    END IF;
END
$$;

-- Record spending (negative: money freed again) and, when a cap's soft threshold is crossed,
-- announce spend.threshold_reached once per cap and period.
CREATE OR REPLACE FUNCTION tollgate.add_spend(
    p_account_uuid uuid, p_agent text, p_currency text, p_day date, p_delta numeric
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap record;
BEGIN
    IF p_delta = 0 THEN
        RETURN;
    END IF;
    INSERT INTO tollgate.spend_daily AS d (account_uuid, agent_id, currency, day, spent)
    VALUES (p_account_uuid, p_agent, p_currency, p_day, greatest(p_delta, 0))
    ON CONFLICT (account_uuid, currency, day, agent_id)
    DO UPDATE SET spent = d.spent + p_delta;
    IF p_delta < 0 THEN
        RETURN;
    END IF;
    FOR cap IN
        SELECT c.id, c.agent_id, c.period, c.hard_limit, c.soft_pct, tollgate.period_start(c.period) AS since,
               tollgate.spent_since(c.account_uuid, nullif(c.agent_id, ''), c.currency,
                                    tollgate.period_start(c.period)) AS spent
        FROM tollgate.spend_caps c
        WHERE c.account_uuid = p_account_uuid AND c.currency = p_currency AND c.agent_id IN ('', p_agent)
    LOOP
        IF cap.spent * 100 >= cap.hard_limit * cap.soft_pct THEN
            -- Its trigger announces it; the key makes it once per cap and period.
            INSERT INTO tollgate.spend_notices (cap_id, account_uuid, period_start, spent)
            VALUES (cap.id, p_account_uuid, cap.since, cap.spent)
            ON CONFLICT ON CONSTRAINT spend_notices_pkey DO NOTHING;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.spend_notices_announce() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap tollgate.spend_caps;
BEGIN
    SELECT * INTO STRICT cap FROM tollgate.spend_caps WHERE id = NEW.cap_id;
    PERFORM tollgate.emit(NEW.account_uuid, 'spend.threshold_reached',
        jsonb_build_object('cap_id', cap.id, 'agent_id', nullif(cap.agent_id, ''), 'period', cap.period,
                           'period_start', NEW.period_start, 'currency', cap.currency, 'spent', NEW.spent,
                           'hard_limit', cap.hard_limit, 'soft_pct', cap.soft_pct));
    RETURN NULL;
END
$$;

-- A transfer out of an account's wallet is spending, whoever asked for it (the account's key or
-- an admin key) and however the posting was written: it counts toward the account's caps (not
-- an agent's: a transfer names none) on the day it is made, and is refused past a hard cap. The
-- posting holds the wallet's lock, so concurrent spending from the wallet is counted in order.
-- After each statement that writes entries (REFERENCING NEW TABLE added), once per account and
-- currency for all the statement's transfers: the caps checked and the spending recorded with
-- tollgate.add_spend where the account has caps (for their notices), in one upsert where it
-- has none. (Holds count through holds_50_spend and usage in api.record_usage_v1; reversals
-- and refunds take money back rather than spend it, and are not counted.)
CREATE OR REPLACE FUNCTION tollgate.ledger_entries_spend() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    today      date := (now() AT TIME ZONE 'UTC')::date;  -- tollgate.utc_day(), spelled out
    s          record;
    owners     uuid[] := '{}';  -- the accounts without caps, their currencies and spending
    currencies text[] := '{}';
    amounts    bigint[] := '{}';
BEGIN
    FOR s IN
        SELECT a.account_uuid, a.currency, -sum(a.amount) AS spent,
               EXISTS (SELECT FROM tollgate.spend_caps c
                       WHERE c.account_uuid = a.account_uuid AND c.currency = a.currency) AS capped
        FROM added a
        JOIN tollgate.ledger_postings p ON p.id = a.posting_id
        JOIN tollgate.ledger_accounts la ON la.id = a.ledger_account_id
        WHERE a.amount < 0 AND p.kind = 'transfer' AND la.name = 'main'
          AND a.account_uuid <> '00000000-0000-0000-0000-000000000000'
        GROUP BY a.account_uuid, a.currency
        ORDER BY a.account_uuid, a.currency
    LOOP
        IF s.capped THEN
            PERFORM tollgate.check_spend_cap(s.account_uuid, '', s.currency, s.spent);
            PERFORM tollgate.add_spend(s.account_uuid, '', s.currency, today, s.spent);
        ELSE
            owners := owners || s.account_uuid;
            currencies := currencies || s.currency;
            amounts := amounts || s.spent::bigint;
        END IF;
    END LOOP;
    INSERT INTO tollgate.spend_daily AS d (account_uuid, agent_id, currency, day, spent)
    SELECT t.a, '', t.c, today, t.s FROM unnest(owners, currencies, amounts) AS t (a, c, s)
    ON CONFLICT (account_uuid, currency, day, agent_id) DO UPDATE SET spent = d.spent + excluded.spent;
    RETURN NULL;
END
$$;

-- Set (or replace) a spend cap for an account, or for one of its agents.
CREATE OR REPLACE FUNCTION api.set_spend_cap_v1(
    p_api_key text, p_account text, p_agent text, p_period text, p_currency text,
    p_hard_limit numeric, p_soft_pct integer
) RETURNS TABLE (account_id text, agent_id text, period text, currency text, hard_limit text, soft_pct integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k     tollgate.api_keys := tollgate.require_admin(p_api_key);
    acct  tollgate.accounts := tollgate.account_for(k, p_account);
    limit_minor bigint := tollgate.to_minor(p_hard_limit, p_currency);
BEGIN
    INSERT INTO tollgate.spend_caps AS c (account_uuid, agent_id, period, currency, hard_limit, soft_pct)
    VALUES (acct.id, coalesce(p_agent, ''), p_period::tollgate.spend_period, p_currency, limit_minor,
            coalesce(p_soft_pct, 80))
    ON CONFLICT ON CONSTRAINT spend_caps_scope_key DO UPDATE
    SET hard_limit = excluded.hard_limit, soft_pct = excluded.soft_pct, updated_at = now();
    RETURN QUERY SELECT acct.external_id, p_agent, p_period, p_currency,
                        tollgate.format_minor(limit_minor, p_currency), coalesce(p_soft_pct, 80);
END
$$;

-- An account's spend caps (its own key's account, or any for admin keys): the account's own
-- (agent_id NULL) first, then each agent's, by period and currency; a page of at most p_limit
-- (1-500) after the cap p_after (the id of the last of the previous page).
CREATE OR REPLACE FUNCTION api.list_spend_caps_v1(p_api_key text, p_account text, p_limit integer, p_after uuid)
RETURNS TABLE (id uuid, account_id text, agent_id text, period text, currency text, hard_limit text,
               hard_limit_minor bigint, soft_pct integer, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    acct  tollgate.accounts := tollgate.account_for(tollgate.authenticate(p_api_key), p_account);
    after tollgate.spend_caps;
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    IF p_after IS NOT NULL THEN
        SELECT * INTO after FROM tollgate.spend_caps c WHERE c.id = p_after AND c.account_uuid = acct.id;
        IF NOT FOUND THEN
            PERFORM tollgate.refuse_cursor('spend cap', p_after::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT c.id, acct.external_id, nullif(c.agent_id, ''), c.period::text, c.currency,
           tollgate.format_minor(c.hard_limit, c.currency), c.hard_limit::bigint, c.soft_pct::integer,
           c.created_at, c.updated_at
    FROM tollgate.spend_caps c
    WHERE c.account_uuid = acct.id
      AND (after.id IS NULL OR (c.agent_id, c.period, c.currency) > (after.agent_id, after.period, after.currency))
    ORDER BY c.agent_id, c.period, c.currency
    LIMIT p_limit;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.spend_caps ---

CREATE OR REPLACE TRIGGER spend_caps_50_audit
    AFTER INSERT OR UPDATE ON tollgate.spend_caps
    FOR EACH ROW EXECUTE FUNCTION tollgate.spend_caps_audit();

-- --- tollgate.spend_notices ---

CREATE OR REPLACE TRIGGER spend_notices_50_announce
    AFTER INSERT ON tollgate.spend_notices
    FOR EACH ROW EXECUTE FUNCTION tollgate.spend_notices_announce();
