-- Agent gating: may this account run this action now? Entitlements, holds on credits, spend
-- caps. Every decision is made here, under the account's wallet lock, so concurrent
-- authorizations can never spend the same credit twice nor pass a cap together.
--
-- Order of sources in api.authorize_v1:
--   1. an active subscription (status active or trialing, within its period): allowed;
--   2. an unused succeeded one-off payment for the action: one use consumed;
--   3. credits: a hold of the cost on the account's balance in that currency, within caps.

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- api: authorize, holds
-- ---------------------------------------------------------------------------------------------

-- Minor units as api.authorize_v1 writes amounts, for a currency of p_exponent decimals: the
-- same text as tollgate.format_minor, without its lookup of the currency. An expression
-- PostgreSQL inlines (no SET clause): it touches no table.
CREATE OR REPLACE FUNCTION tollgate.minor_text(p_amount bigint, p_exponent smallint) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT round(p_amount::numeric / 10::numeric ^ p_exponent, p_exponent)::text
$$;

-- What a run of p_action (the action's row: p_act, all NULL when it has none) costs in
-- p_currency, as api.authorize_v1 charges it, in minor units. p_cost (a decimal) is the cost
-- when given: any for an admin key (p_key), for any other key at least the action's price, in
-- the action's currency. Without p_cost, the action's price when the currency is the action's;
-- else NULL: no price.
CREATE OR REPLACE FUNCTION tollgate.authorization_cost(
    p_key tollgate.api_keys, p_act tollgate.actions, p_action text, p_cost numeric, p_currency text
) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cost bigint;
BEGIN
    IF p_cost IS NOT NULL THEN
        IF p_currency IS NULL THEN
            RAISE EXCEPTION 'name the currency of the cost: action % has no price', p_action
                USING ERRCODE = 'check_violation', CONSTRAINT = 'currency_known';
        END IF;
        cost := tollgate.to_minor(p_cost, p_currency);
        IF NOT p_key.is_admin AND p_act.name IS NOT NULL THEN
            IF p_currency <> p_act.currency THEN
                RAISE EXCEPTION 'action % is priced in %, not %', p_action, p_act.currency, p_currency
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'cost_currency';
            END IF;
            cost := greatest(cost, p_act.price);
        END IF;
    ELSIF p_act.name IS NOT NULL AND p_currency = p_act.currency THEN
        cost := p_act.price;
    END IF;
    RETURN cost;
END
$$;

-- Use one run of an unused one-off payment of the account for p_action, not held by a risk
-- review nor disputed, the oldest first. Concurrent callers take different payments (SKIP
-- LOCKED) while there are enough; when every usable one is locked by another caller (one payment
-- of many runs, used in parallel), this one waits for the oldest and uses it if a run is still
-- left once the other committed: never the same run twice, and no refusal while runs are left.
-- Returns the runs left for the action afterwards, or NULL when there was none to use. One
-- statement: the sum reads the entitlements as they were before it, so the used one counts with
-- its new uses_left. The review and dispute conditions are those of
-- tollgate.payment_under_review and tollgate.payment_disputed, written out so the planner sees
-- them (the gate triggers check the same on the row that is updated).
CREATE OR REPLACE FUNCTION tollgate.use_paid_run(p_account_uuid uuid, p_action text) RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH usable AS (
        SELECT x.payment_intent_id, x.created_at FROM tollgate.payment_entitlements x
        WHERE x.account_uuid = p_account_uuid AND x.action = p_action AND x.usable
          AND NOT EXISTS (SELECT FROM tollgate.reviews r
                          WHERE r.payment_intent_id = x.payment_intent_id AND r.status IN ('open', 'rejected'))
          AND NOT EXISTS (SELECT FROM tollgate.disputes d
                          WHERE d.payment_intent_id = x.payment_intent_id AND d.status = 'open')
    ), used AS (
        UPDATE tollgate.payment_entitlements e SET uses_left = e.uses_left - 1, used_at = now()
        WHERE e.usable AND e.payment_intent_id = coalesce(
            (SELECT x.payment_intent_id FROM tollgate.payment_entitlements x
             WHERE x.payment_intent_id IN (SELECT u.payment_intent_id FROM usable u)
             ORDER BY x.created_at LIMIT 1 FOR UPDATE SKIP LOCKED),
            (SELECT u.payment_intent_id FROM usable u ORDER BY u.created_at LIMIT 1))
        RETURNING e.payment_intent_id, e.uses_left
    )
    -- x.usable: the partial index payment_entitlements_usable_idx
    SELECT u.uses_left + coalesce((SELECT sum(x.uses_left) FROM tollgate.payment_entitlements x
                                   WHERE x.account_uuid = p_account_uuid AND x.action = p_action AND x.usable
                                     AND x.payment_intent_id <> u.payment_intent_id), 0)::integer
    FROM used u
$$;

-- Hold p_cost of the account's credits in p_currency (of p_exponent decimals) for the agent
-- p_agent and p_hold_seconds, under the wallet's lock, when they cover it and no spend cap of
-- the account or of the agent would be passed: returns the hold and remaining, the credits
-- left. Otherwise no hold, and code (payment_required, spend_cap_exceeded) and message say why;
-- remaining: what there is. p_price: p_cost as text, as the answer shows it.
CREATE OR REPLACE FUNCTION tollgate.hold_credits(
    p_account_uuid uuid, p_agent text, p_action text, p_cost bigint, p_price text, p_currency text,
    p_exponent smallint, p_hold_seconds integer,
    OUT hold tollgate.holds, OUT code text, OUT message text, OUT remaining text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wallet uuid;
    avail  bigint;
    cap    record;
BEGIN
    SELECT la.id INTO wallet FROM tollgate.ledger_accounts la
    WHERE la.account_uuid = p_account_uuid AND la.name = 'main' AND la.currency = p_currency
    FOR UPDATE;
    IF wallet IS NOT NULL THEN
        PERFORM tollgate.expire_holds(wallet);
        avail := tollgate.available_credits(wallet);
    ELSE
        avail := 0;
    END IF;
    IF wallet IS NULL OR avail < p_cost THEN
        code := 'payment_required';
        remaining := tollgate.minor_text(greatest(coalesce(avail, 0), 0), p_exponent);
        message := format('%s needs %s %s: no subscription, no payment for it, and %s %s of credits',
                          p_action, p_price, p_currency, remaining, p_currency);
        RETURN;
    END IF;
    SELECT * INTO cap FROM tollgate.cap_exceeded(p_account_uuid, p_agent, p_currency, p_cost);
    IF FOUND THEN
        code := 'spend_cap_exceeded';
        message := format('the %s cap of %s %s%s is reached: %s spent, %s more would pass it',
                          cap.period, tollgate.minor_text(cap.hard_limit, p_exponent), p_currency,
                          CASE WHEN cap.agent_id <> '' THEN ' for agent ' || cap.agent_id ELSE '' END,
                          tollgate.format_exact(cap.spent, p_currency), p_price);
        remaining := CASE WHEN avail IS NOT NULL THEN tollgate.minor_text(avail, p_exponent) END;
        RETURN;
    END IF;
    INSERT INTO tollgate.holds (account_uuid, agent_id, action, ledger_account_id, currency, amount, expires_at)
    VALUES (p_account_uuid, p_agent, p_action, wallet, p_currency, p_cost,
            now() + make_interval(secs => coalesce(p_hold_seconds, 900)))
    RETURNING * INTO hold;
    remaining := CASE WHEN avail IS NOT NULL THEN tollgate.minor_text(avail - p_cost, p_exponent) END;
END
$$;

-- May the account run p_action now? Answers allowed (via subscription, payment or credits)
-- or not, with a reason code: payment_required (no entitlement, not enough credits) or
-- spend_cap_exceeded. p_cost (a decimal) is what this run costs in credits when that varies:
-- an admin key may set any cost, any other key only more than the action's price (an agent
-- cannot pay itself a discount). p_currency defaults to the action's. With credits a hold of the cost is placed for
-- p_hold_seconds; capture or release it when the action is done. Every answer names the
-- account, the action and the price in the currency; uses_left comes with a paid run, the hold
-- with credits, code and message with a refusal.
CREATE OR REPLACE FUNCTION api.authorize_v1(
    p_api_key text, p_account text, p_action text, p_cost numeric, p_currency text,
    p_agent text, p_hold_seconds integer
) RETURNS TABLE (allowed boolean, via text, code text, message text, account_id text, action text,
                 hold_id uuid, uses_left integer, remaining text, currency text,
                 price text, price_minor bigint, expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k       tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct    tollgate.accounts := tollgate.account_for(k, p_account);
    named   tollgate.purpose := p_action;  -- its domain refuses a malformed action name
    act     tollgate.actions;
    agent   text := coalesce(p_agent, '');
    places  smallint;
    credits record;
BEGIN
    IF agent !~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})?$' THEN
        RAISE EXCEPTION 'agent ids are 1-128 letters, digits and _ . : @ -'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holds_agent_id_format';
    END IF;
    IF p_hold_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'a hold lasts 1 to 86400 seconds, not %', p_hold_seconds
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holds_expiry_range';
    END IF;
    SELECT * INTO act FROM tollgate.actions a WHERE a.name = named;
    account_id := acct.external_id;
    action := p_action;
    currency := coalesce(p_currency, act.currency);
    price_minor := tollgate.authorization_cost(k, act, p_action, p_cost, currency);
    SELECT c.exponent INTO places FROM tollgate.currencies c WHERE c.code = currency;
    price := tollgate.minor_text(price_minor, places);

    -- 1. A current subscription covers every action (one without a period end does not).
    IF EXISTS (SELECT FROM tollgate.subscriptions s
               WHERE s.account_uuid = acct.id AND s.status IN ('active', 'trialing')
                 AND s.current_period_end > now()) THEN
        allowed := true;
        via := 'subscription';
        RETURN NEXT;
        RETURN;
    END IF;

    -- 2. An unused one-off payment for this action, not held by a risk review: use one run.
    uses_left := tollgate.use_paid_run(acct.id, p_action);
    IF uses_left IS NOT NULL THEN
        allowed := true;
        via := 'payment';
        RETURN NEXT;
        RETURN;
    END IF;

    IF price_minor IS NULL THEN
        RAISE EXCEPTION '%', CASE WHEN act.name IS NULL THEN format('action %s has no price: send its cost and currency', p_action)
                                  ELSE format('action %s is priced in %s, not %s', p_action, act.currency, currency) END
            USING ERRCODE = 'TG003', CONSTRAINT = 'action_known';
    END IF;

    -- 3. Credits: hold the cost, under the wallet's lock, within the spend caps.
    credits := tollgate.hold_credits(acct.id, agent, p_action, price_minor, price, currency, places, p_hold_seconds);
    allowed := credits.code IS NULL;
    via := CASE WHEN credits.code IS NULL THEN 'credits' END;
    code := credits.code;
    message := credits.message;
    remaining := credits.remaining;
    hold_id := (credits.hold).id;
    expires_at := (credits.hold).expires_at;
    RETURN NEXT;
END
$$;
