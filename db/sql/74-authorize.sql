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

-- One answer of api.authorize_v1, its row shape declared here once: what every answer names (the
-- account, the action, the price in the currency) and what only some carry. Without a code it
-- is allowed (via subscription, payment or credits); with one (payment_required,
-- spend_cap_exceeded) it is not. p_hold: the hold placed on credits, if any.
CREATE OR REPLACE FUNCTION tollgate.authorization_row(
    p_account text, p_action text, p_cost bigint, p_currency text,
    p_via text DEFAULT NULL, p_code text DEFAULT NULL, p_message text DEFAULT NULL,
    p_uses_left integer DEFAULT NULL, p_remaining text DEFAULT NULL, p_hold tollgate.holds DEFAULT NULL
) RETURNS TABLE (allowed boolean, via text, code text, message text, account_id text, action text,
                 hold_id uuid, uses_left integer, remaining text, currency text,
                 price text, price_minor bigint, expires_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_code IS NULL, p_via, p_code, p_message, p_account, p_action, (p_hold).id, p_uses_left, p_remaining,
           p_currency, tollgate.format_minor(p_cost, p_currency), p_cost, (p_hold).expires_at
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
-- review nor disputed, the oldest first (SKIP LOCKED: concurrent callers take different
-- payments, never the same one twice). Returns the runs left for the action afterwards, or
-- NULL when there was none to use.
CREATE OR REPLACE FUNCTION tollgate.use_paid_run(p_account_uuid uuid, p_action text) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    used tollgate.payment_entitlements;
BEGIN
    UPDATE tollgate.payment_entitlements e SET uses_left = e.uses_left - 1, used_at = now()
    WHERE e.payment_intent_id = (
        SELECT x.payment_intent_id FROM tollgate.payment_entitlements x
        WHERE x.account_uuid = p_account_uuid AND x.action = p_action AND x.uses_left > 0
          AND NOT tollgate.payment_under_review(x.payment_intent_id)
          AND NOT tollgate.payment_disputed(x.payment_intent_id)
        ORDER BY x.created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING * INTO used;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- uses_left > 0: the partial index payment_entitlements_usable_idx
    RETURN (SELECT coalesce(sum(x.uses_left), 0)::integer FROM tollgate.payment_entitlements x
            WHERE x.account_uuid = p_account_uuid AND x.action = p_action AND x.uses_left > 0);
END
$$;

-- Hold p_cost of the account's credits in p_currency for the agent p_agent and p_hold_seconds,
-- under the wallet's lock, when they cover it and no spend cap of the account or of the agent
-- would be passed: returns the hold and remaining, the credits left. Otherwise no hold, and
-- code (payment_required, spend_cap_exceeded) and message say why; remaining: what there is.
CREATE OR REPLACE FUNCTION tollgate.hold_credits(
    p_account_uuid uuid, p_agent text, p_action text, p_cost bigint, p_currency text, p_hold_seconds integer,
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
        message := format('%s needs %s %s: no subscription, no payment for it, and %s %s of credits',
                          p_action, tollgate.format_minor(p_cost, p_currency), p_currency,
                          tollgate.format_minor(greatest(coalesce(avail, 0), 0), p_currency), p_currency);
        remaining := tollgate.format_minor(greatest(coalesce(avail, 0), 0), p_currency);
        RETURN;
    END IF;
    SELECT * INTO cap FROM tollgate.cap_exceeded(p_account_uuid, p_agent, p_currency, p_cost);
    IF FOUND THEN
        code := 'spend_cap_exceeded';
        message := format('the %s cap of %s %s%s is reached: %s spent, %s more would pass it',
                          cap.period, tollgate.format_minor(cap.hard_limit, p_currency), p_currency,
                          CASE WHEN cap.agent_id <> '' THEN ' for agent ' || cap.agent_id ELSE '' END,
                          tollgate.format_exact(cap.spent, p_currency), tollgate.format_minor(p_cost, p_currency));
        remaining := CASE WHEN avail IS NOT NULL THEN tollgate.format_minor(avail, p_currency) END;
        RETURN;
    END IF;
    INSERT INTO tollgate.holds (account_uuid, agent_id, action, ledger_account_id, currency, amount, expires_at)
    VALUES (p_account_uuid, p_agent, p_action, wallet, p_currency, p_cost,
            now() + make_interval(secs => coalesce(p_hold_seconds, 900)))
    RETURNING * INTO hold;
    remaining := CASE WHEN avail IS NOT NULL THEN tollgate.format_minor(avail - p_cost, p_currency) END;
END
$$;

-- May the account run p_action now? Answers allowed (via subscription, payment or credits)
-- or not, with a reason code: payment_required (no entitlement, not enough credits) or
-- spend_cap_exceeded. p_cost (a decimal) is what this run costs in credits when that varies:
-- an admin key may set any cost, any other key only more than the action's price (an agent
-- cannot pay itself a discount). p_currency defaults to the action's. With credits a hold of the cost is placed for
-- p_hold_seconds; capture or release it when the action is done.
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
    k         tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct      tollgate.accounts := tollgate.account_for(k, p_account);
    act       tollgate.actions;
    agent     text := coalesce(p_agent, '');
    cur       text;
    cost      bigint;
    runs_left integer;
    credits   record;
BEGIN
    PERFORM p_action::tollgate.purpose;
    IF agent !~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})?$' THEN
        RAISE EXCEPTION 'agent ids are 1-128 letters, digits and _ . : @ -'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holds_agent_id_format';
    END IF;
    IF p_hold_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'a hold lasts 1 to 86400 seconds, not %', p_hold_seconds
            USING ERRCODE = 'check_violation', CONSTRAINT = 'holds_expiry_range';
    END IF;
    SELECT * INTO act FROM tollgate.actions a WHERE a.name = p_action;
    cur := coalesce(p_currency, act.currency);
    cost := tollgate.authorization_cost(k, act, p_action, p_cost, cur);

    -- 1. A current subscription covers every action (one without a period end does not).
    IF EXISTS (SELECT FROM tollgate.subscriptions s
               WHERE s.account_uuid = acct.id AND s.status IN ('active', 'trialing')
                 AND s.current_period_end > now()) THEN
        RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
                                                              p_via => 'subscription');
        RETURN;
    END IF;

    -- 2. An unused one-off payment for this action, not held by a risk review: use one run.
    runs_left := tollgate.use_paid_run(acct.id, p_action);
    IF runs_left IS NOT NULL THEN
        RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
                                                              p_via => 'payment', p_uses_left => runs_left);
        RETURN;
    END IF;

    IF cost IS NULL THEN
        RAISE EXCEPTION '%', CASE WHEN act.name IS NULL THEN format('action %s has no price: send its cost and currency', p_action)
                                  ELSE format('action %s is priced in %s, not %s', p_action, act.currency, cur) END
            USING ERRCODE = 'TG003', CONSTRAINT = 'action_known';
    END IF;

    -- 3. Credits: hold the cost, under the wallet's lock, within the spend caps.
    credits := tollgate.hold_credits(acct.id, agent, p_action, cost, cur, p_hold_seconds);
    RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
        p_via => CASE WHEN credits.code IS NULL THEN 'credits' END, p_code => credits.code,
        p_message => credits.message, p_remaining => credits.remaining, p_hold => credits.hold);
END
$$;
