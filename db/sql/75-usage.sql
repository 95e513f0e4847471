-- Metered usage: batches of events, idempotent per account on the caller's event id; priced
-- metrics are debited from credits, within spend caps, in the same transaction. Costs are
-- exact: each batch charges the whole minor units of what it and the carried fraction add up to.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.usage_events (
    account_uuid   uuid        NOT NULL CONSTRAINT usage_events_account_uuid_fkey REFERENCES tollgate.accounts,
    -- The caller's id for the event: a retried batch never counts an event twice.
    -- The formats' lengths are checked apart from their patterns: a bounded repetition
    -- ({1,128}) makes PostgreSQL's regex engine about 20x slower per row (migrations/0034).
    id           text        NOT NULL CONSTRAINT usage_events_id_format CHECK (id ~ '^[\x21-\x7e]+$' AND length(id) <= 128),
    agent_id     text        NOT NULL DEFAULT '' CONSTRAINT usage_events_agent_id_format
                                 CHECK (agent_id ~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]*)?$' AND length(agent_id) <= 128),
    metric       text        NOT NULL CONSTRAINT usage_events_metric_format CHECK (metric ~ '^[a-z][a-z0-9_.:-]*$' AND length(metric) <= 100),
    quantity     numeric     NOT NULL CONSTRAINT usage_events_quantity_range CHECK (quantity > 0 AND quantity < 1e15),
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- What it cost, exactly, in minor units (a fraction of one when the unit price is small;
    -- NULL: unpriced metric). Charged with the batch's posting, whole minor units at a time.
    cost         numeric     CONSTRAINT usage_events_cost_non_negative CHECK (cost >= 0),
    currency     text        CONSTRAINT usage_events_currency_fkey REFERENCES tollgate.currencies,
    posting_id   uuid        CONSTRAINT usage_events_posting_id_fkey REFERENCES tollgate.ledger_postings,
    PRIMARY KEY (account_uuid, id),
    CONSTRAINT usage_events_cost_has_currency CHECK ((cost IS NULL) = (currency IS NULL)),
    -- A usage event costs at most the largest single amount (exactly; fractions allowed).
    CONSTRAINT usage_events_cost_range CHECK (cost <= 999999999999)
);

CREATE INDEX usage_events_metric_time_idx ON tollgate.usage_events (account_uuid, metric, occurred_at);

-- The part of a minor unit of usage an account owes but has not been charged yet: each batch
-- charges the whole minor units of (carry + its exact costs) and carries the rest, so many
-- small events cost what they add up to, never rounded away one by one.
CREATE TABLE tollgate.usage_carry (
    account_uuid  uuid        NOT NULL CONSTRAINT usage_carry_account_uuid_fkey REFERENCES tollgate.accounts,
    currency    text        NOT NULL CONSTRAINT usage_carry_currency_fkey REFERENCES tollgate.currencies,
    fraction    numeric     NOT NULL CONSTRAINT usage_carry_fraction_range CHECK (fraction >= 0 AND fraction < 1),
    PRIMARY KEY (account_uuid, currency)
);

COMMENT ON TABLE tollgate.usage_events IS 'Metered usage; priced metrics are debited from credits in the same transaction.';

-- Retention (89-retention.sql) finds old events by arrival: BRIN, almost free on insert.
CREATE INDEX usage_events_received_at_brin ON tollgate.usage_events USING brin (received_at);

-- Usage events older than the retention horizon, moved here by
-- retention.archive_batch('usage_events', ...) and by nothing else. Same columns as
-- usage_events; the key keeps every archived (account, id), and api.record_usage_v2 looks here
-- too, so a retried event is a duplicate however old it is.
CREATE TABLE tollgate.usage_events_archive (
    account_uuid   uuid        NOT NULL CONSTRAINT usage_events_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    id           text        NOT NULL,
    agent_id     text        NOT NULL,
    metric       text        NOT NULL,
    quantity     numeric     NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    cost         numeric,
    currency     text,
    posting_id   uuid,
    CONSTRAINT usage_events_archive_pkey PRIMARY KEY (account_uuid, id)
);

CREATE INDEX usage_events_archive_metric_time_idx ON tollgate.usage_events_archive (account_uuid, metric, occurred_at);

COMMENT ON TABLE tollgate.usage_events_archive IS 'Usage events moved out of usage_events by retention; append-only.';

-- A usage event, as api.record_usage_v2 takes it. Part of the API: a new shape is a new type
-- (_v2) beside this one, never an ALTER of it.
CREATE TYPE api.usage_event_v1 AS (
    id          text,         -- the caller's id, unique per account
    account     text,         -- the account's external id; NULL: the key's own account
    agent       text,         -- the agent that used it; NULL or '': none named
    metric      text,
    quantity    numeric,
    occurred_at timestamptz
);
COMMENT ON TYPE api.usage_event_v1 IS
    'One usage event for api.record_usage_v2; the rules are in its comment.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- An exact amount of minor units (possibly fractional) as a decimal in the currency's units,
-- with at least the currency's decimals: (0.4, USD) -> '0.004', (125, USD) -> '1.25'.
CREATE OR REPLACE FUNCTION tollgate.format_exact(p_minor numeric, p_currency text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN scale(x) < c.exponent THEN round(x, c.exponent) ELSE x END::text
    FROM tollgate.currencies c,
         LATERAL (SELECT trim_scale(p_minor / 10::numeric ^ c.exponent) AS x) v
    WHERE c.code = p_currency
$$;

-- Step 1 of api.record_usage_v2: every event of the batch resolved, checked and priced, one
-- array per field, by position. Its account is one the key may act for (NULL: unknown);
-- reason is NULL for a valid event, the rejection otherwise, 'repeat' for a later occurrence
-- of an (account, id) in the batch (first: the position of its first occurrence); cost is
-- what a valid event costs exactly (NULL: unpriced metric) and currency the metric's.
CREATE OR REPLACE FUNCTION tollgate.check_usage_events(
    p_key tollgate.api_keys, p_events api.usage_event_v1[],
    OUT e_id text[], OUT e_metric text[], OUT e_quantity numeric[], OUT e_occurred timestamptz[],
    OUT e_account uuid[], OUT e_agent text[], OUT e_cost numeric[], OUT e_currency text[],
    OUT e_reason text[], OUT e_first integer[]
)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    own text := (SELECT a.external_id FROM tollgate.accounts a WHERE a.id = p_key.account_uuid);
BEGIN
    SELECT array_agg(r.id ORDER BY r.ord), array_agg(r.metric ORDER BY r.ord),
           array_agg(r.quantity ORDER BY r.ord), array_agg(r.occurred_at ORDER BY r.ord),
           array_agg(r.account ORDER BY r.ord), array_agg(r.agent ORDER BY r.ord),
           array_agg(CASE WHEN r.reason IS NULL THEN r.quantity * r.unit_price END ORDER BY r.ord),
           array_agg(r.cur ORDER BY r.ord), array_agg(r.reason ORDER BY r.ord),
           array_agg(r.first ORDER BY r.ord)
    INTO e_id, e_metric, e_quantity, e_occurred, e_account, e_agent, e_cost, e_currency, e_reason, e_first
    FROM (
        -- Each account named once, looked up by its index (a batch names a few; joining the
        -- events to the whole table would hash all of it).
        WITH refs AS MATERIALIZED (
            SELECT x.ref, a.id
            FROM (SELECT DISTINCT coalesce(e.account, own) AS ref FROM unnest(p_events) e) x
            CROSS JOIN LATERAL (
                SELECT a.id FROM tollgate.accounts a
                WHERE a.external_id = x.ref
                  AND (p_key.is_admin OR a.id = p_key.account_uuid)
                  AND a.id <> '00000000-0000-0000-0000-000000000000'
            ) a
        )
        SELECT i.ord, i.id, i.metric, i.quantity, i.occurred_at, a.id AS account,
               coalesce(i.agent, '') AS agent, p.currency AS cur, p.unit_price,
               min(i.ord) OVER (PARTITION BY a.id, i.id)::integer AS first,
               CASE
                   WHEN a.id IS NULL THEN 'unknown_account'
                   WHEN i.id IS NULL OR i.id !~ '^[\x21-\x7e]+$' OR length(i.id) > 128 THEN 'invalid_id'
                   WHEN coalesce(i.agent, '') !~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]*)?$' OR length(coalesce(i.agent, '')) > 128
                       THEN 'invalid_agent'
                   WHEN i.metric IS NULL OR i.metric !~ '^[a-z][a-z0-9_.:-]*$' OR length(i.metric) > 100
                       THEN 'invalid_metric'
                   WHEN i.quantity IS NULL OR i.quantity <= 0 OR i.quantity >= 1e15 THEN 'invalid_quantity'
                   WHEN i.occurred_at IS NULL OR i.occurred_at > now() + tollgate.max_clock_skew()
                        OR i.occurred_at < now() - interval '400 days' THEN 'invalid_occurred_at'
                   WHEN i.quantity * p.unit_price > 999999999999 THEN 'cost_out_of_range'
                   WHEN min(i.ord) OVER (PARTITION BY a.id, i.id) < i.ord THEN 'repeat'
               END AS reason
        FROM unnest(p_events) WITH ORDINALITY AS i (id, account, agent, metric, quantity, occurred_at, ord)
        LEFT JOIN refs a ON a.ref = coalesce(i.account, own)
        LEFT JOIN tollgate.metric_prices p ON p.metric = i.metric
    ) r;
END
$$;

-- Step 2 of api.record_usage_v2: one batch at a time per account (an advisory lock each, in
-- account order), then the accounts' credit wallets in the batch's currencies, locked in id
-- order, their expired holds marked so. Returns what each wallet can still spend (wallet ->
-- its available credits less the fraction carried; absent: no limit) and each event's wallet,
-- by position (NULL: none).
CREATE OR REPLACE FUNCTION tollgate.lock_usage_wallets(
    p_accounts uuid[], p_currencies text[], OUT avail jsonb, OUT e_wallet uuid[]
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wallets uuid[];
    w       uuid;
BEGIN
    avail := '{}';
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:usage:' || x.account, 0))
    FROM (SELECT DISTINCT unnest(p_accounts) AS account) x WHERE x.account IS NOT NULL ORDER BY x.account;
    SELECT array_agg(la.id ORDER BY la.id) INTO wallets
    FROM (SELECT la.id FROM tollgate.ledger_accounts la
          JOIN (SELECT DISTINCT a, c FROM unnest(p_accounts, p_currencies) AS x (a, c) WHERE c IS NOT NULL) x
            ON la.account_uuid = x.a AND la.currency = x.c AND la.name = 'main'
          ORDER BY la.id FOR UPDATE OF la) la;
    FOREACH w IN ARRAY coalesce(wallets, '{}') LOOP
        PERFORM tollgate.expire_holds(w);
        IF tollgate.available_credits(w) IS NOT NULL THEN
            avail := avail || jsonb_build_object(w::text, tollgate.available_credits(w)
                                                          - coalesce((SELECT c.fraction FROM tollgate.usage_carry c
                                                                      JOIN tollgate.ledger_accounts la ON la.id = w
                                                                      WHERE c.account_uuid = la.account_uuid
                                                                        AND c.currency = la.currency), 0));
        END IF;
    END LOOP;
    SELECT array_agg(la.id ORDER BY x.ord) INTO e_wallet
    FROM unnest(p_accounts, p_currencies) WITH ORDINALITY AS x (a, c, ord)
    LEFT JOIN tollgate.ledger_accounts la ON la.account_uuid = x.a AND la.currency = x.c AND la.name = 'main';
END
$$;

-- Step 3 of api.record_usage_v2: the priced events, in batch order, while credits (p_avail, as
-- tollgate.lock_usage_wallets gives it) and spend caps last; the others become
-- insufficient_credits or spend_cap_exceeded. What each costs counts toward every cap that
-- applies (the account's, its agent's), exactly. Returns the events' reasons.
CREATE OR REPLACE FUNCTION tollgate.usage_within_limits(
    p_accounts uuid[], p_agents text[], p_currencies text[], p_wallets uuid[], p_costs numeric[],
    p_reasons text[], p_avail jsonb
) RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_reason  text[] := p_reasons;
    avail     jsonb := p_avail;   -- wallet -> credits still available (absent: no limit)
    caps      record;
    cap_id    uuid[] := '{}';
    cap_acct  uuid[] := '{}';
    cap_agent text[] := '{}';
    cap_cur   text[] := '{}';
    cap_room  numeric[] := '{}';
    i         integer;
    j         integer;
    ok        boolean;
BEGIN
    -- Headroom under every cap that applies.
    FOR caps IN
        SELECT c.id, c.account_uuid, c.agent_id, c.currency,
               c.hard_limit - tollgate.spent_since(c.account_uuid, nullif(c.agent_id, ''), c.currency,
                                                   tollgate.period_start(c.period)) AS room
        FROM tollgate.spend_caps c
        WHERE (c.account_uuid, c.currency) IN (SELECT DISTINCT a, cu FROM unnest(p_accounts, p_currencies) AS x (a, cu))
    LOOP
        cap_id := cap_id || caps.id; cap_acct := cap_acct || caps.account_uuid;
        cap_agent := cap_agent || caps.agent_id; cap_cur := cap_cur || caps.currency;
        cap_room := cap_room || caps.room::numeric;
    END LOOP;

    FOR i IN 1 .. coalesce(cardinality(e_reason), 0) LOOP
        CONTINUE WHEN e_reason[i] IS NOT NULL OR p_costs[i] IS NULL OR p_costs[i] = 0;
        IF p_wallets[i] IS NULL OR (avail ? p_wallets[i]::text AND (avail ->> p_wallets[i]::text)::numeric < p_costs[i]) THEN
            e_reason[i] := 'insufficient_credits';
            CONTINUE;
        END IF;
        ok := true;
        FOR j IN 1 .. coalesce(cardinality(cap_id), 0) LOOP
            IF cap_acct[j] = p_accounts[i] AND cap_cur[j] = p_currencies[i] AND cap_agent[j] IN ('', p_agents[i])
               AND cap_room[j] < p_costs[i] THEN
                ok := false;
            END IF;
        END LOOP;
        IF NOT ok THEN
            e_reason[i] := 'spend_cap_exceeded';
            CONTINUE;
        END IF;
        FOR j IN 1 .. coalesce(cardinality(cap_id), 0) LOOP
            IF cap_acct[j] = p_accounts[i] AND cap_cur[j] = p_currencies[i] AND cap_agent[j] IN ('', p_agents[i]) THEN
                cap_room[j] := cap_room[j] - p_costs[i];
            END IF;
        END LOOP;
        IF avail ? p_wallets[i]::text THEN
            avail := jsonb_set(avail, ARRAY[p_wallets[i]::text],
                               to_jsonb((avail ->> p_wallets[i]::text)::numeric - p_costs[i]));
        END IF;
    END LOOP;
    RETURN e_reason;
END
$$;

-- Step 4 of api.record_usage_v2: per wallet, the whole minor units of the fraction carried plus
-- what its accepted events cost are charged in one posting (kind charge, to revenue) and the
-- rest is carried (tollgate.usage_carry); what each agent spent is recorded, exactly. Returns
-- wallet -> the posting that charged it (absent: nothing whole to charge).
CREATE OR REPLACE FUNCTION tollgate.charge_usage(
    p_wallets uuid[], p_accounts uuid[], p_currencies text[], p_agents text[], p_costs numeric[],
    p_reasons text[]
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    charged  record;
    carry    numeric;
    whole    bigint;
    postings jsonb := '{}';
BEGIN
    FOR charged IN
        SELECT x.wallet, x.a AS account, x.c AS cur, x.agent, sum(x.cost) AS total
        FROM unnest(p_wallets, p_accounts, p_currencies, p_agents, p_costs, p_reasons) AS x (wallet, a, c, agent, cost, reason)
        WHERE x.reason IS NULL AND x.cost > 0
        GROUP BY GROUPING SETS ((x.wallet, x.a, x.c), (x.wallet, x.a, x.c, x.agent))
        ORDER BY x.wallet, x.agent NULLS FIRST
    LOOP
        IF charged.agent IS NULL THEN
            SELECT c.fraction INTO carry FROM tollgate.usage_carry c
            WHERE c.account_uuid = charged.account AND c.currency = charged.cur FOR UPDATE;
            carry := coalesce(carry, 0) + charged.total;
            whole := floor(carry)::bigint;
            INSERT INTO tollgate.usage_carry AS c (account_uuid, currency, fraction)
            VALUES (charged.account, charged.cur, carry - whole)
            ON CONFLICT (account_uuid, currency) DO UPDATE SET fraction = excluded.fraction;
            IF whole > 0 THEN
                postings := postings || jsonb_build_object(charged.wallet::text, tollgate.post(
                    charged.account, 'charge',
                    ARRAY[charged.wallet, tollgate.revenue_account(charged.cur)], ARRAY[-whole, whole]));
            END IF;
        ELSE
            -- What each agent spent: exactly what its events cost (spend_daily.spent is numeric).
            PERFORM tollgate.add_spend(charged.account, charged.agent, charged.cur, tollgate.utc_day(),
                                       charged.total);
        END IF;
    END LOOP;
    RETURN postings;
END
$$;

-- Record up to 1000 usage events (api.usage_event_v1, migrations/0027). Each
-- event is answered on its own: accepted, duplicate (its id was recorded before for the
-- account, or accepted earlier in this batch) or rejected with a reason (unknown_account,
-- invalid_id, invalid_agent, invalid_metric, invalid_quantity, invalid_occurred_at,
-- cost_out_of_range, insufficient_credits, spend_cap_exceeded, repeated_in_batch).
-- A priced event costs quantity x unit price, exactly (numeric; above 999999999999 minor units,
-- the largest single amount, it is cost_out_of_range); events are taken in batch order while
-- credits (with any overdraft) and caps last, and what they cost counts toward the caps exactly,
-- fractions of a minor unit included. Each account's charges go in one posting of whole minor units, the
-- fraction left is carried to its next batch (tollgate.usage_carry).
-- Batches for one account are serialised (an advisory lock per account, then the wallets in
-- id order), so a concurrent retry sees this batch's events and never charges them twice.
CREATE OR REPLACE FUNCTION api.record_usage_v2(p_api_key text, p_events api.usage_event_v1[])
RETURNS TABLE (ord integer, id text, outcome text, reason text, cost text, currency text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k          tollgate.api_keys := tollgate.authenticate(p_api_key);
    n          integer := coalesce(cardinality(p_events), 0);
    e_id       text[];      -- the events' fields, one array each, by position
    e_metric   text[];
    e_quantity numeric[];
    e_occurred timestamptz[];
    e_account  uuid[];
    e_agent    text[];
    e_cost     numeric[];
    e_currency text[];
    e_wallet   uuid[];
    e_reason   text[];
    e_first    integer[];   -- the first position of the same (account, id) in the batch
    avail      jsonb;       -- wallet -> credits still available (absent: no limit)
    postings   jsonb;       -- wallet -> the posting that charged it
    i          integer;
BEGIN
    IF n > 1000 THEN
        RAISE EXCEPTION 'a batch holds at most 1000 events, not %', n
            USING ERRCODE = 'check_violation', CONSTRAINT = 'usage_batch_size';
    END IF;
    IF n = 0 THEN
        RAISE EXCEPTION 'a batch needs at least one event'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'usage_batch_size';
    END IF;

    -- 1. Resolve and check every event; price the valid ones.
    SELECT * INTO e_id, e_metric, e_quantity, e_occurred, e_account, e_agent, e_cost, e_currency, e_reason, e_first
    FROM tollgate.check_usage_events(k, p_events);

    -- 2. One batch at a time per account, then the credit wallets in id order.
    SELECT * INTO avail, e_wallet FROM tollgate.lock_usage_wallets(e_account, e_currency);

    -- Ids recorded before, live or archived (the account's batches, and retention's moves of
    -- its events, are serialised now, so this is final).
    SELECT array_agg(CASE WHEN x.reason IS NULL AND (
                              EXISTS (SELECT FROM tollgate.usage_events u WHERE u.account_uuid = x.a AND u.id = x.id)
                              OR EXISTS (SELECT FROM tollgate.usage_events_archive u
                                         WHERE u.account_uuid = x.a AND u.id = x.id))
                          THEN 'duplicate' ELSE x.reason END ORDER BY x.ord)
    INTO e_reason
    FROM unnest(e_account, e_id, e_reason) WITH ORDINALITY AS x (a, id, reason, ord);

    -- 3. Priced events, in order, while credits and caps last.
    e_reason := tollgate.usage_within_limits(e_account, e_agent, e_currency, e_wallet, e_cost, e_reason, avail);

    -- A repeat of an id answers like its first occurrence did: duplicate if that was accepted.
    FOR i IN 1 .. n LOOP
        IF e_reason[i] = 'repeat' THEN
            e_reason[i] := CASE WHEN e_reason[e_first[i]] IS NULL OR e_reason[e_first[i]] = 'duplicate'
                                THEN 'duplicate' ELSE 'repeated_in_batch' END;
        END IF;
    END LOOP;

    -- 4. Per wallet: charge the whole minor units of carry + costs, carry the rest.
    postings := tollgate.charge_usage(e_wallet, e_account, e_currency, e_agent, e_cost, e_reason);

    INSERT INTO tollgate.usage_events (account_uuid, id, agent_id, metric, quantity, occurred_at, cost, currency, posting_id)
    SELECT x.a, x.id, x.agent, x.metric, x.quantity, x.occurred_at, x.cost, x.c,
           (postings ->> x.wallet::text)::uuid
    FROM unnest(e_account, e_id, e_agent, e_metric, e_quantity, e_occurred, e_cost, e_currency, e_wallet, e_reason)
         AS x (a, id, agent, metric, quantity, occurred_at, cost, c, wallet, reason)
    WHERE x.reason IS NULL;

    RETURN QUERY
    SELECT x.ord::integer, x.id,
           CASE WHEN x.reason IS NULL THEN 'accepted' WHEN x.reason = 'duplicate' THEN 'duplicate' ELSE 'rejected' END,
           CASE WHEN x.reason = 'duplicate' THEN NULL ELSE x.reason END,
           CASE WHEN x.reason IS NULL AND x.c IS NOT NULL THEN tollgate.format_exact(x.cost, x.c) END,
           CASE WHEN x.reason IS NULL THEN x.c END
    FROM unnest(e_id, e_reason, e_cost, e_currency) WITH ORDINALITY AS x (id, reason, cost, c, ord)
    ORDER BY x.ord;
END
$$;

-- The same, given as parallel arrays (one element per event): the form before 0027, kept for
-- deployed callers. Drop it (and its grant) once no deployed service calls it, that is one
-- release after every service runs queries.sql's record_usage on api.record_usage_v2.
CREATE OR REPLACE FUNCTION api.record_usage_v1(
    p_api_key text, p_ids text[], p_accounts text[], p_agents text[], p_metrics text[],
    p_quantities numeric[], p_occurred_at timestamptz[]
) RETURNS TABLE (ord integer, id text, outcome text, reason text, cost text, currency text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := coalesce(cardinality(p_ids), 0);
BEGIN
    IF n <= 1000
       AND (n = 0 OR cardinality(p_accounts) <> n OR cardinality(p_agents) <> n OR cardinality(p_metrics) <> n
            OR cardinality(p_quantities) <> n OR cardinality(p_occurred_at) <> n) THEN
        PERFORM tollgate.authenticate(p_api_key);   -- a bad key is answered first, as before
        RAISE EXCEPTION 'a batch needs at least one event, each with id, account, agent, metric, quantity, occurred_at'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'usage_batch_size';
    END IF;
    RETURN QUERY SELECT * FROM api.record_usage_v2(p_api_key, ARRAY(
        SELECT ROW(e.id, e.account, e.agent, e.metric, e.quantity, e.occurred_at)::api.usage_event_v1
        FROM unnest(p_ids, p_accounts, p_agents, p_metrics, p_quantities, p_occurred_at)
             WITH ORDINALITY AS e (id, account, agent, metric, quantity, occurred_at, ord)
        ORDER BY e.ord));
END
$$;

-- Usage of an account per period: events, total and largest quantity, and what it cost.
CREATE OR REPLACE FUNCTION api.usage_v1(
    p_api_key text, p_account text, p_metric text, p_period text, p_from timestamptz, p_to timestamptz
) RETURNS TABLE (period_start timestamptz, metric text, events bigint, quantity_sum numeric,
                 quantity_max numeric, cost text, currency text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k    tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct tollgate.accounts := tollgate.account_for(k, p_account);
BEGIN
    IF p_period NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'period is day or month' USING ERRCODE = 'check_violation', CONSTRAINT = 'usage_period';
    END IF;
    RETURN QUERY
    SELECT date_trunc(p_period, u.occurred_at, 'UTC'), u.metric, count(*), sum(u.quantity), max(u.quantity),
           CASE WHEN u.currency IS NOT NULL THEN tollgate.format_exact(sum(u.cost), u.currency) END,
           u.currency
    FROM (SELECT l.metric, l.quantity, l.occurred_at, l.cost, l.currency, l.account_uuid FROM tollgate.usage_events l
          UNION ALL
          SELECT a.metric, a.quantity, a.occurred_at, a.cost, a.currency, a.account_uuid
          FROM tollgate.usage_events_archive a) u
    WHERE u.account_uuid = acct.id AND (p_metric IS NULL OR u.metric = p_metric)
      AND u.occurred_at >= coalesce(p_from, '-infinity') AND u.occurred_at < coalesce(p_to, 'infinity')
    GROUP BY 1, 2, u.currency
    ORDER BY 1, 2, u.currency;
END
$$;

-- For analysts: usage per account, agent, metric and UTC day, archived events included.
CREATE OR REPLACE VIEW reporting.usage_daily AS
SELECT a.external_id                             AS account_id,
       nullif(u.agent_id, '')                    AS agent_id,
       u.metric,
       (u.occurred_at AT TIME ZONE 'UTC')::date  AS day,
       count(*)                                  AS events,
       sum(u.quantity)                           AS quantity_sum,
       max(u.quantity)                           AS quantity_max,
       sum(u.cost)                               AS cost_minor,
       u.currency
FROM (SELECT l.account_uuid, l.agent_id, l.metric, l.occurred_at, l.quantity, l.cost, l.currency
      FROM tollgate.usage_events l
      UNION ALL
      SELECT r.account_uuid, r.agent_id, r.metric, r.occurred_at, r.quantity, r.cost, r.currency
      FROM tollgate.usage_events_archive r) u
JOIN tollgate.accounts a ON a.id = u.account_uuid
GROUP BY 1, 2, 3, 4, u.currency;

COMMENT ON VIEW reporting.usage_daily IS
    'Usage per account, agent (NULL: none named), metric, UTC day of occurrence and currency; cost in (possibly fractional) minor units.';

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.usage_events ---

CREATE OR REPLACE TRIGGER usage_events_append_only
    BEFORE UPDATE OR DELETE ON tollgate.usage_events
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER usage_events_no_truncate
    BEFORE TRUNCATE ON tollgate.usage_events
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.usage_events_archive ---

CREATE OR REPLACE TRIGGER usage_events_archive_append_only
    BEFORE UPDATE OR DELETE ON tollgate.usage_events_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER usage_events_archive_moved
    AFTER INSERT ON tollgate.usage_events_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.archive_moves();

CREATE OR REPLACE TRIGGER usage_events_archive_no_truncate
    BEFORE TRUNCATE ON tollgate.usage_events_archive
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('archived', 'archived rows are never changed or removed');

CREATE OR REPLACE TRIGGER usage_events_archive_written_by_retention
    BEFORE INSERT ON tollgate.usage_events_archive
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('archived', 'rows are archived by retention only');
