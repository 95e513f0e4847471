-- Agent gating: may this account run this action now? Entitlements, holds on credits, spend
-- caps. Every decision is made here, under the account's wallet lock, so concurrent
-- authorizations can never spend the same credit twice nor pass a cap together.
--
-- Order of sources in api.authorize_v1:
--   1. an active subscription (status active or trialing, within its period): allowed;
--   2. an unused succeeded one-off payment for the action: one use consumed;
--   3. credits: a hold of the cost on the account's balance in that currency, within caps.

SET LOCAL ROLE tollgate_owner;

CREATE OR REPLACE TRIGGER hold_transitions_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.hold_transitions
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');
CREATE OR REPLACE TRIGGER hold_transitions_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.hold_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

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
-- Entitlements from payments and subscriptions
-- ---------------------------------------------------------------------------------------------

-- A payment for an action that succeeds entitles one run of it, if it paid at least the
-- action's price in its currency (an unpriced action takes any payment); a full refund takes it
-- back (a partial one or a lost dispute: tollgate.take_back, 65-refunds.sql).
CREATE OR REPLACE FUNCTION tollgate.payment_entitlement_follow() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status = OLD.status OR NEW.purpose IS NULL OR NEW.purpose = 'credits' THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'succeeded' THEN
        INSERT INTO tollgate.payment_entitlements (payment_intent_id, account_id, action, uses_left)
        SELECT NEW.id, NEW.account_id, NEW.purpose, 1
        WHERE NOT EXISTS (SELECT FROM tollgate.actions a
                          WHERE a.name = NEW.purpose AND (a.currency <> NEW.currency OR a.price > NEW.amount))
        ON CONFLICT ON CONSTRAINT payment_entitlements_pkey DO NOTHING;
    ELSIF NEW.status = 'refunded' THEN
        UPDATE tollgate.payment_entitlements SET uses_left = 0 WHERE payment_intent_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER payment_intents_80_entitlements
    AFTER UPDATE OF status ON tollgate.payment_intents
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_entitlement_follow();

-- Entitlements only get used up.
CREATE OR REPLACE FUNCTION tollgate.payment_entitlements_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.payment_intent_id, NEW.account_id, NEW.action, NEW.created_at)
       IS DISTINCT FROM (OLD.payment_intent_id, OLD.account_id, OLD.action, OLD.created_at)
       OR NEW.uses_left > OLD.uses_left THEN
        RAISE EXCEPTION 'entitlement from payment %: only uses_left may change, and only down', OLD.payment_intent_id
            USING ERRCODE = 'TG011', CONSTRAINT = 'payment_entitlements_only_used_up',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER payment_entitlements_10_guard
    BEFORE UPDATE ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_entitlements_guard();
CREATE OR REPLACE TRIGGER payment_entitlements_no_delete
    BEFORE DELETE ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

-- How far along its lifecycle a subscription status is: orders events of the same second.
CREATE OR REPLACE FUNCTION tollgate.subscription_progress(p_status tollgate.subscription_status) RETURNS smallint
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_status WHEN 'incomplete' THEN 0 WHEN 'trialing' THEN 1 WHEN 'active' THEN 2
                         WHEN 'past_due' THEN 3 WHEN 'unpaid' THEN 4 WHEN 'paused' THEN 4
                         ELSE 5 END::smallint
$$;

-- Apply a stored customer.subscription.* event: the subscription row is created from the
-- event's object (the account named in its metadata as tollgate_account) or updated by it,
-- unless the event is older than the last one applied, or of the same second and earlier in
-- the lifecycle (stale). Canceled and incomplete_expired are final (rejected).
CREATE OR REPLACE FUNCTION tollgate.apply_subscription_event(p_event_id text)
RETURNS tollgate.event_state
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev       tollgate.payment_events;
    obj      jsonb;
    acct     uuid;
    sub      tollgate.subscriptions;
    v_status tollgate.subscription_status;
    v_plan   text;
    v_ends   timestamptz;
    outcome  tollgate.event_state := 'applied';
    why      text;
BEGIN
    SELECT * INTO STRICT ev FROM tollgate.payment_events WHERE id = p_event_id FOR UPDATE;
    obj := ev.payload -> 'data' -> 'object';
    SELECT s.enumlabel::tollgate.subscription_status INTO v_status
    FROM pg_enum s WHERE s.enumtypid = 'tollgate.subscription_status'::regtype
      AND s.enumlabel = CASE WHEN ev.type = 'customer.subscription.deleted' THEN 'canceled' ELSE obj ->> 'status' END;
    v_plan := coalesce(obj #>> '{plan,id}', obj #>> '{items,data,0,price,id}', obj #>> '{items,data,0,plan,id}');
    -- Newer Stripe API versions put the period on each item: the latest item's end then. None
    -- at all: the subscription entitles nothing (authorize needs a period end in the future).
    v_ends := to_timestamp(coalesce(
        CASE WHEN jsonb_typeof(obj -> 'current_period_end') = 'number'
             THEN (obj ->> 'current_period_end')::double precision END,
        (SELECT max((i ->> 'current_period_end')::double precision)
         FROM jsonb_array_elements(CASE WHEN jsonb_typeof(obj #> '{items,data}') = 'array'
                                        THEN obj #> '{items,data}' ELSE '[]'::jsonb END) AS i
         WHERE jsonb_typeof(i -> 'current_period_end') = 'number')));

    SELECT * INTO sub FROM tollgate.subscriptions WHERE stripe_id = ev.stripe_object_id FOR UPDATE;
    IF FOUND THEN
        acct := sub.account_id;
    ELSE
        SELECT a.id INTO acct FROM tollgate.accounts a
        WHERE a.external_id = obj #>> '{metadata,tollgate_account}'
          AND a.id <> '00000000-0000-0000-0000-000000000000';
    END IF;

    IF acct IS NULL OR v_status IS NULL THEN
        UPDATE tollgate.payment_events
        SET state = 'ignored', processed_at = now(),
            note = CASE WHEN acct IS NULL THEN 'no known account in metadata.tollgate_account'
                        ELSE format('unknown subscription status %L', obj ->> 'status') END
        WHERE id = ev.id;
        RETURN 'ignored';
    END IF;

    PERFORM tollgate.set_actor('stripe:' || ev.id);
    IF sub.id IS NULL THEN
        INSERT INTO tollgate.subscriptions (account_id, stripe_id, status, plan, current_period_end,
                                            last_event_id, last_event_at)
        VALUES (acct, ev.stripe_object_id, v_status, v_plan, v_ends, ev.id, ev.stripe_created)
        RETURNING * INTO sub;
    ELSIF ev.stripe_created < sub.last_event_at THEN
        outcome := 'stale';
        why := format('older than %s (%s), already applied', sub.last_event_id, sub.last_event_at);
    ELSIF sub.status IN ('canceled', 'incomplete_expired') AND v_status <> sub.status THEN
        outcome := 'rejected';
        why := format('subscription is %s: final', sub.status);
    ELSIF ev.stripe_created = sub.last_event_at
          AND tollgate.subscription_progress(v_status) < tollgate.subscription_progress(sub.status) THEN
        outcome := 'stale';
        why := format('same second as %s and earlier in the lifecycle than %s', sub.last_event_id, sub.status);
    ELSE
        UPDATE tollgate.subscriptions
        SET status = v_status, plan = coalesce(v_plan, subscriptions.plan),
            current_period_end = coalesce(v_ends, subscriptions.current_period_end),
            last_event_id = ev.id, last_event_at = ev.stripe_created
        WHERE id = sub.id;
    END IF;
    UPDATE tollgate.payment_events
    SET state = outcome, note = why, processed_at = now(), account_id = acct, subscription_id = sub.id
    WHERE id = ev.id;
    RETURN outcome;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.subscriptions_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.account_id, NEW.stripe_id, NEW.created_at)
           IS DISTINCT FROM (OLD.id, OLD.account_id, OLD.stripe_id, OLD.created_at) THEN
            RAISE EXCEPTION 'subscription %: its identity never changes', OLD.stripe_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'subscriptions_identity_immutable';
        END IF;
        IF NEW.last_event_at < OLD.last_event_at THEN
            RAISE EXCEPTION 'subscription %: the last applied event cannot move back', OLD.stripe_id
                USING ERRCODE = 'TG011', CONSTRAINT = 'subscriptions_last_event_forward';
        END IF;
        NEW.updated_at := now();
        IF NEW.status IS DISTINCT FROM OLD.status THEN
            PERFORM tollgate.audit(NEW.account_id, 'subscription', NEW.stripe_id, 'status_changed',
                                   OLD.status::text, NEW.status::text);
        END IF;
    ELSE
        NEW.created_at := now();
        NEW.updated_at := now();
        PERFORM tollgate.audit(NEW.account_id, 'subscription', NEW.stripe_id, 'created', NULL,
                               NEW.status::text);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER subscriptions_10_changed
    BEFORE INSERT OR UPDATE ON tollgate.subscriptions
    FOR EACH ROW EXECUTE FUNCTION tollgate.subscriptions_changed();

-- ---------------------------------------------------------------------------------------------
-- Spend: what was spent per day, caps, the soft-threshold notice
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tollgate.spend_caps_audit() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.audit(NEW.account_id, 'spend_cap', NEW.id::text,
                           CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'changed' END,
                           CASE TG_OP WHEN 'UPDATE' THEN tollgate.format_minor(OLD.hard_limit, OLD.currency) END,
                           tollgate.format_minor(NEW.hard_limit, NEW.currency));
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER spend_caps_50_audit
    AFTER INSERT OR UPDATE ON tollgate.spend_caps
    FOR EACH ROW EXECUTE FUNCTION tollgate.spend_caps_audit();

-- What the account (p_agent NULL: all its agents) spent in p_currency since p_since.
CREATE OR REPLACE FUNCTION tollgate.spent_since(p_account_id uuid, p_agent text, p_currency text, p_since date)
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(d.spent), 0) FROM tollgate.spend_daily d
    WHERE d.account_id = p_account_id AND d.currency = p_currency AND d.day >= p_since
      AND (p_agent IS NULL OR d.agent_id = p_agent)
$$;

-- The first cap that spending p_amount more would break, or no row. Caps of the account
-- (agent_id '') count all its agents; an agent's cap counts that agent.
CREATE OR REPLACE FUNCTION tollgate.cap_exceeded(p_account_id uuid, p_agent text, p_currency text, p_amount numeric)
RETURNS TABLE (cap_id uuid, agent_id text, period tollgate.spend_period, hard_limit bigint, spent numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id, c.agent_id, c.period, c.hard_limit::bigint, s.spent
    FROM tollgate.spend_caps c
    CROSS JOIN LATERAL (
        SELECT tollgate.spent_since(c.account_id, nullif(c.agent_id, ''), c.currency,
                                    tollgate.period_start(c.period)) AS spent
    ) s
    WHERE c.account_id = p_account_id AND c.currency = p_currency AND c.agent_id IN ('', p_agent)
      AND s.spent + p_amount > c.hard_limit
    ORDER BY c.agent_id DESC, c.period
    LIMIT 1
$$;

-- Refuse (23514 spend_cap) spending p_amount more if it would pass a cap of the account, or of
-- the agent p_agent ('' for none).
CREATE OR REPLACE FUNCTION tollgate.check_spend_cap(p_account_id uuid, p_agent text, p_currency text, p_amount numeric)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cap record;
BEGIN
    SELECT * INTO cap FROM tollgate.cap_exceeded(p_account_id, p_agent, p_currency, p_amount);
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
    p_account_id uuid, p_agent text, p_currency text, p_day date, p_delta numeric
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
    INSERT INTO tollgate.spend_daily AS d (account_id, agent_id, currency, day, spent)
    VALUES (p_account_id, p_agent, p_currency, p_day, greatest(p_delta, 0))
    ON CONFLICT (account_id, currency, day, agent_id)
    DO UPDATE SET spent = d.spent + p_delta;
    IF p_delta < 0 THEN
        RETURN;
    END IF;
    FOR cap IN
        SELECT c.id, c.agent_id, c.period, c.hard_limit, c.soft_pct, tollgate.period_start(c.period) AS since,
               tollgate.spent_since(c.account_id, nullif(c.agent_id, ''), c.currency,
                                    tollgate.period_start(c.period)) AS spent
        FROM tollgate.spend_caps c
        WHERE c.account_id = p_account_id AND c.currency = p_currency AND c.agent_id IN ('', p_agent)
    LOOP
        IF cap.spent * 100 >= cap.hard_limit * cap.soft_pct THEN
            -- Its trigger announces it; the key makes it once per cap and period.
            INSERT INTO tollgate.spend_notices (cap_id, account_id, period_start, spent)
            VALUES (cap.id, p_account_id, cap.since, cap.spent)
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
    PERFORM tollgate.emit(NEW.account_id, 'spend.threshold_reached',
        jsonb_build_object('cap_id', cap.id, 'agent_id', nullif(cap.agent_id, ''), 'period', cap.period,
                           'period_start', NEW.period_start, 'currency', cap.currency, 'spent', NEW.spent,
                           'hard_limit', cap.hard_limit, 'soft_pct', cap.soft_pct));
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER spend_notices_50_announce
    AFTER INSERT ON tollgate.spend_notices
    FOR EACH ROW EXECUTE FUNCTION tollgate.spend_notices_announce();

-- A transfer out of an account's wallet is spending, whoever asked for it (the account's key or
-- an admin key) and however the posting was written: it counts toward the account's caps (not
-- an agent's: a transfer names none) on the day it is made, and is refused past a hard cap. The
-- posting holds the wallet's lock, so concurrent spending from the wallet is counted in order.
-- (Holds count through holds_50_spend and usage in api.record_usage_v1; reversals and refunds
-- take money back rather than spend it, and are not counted.)
CREATE OR REPLACE FUNCTION tollgate.ledger_entries_spend() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.account_id = '00000000-0000-0000-0000-000000000000'
       OR (SELECT p.kind FROM tollgate.ledger_postings p WHERE p.id = NEW.posting_id) <> 'transfer'
       OR (SELECT la.name FROM tollgate.ledger_accounts la WHERE la.id = NEW.ledger_account_id) <> 'main' THEN
        RETURN NULL;
    END IF;
    PERFORM tollgate.check_spend_cap(NEW.account_id, '', NEW.currency, -NEW.amount);
    PERFORM tollgate.add_spend(NEW.account_id, '', NEW.currency, tollgate.utc_day(), -NEW.amount);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER ledger_entries_30_spend
    AFTER INSERT ON tollgate.ledger_entries
    FOR EACH ROW WHEN (NEW.amount < 0) EXECUTE FUNCTION tollgate.ledger_entries_spend();

-- ---------------------------------------------------------------------------------------------
-- Holds
-- ---------------------------------------------------------------------------------------------

-- Credits a wallet can still commit: its balance plus its overdraft limit, less its active,
-- unexpired holds (NULL: no limit, only Tollgate's own clearing accounts).
CREATE OR REPLACE FUNCTION tollgate.available_credits(p_wallet uuid) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN la.overdraft_limit IS NULL THEN NULL
                ELSE la.balance + la.overdraft_limit - coalesce((SELECT sum(h.amount) FROM tollgate.holds h
                                            WHERE h.ledger_account_id = la.id AND h.status = 'active'
                                              AND h.expires_at > now()), 0)::bigint END
    FROM tollgate.ledger_accounts la WHERE la.id = p_wallet
$$;

-- After money leaves a wallet that may not go negative (a transfer, a reversal), its balance
-- must still cover the credits held for work already authorized.
CREATE OR REPLACE FUNCTION tollgate.check_holds_covered(p_wallet uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tollgate.available_credits(p_wallet) < 0 THEN
        RAISE EXCEPTION 'the balance would no longer cover the credits held for authorized work'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
    END IF;
END
$$;

-- Holds past their expiry stop reserving credits: mark them so (the caller holds the wallet lock).
CREATE OR REPLACE FUNCTION tollgate.expire_holds(p_wallet uuid) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE tollgate.holds SET status = 'expired'
    WHERE ledger_account_id = p_wallet AND status = 'active' AND expires_at <= now()
$$;

-- Spending follows holds: the whole hold while active, the captured amount once captured,
-- nothing once released or expired (on the day the hold was placed).
CREATE OR REPLACE FUNCTION tollgate.holds_spend() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tollgate.add_spend(NEW.account_id, NEW.agent_id, NEW.currency,
                                   (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.amount);
        PERFORM tollgate.audit(NEW.account_id, 'hold', NEW.id::text, 'created', NULL, 'active');
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM tollgate.add_spend(NEW.account_id, NEW.agent_id, NEW.currency,
                                   (NEW.created_at AT TIME ZONE 'UTC')::date,
                                   coalesce(NEW.captured_amount, 0) - NEW.amount);
        PERFORM tollgate.audit(NEW.account_id, 'hold', NEW.id::text, 'status_changed',
                               OLD.status::text, NEW.status::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.holds_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'active' OR NEW.captured_amount IS NOT NULL OR NEW.posting_id IS NOT NULL THEN
            RAISE EXCEPTION 'a hold starts active, with nothing captured'
                USING ERRCODE = 'TG010', CONSTRAINT = 'hold_initial_status';
        END IF;
        NEW.created_at := now();
        NEW.updated_at := now();
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.account_id, NEW.agent_id, NEW.action, NEW.ledger_account_id, NEW.currency,
        NEW.amount, NEW.expires_at, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.account_id, OLD.agent_id, OLD.action, OLD.ledger_account_id,
                         OLD.currency, OLD.amount, OLD.expires_at, OLD.created_at) THEN
        RAISE EXCEPTION 'hold %: only its outcome may change', OLD.id
            USING ERRCODE = 'TG011', CONSTRAINT = 'holds_terms_immutable';
    END IF;
    IF NEW.status = OLD.status AND (NEW.captured_amount, NEW.posting_id)
       IS DISTINCT FROM (OLD.captured_amount, OLD.posting_id) THEN
        RAISE EXCEPTION 'hold %: the outcome is set once', OLD.id
            USING ERRCODE = 'TG011', CONSTRAINT = 'holds_outcome_once';
    END IF;
    IF NEW.status = 'captured' AND OLD.status = 'active' AND NEW.captured_amount > 0
       AND NOT EXISTS (SELECT FROM tollgate.ledger_entries e
                       WHERE e.posting_id = NEW.posting_id AND e.ledger_account_id = NEW.ledger_account_id
                         AND e.amount = -NEW.captured_amount) THEN
        RAISE EXCEPTION 'hold %: a capture needs the posting that takes the money', OLD.id
            USING ERRCODE = 'TG011', CONSTRAINT = 'holds_capture_posted';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER holds_10_guard
    BEFORE INSERT OR UPDATE ON tollgate.holds
    FOR EACH ROW EXECUTE FUNCTION tollgate.holds_guard();
CREATE OR REPLACE TRIGGER holds_20_transition
    BEFORE UPDATE ON tollgate.holds
    FOR EACH ROW EXECUTE FUNCTION tollgate.check_transition('hold_transitions', 'hold');
CREATE OR REPLACE TRIGGER holds_50_spend
    AFTER INSERT OR UPDATE OF status ON tollgate.holds
    FOR EACH ROW EXECUTE FUNCTION tollgate.holds_spend();
CREATE OR REPLACE TRIGGER holds_no_delete
    BEFORE DELETE ON tollgate.holds
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

-- Where captured credits and metered usage go: Tollgate's revenue, per currency.
CREATE OR REPLACE FUNCTION tollgate.revenue_account(p_currency text) RETURNS uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tollgate.ledger_account('00000000-0000-0000-0000-000000000000', 'revenue', p_currency, false)
$$;

-- How a hold looks to API callers.
CREATE OR REPLACE VIEW tollgate.hold_v1 AS
SELECT h.id, a.external_id AS account_id, nullif(h.agent_id, '') AS agent_id, h.action,
       tollgate.format_minor(h.amount, h.currency) AS amount,
       CASE WHEN h.captured_amount IS NOT NULL THEN tollgate.format_minor(h.captured_amount, h.currency) END
           AS captured_amount,
       h.currency,
       CASE WHEN h.status = 'active' AND h.expires_at <= now() THEN 'expired' ELSE h.status::text END AS status,
       h.expires_at, h.created_at, h.updated_at
FROM tollgate.holds h JOIN tollgate.accounts a ON a.id = h.account_id;

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
    used      tollgate.payment_entitlements;
    wallet    uuid;
    avail     bigint;
    cap       record;
    hold      tollgate.holds;
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
    IF p_cost IS NOT NULL THEN
        IF cur IS NULL THEN
            RAISE EXCEPTION 'name the currency of the cost: action % has no price', p_action
                USING ERRCODE = 'check_violation', CONSTRAINT = 'currency_known';
        END IF;
        cost := tollgate.to_minor(p_cost, cur);
        IF NOT k.is_admin AND act.name IS NOT NULL THEN
            IF cur <> act.currency THEN
                RAISE EXCEPTION 'action % is priced in %, not %', p_action, act.currency, cur
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'cost_currency';
            END IF;
            cost := greatest(cost, act.price);
        END IF;
    ELSIF act.name IS NOT NULL AND cur = act.currency THEN
        cost := act.price;
    END IF;

    -- 1. A current subscription covers every action (one without a period end does not).
    IF EXISTS (SELECT FROM tollgate.subscriptions s
               WHERE s.account_id = acct.id AND s.status IN ('active', 'trialing')
                 AND s.current_period_end > now()) THEN
        RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
                                                              p_via => 'subscription');
        RETURN;
    END IF;

    -- 2. An unused one-off payment for this action, not held by a risk review: use it (SKIP
    --    LOCKED: concurrent callers take different payments, never the same one twice).
    UPDATE tollgate.payment_entitlements e SET uses_left = e.uses_left - 1, used_at = now()
    WHERE e.payment_intent_id = (
        SELECT x.payment_intent_id FROM tollgate.payment_entitlements x
        WHERE x.account_id = acct.id AND x.action = p_action AND x.uses_left > 0
          AND NOT tollgate.payment_under_review(x.payment_intent_id)
          AND NOT tollgate.payment_disputed(x.payment_intent_id)
        ORDER BY x.created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING * INTO used;
    IF FOUND THEN
        RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
            p_via => 'payment',
            -- uses_left > 0: the partial index payment_entitlements_usable_idx
            p_uses_left => (SELECT coalesce(sum(x.uses_left), 0)::integer FROM tollgate.payment_entitlements x
                            WHERE x.account_id = acct.id AND x.action = p_action AND x.uses_left > 0));
        RETURN;
    END IF;

    IF cost IS NULL THEN
        RAISE EXCEPTION '%', CASE WHEN act.name IS NULL THEN format('action %s has no price: send its cost and currency', p_action)
                                  ELSE format('action %s is priced in %s, not %s', p_action, act.currency, cur) END
            USING ERRCODE = 'TG003', CONSTRAINT = 'action_known';
    END IF;

    -- 3. Credits: hold the cost, under the wallet's lock.
    SELECT la.id INTO wallet FROM tollgate.ledger_accounts la
    WHERE la.account_id = acct.id AND la.name = 'main' AND la.currency = cur
    FOR UPDATE;
    IF wallet IS NOT NULL THEN
        PERFORM tollgate.expire_holds(wallet);
        avail := tollgate.available_credits(wallet);
    ELSE
        avail := 0;
    END IF;
    IF wallet IS NULL OR avail < cost THEN
        RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
            p_code => 'payment_required',
            p_message => format('%s needs %s %s: no subscription, no payment for it, and %s %s of credits',
                                p_action, tollgate.format_minor(cost, cur), cur,
                                tollgate.format_minor(greatest(coalesce(avail, 0), 0), cur), cur),
            p_remaining => tollgate.format_minor(greatest(coalesce(avail, 0), 0), cur));
        RETURN;
    END IF;
    SELECT * INTO cap FROM tollgate.cap_exceeded(acct.id, agent, cur, cost);
    IF FOUND THEN
        RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
            p_code => 'spend_cap_exceeded',
            p_message => format('the %s cap of %s %s%s is reached: %s spent, %s more would pass it',
                                cap.period, tollgate.format_minor(cap.hard_limit, cur), cur,
                                CASE WHEN cap.agent_id <> '' THEN ' for agent ' || cap.agent_id ELSE '' END,
                                tollgate.format_exact(cap.spent, cur), tollgate.format_minor(cost, cur)),
            p_remaining => CASE WHEN avail IS NOT NULL THEN tollgate.format_minor(avail, cur) END);
        RETURN;
    END IF;
    INSERT INTO tollgate.holds (account_id, agent_id, action, ledger_account_id, currency, amount, expires_at)
    VALUES (acct.id, agent, p_action, wallet, cur, cost,
            now() + make_interval(secs => coalesce(p_hold_seconds, 900)))
    RETURNING * INTO hold;
    RETURN QUERY SELECT * FROM tollgate.authorization_row(acct.external_id, p_action, cost, cur,
        p_via => 'credits',
        p_remaining => CASE WHEN avail IS NOT NULL THEN tollgate.format_minor(avail - cost, cur) END,
        p_hold => hold);
END
$$;

-- The hold, locked, with its wallet locked first (the lock order every credit path uses),
-- for a key that may act for its account.
CREATE OR REPLACE FUNCTION tollgate.hold_for(p_key tollgate.api_keys, p_hold_id uuid) RETURNS tollgate.holds
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h tollgate.holds;
BEGIN
    SELECT * INTO h FROM tollgate.holds WHERE id = p_hold_id;
    IF NOT FOUND OR NOT (p_key.is_admin OR h.account_id = p_key.account_id) THEN
        RAISE EXCEPTION 'hold % not found', p_hold_id USING ERRCODE = 'TG003', CONSTRAINT = 'hold_visible';
    END IF;
    PERFORM FROM tollgate.ledger_accounts WHERE id = h.ledger_account_id FOR UPDATE;
    SELECT * INTO STRICT h FROM tollgate.holds WHERE id = p_hold_id FOR UPDATE;
    IF h.status = 'active' AND h.expires_at <= now() THEN
        UPDATE tollgate.holds SET status = 'expired' WHERE id = h.id RETURNING * INTO h;
    END IF;
    RETURN h;
END
$$;

-- Settle a hold at the actual amount (a decimal; NULL: the whole hold): the amount moves from
-- the wallet to Tollgate's revenue and the rest is freed. More than was held is taken only if
-- the wallet may go negative and the caps allow it. Capturing again with the same amount
-- answers the same; any other move of a finished hold is refused (TG010).
CREATE OR REPLACE FUNCTION api.capture_hold_v1(p_api_key text, p_hold_id uuid, p_amount numeric)
RETURNS SETOF tollgate.hold_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k       tollgate.api_keys := tollgate.authenticate(p_api_key);
    h       tollgate.holds := tollgate.hold_for(k, p_hold_id);
    take    bigint;
    posting uuid;
BEGIN
    take := CASE WHEN p_amount IS NULL THEN h.amount
                 WHEN p_amount = 0 THEN 0
                 ELSE tollgate.to_minor(p_amount, h.currency) END;
    IF h.status = 'captured' AND h.captured_amount = take THEN
        RETURN QUERY SELECT * FROM tollgate.hold_v1 v WHERE v.id = h.id;
        RETURN;
    END IF;
    IF h.status <> 'active' THEN
        RAISE EXCEPTION 'hold % is %: it cannot be captured', h.id, h.status
            USING ERRCODE = 'TG010', CONSTRAINT = 'hold_transition_allowed';
    END IF;
    IF take > h.amount THEN
        IF NOT (SELECT la.allow_negative FROM tollgate.ledger_accounts la WHERE la.id = h.ledger_account_id) THEN
            RAISE EXCEPTION 'capturing % is more than the % held, and the balance may not go negative',
                    tollgate.format_minor(take, h.currency), tollgate.format_minor(h.amount, h.currency)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'hold_capture_within_hold';
        END IF;
        IF EXISTS (SELECT FROM tollgate.cap_exceeded(h.account_id, h.agent_id, h.currency, take - h.amount)) THEN
            RAISE EXCEPTION 'capturing % would pass a spend cap', tollgate.format_minor(take, h.currency)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'spend_cap';
        END IF;
    END IF;
    IF take > 0 THEN
        posting := tollgate.post(h.account_id, 'charge',
                                 ARRAY[h.ledger_account_id, tollgate.revenue_account(h.currency)],
                                 ARRAY[-take, take]);
    END IF;
    UPDATE tollgate.holds SET status = 'captured', captured_amount = take, posting_id = posting WHERE id = h.id;
    IF take > h.amount THEN
        -- The excess came out of the overdraft: it may not eat what other holds reserve.
        PERFORM tollgate.check_holds_covered(h.ledger_account_id);
    END IF;
    RETURN QUERY SELECT * FROM tollgate.hold_v1 v WHERE v.id = h.id;
END
$$;

-- Cancel a hold: nothing is spent. Releasing a released (or expired) hold answers the same.
CREATE OR REPLACE FUNCTION api.release_hold_v1(p_api_key text, p_hold_id uuid)
RETURNS SETOF tollgate.hold_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k tollgate.api_keys := tollgate.authenticate(p_api_key);
    h tollgate.holds := tollgate.hold_for(k, p_hold_id);
BEGIN
    IF h.status = 'captured' THEN
        RAISE EXCEPTION 'hold % was captured: it cannot be released', h.id
            USING ERRCODE = 'TG010', CONSTRAINT = 'hold_transition_allowed';
    END IF;
    IF h.status = 'active' THEN
        UPDATE tollgate.holds SET status = 'released' WHERE id = h.id;
    END IF;
    RETURN QUERY SELECT * FROM tollgate.hold_v1 v WHERE v.id = h.id;
END
$$;

CREATE OR REPLACE FUNCTION api.get_hold_v1(p_api_key text, p_hold_id uuid)
RETURNS SETOF tollgate.hold_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k tollgate.api_keys := tollgate.authenticate(p_api_key);
    h tollgate.holds;
BEGIN
    SELECT * INTO h FROM tollgate.holds WHERE id = p_hold_id;
    IF NOT FOUND OR NOT (k.is_admin OR h.account_id = k.account_id) THEN
        RAISE EXCEPTION 'hold % not found', p_hold_id USING ERRCODE = 'TG003', CONSTRAINT = 'hold_visible';
    END IF;
    RETURN QUERY SELECT * FROM tollgate.hold_v1 v WHERE v.id = p_hold_id;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- api: configuration (admin keys)
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tollgate.require_admin(p_api_key text) RETURNS tollgate.api_keys
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k tollgate.api_keys := tollgate.authenticate(p_api_key);
BEGIN
    IF NOT k.is_admin THEN
        RAISE EXCEPTION 'only an admin key may change prices and caps'
            USING ERRCODE = 'TG002', CONSTRAINT = 'admin_key';
    END IF;
    RETURN k;
END
$$;

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
    INSERT INTO tollgate.spend_caps AS c (account_id, agent_id, period, currency, hard_limit, soft_pct)
    VALUES (acct.id, coalesce(p_agent, ''), p_period::tollgate.spend_period, p_currency, limit_minor,
            coalesce(p_soft_pct, 80))
    ON CONFLICT ON CONSTRAINT spend_caps_scope_key DO UPDATE
    SET hard_limit = excluded.hard_limit, soft_pct = excluded.soft_pct, updated_at = now();
    RETURN QUERY SELECT acct.external_id, p_agent, p_period, p_currency,
                        tollgate.format_minor(limit_minor, p_currency), coalesce(p_soft_pct, 80);
END
$$;
