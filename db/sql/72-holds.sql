-- Holds on credits: api.authorize_v1 reserves an action's cost on the account's wallet; the
-- caller captures what was actually spent (posted as a charge) or releases it, and a hold not
-- captured in time expires. Active holds are money the wallet cannot spend otherwise: every
-- movement out of a wallet checks that its active holds stay covered.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TYPE tollgate.hold_status AS ENUM (
    'active',    -- reserves credits until captured, released or expired
    'captured',  -- terminal: the actual cost was posted; the rest was freed
    'released',  -- terminal: nothing was spent
    'expired'    -- terminal: not captured in time; nothing was spent
);

CREATE TABLE tollgate.hold_transitions (
    from_status tollgate.hold_status NOT NULL,
    to_status   tollgate.hold_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT hold_transitions_terminal_is_final CHECK (from_status = 'active')
);

INSERT INTO tollgate.hold_transitions VALUES ('active', 'captured'), ('active', 'released'), ('active', 'expired');

CREATE TABLE tollgate.holds (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid        uuid        NOT NULL CONSTRAINT holds_account_uuid_fkey REFERENCES tollgate.accounts,
    -- The agent that asked, for per-agent spend caps; '' when none was named.
    agent_id          text        NOT NULL DEFAULT '' CONSTRAINT holds_agent_id_format CHECK (agent_id ~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]{0,127})?$'),
    action            tollgate.purpose NOT NULL,
    -- The credits wallet (the account's main ledger account in this currency).
    ledger_account_id uuid        NOT NULL,
    currency          text        NOT NULL,
    amount            tollgate.amount_minor NOT NULL,
    status            tollgate.hold_status NOT NULL DEFAULT 'active',
    captured_amount   bigint      CONSTRAINT holds_captured_amount_non_negative CHECK (captured_amount >= 0),
    posting_id        uuid        CONSTRAINT holds_posting_id_fkey REFERENCES tollgate.ledger_postings,
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT holds_ledger_account_fkey FOREIGN KEY (ledger_account_id, currency)
        REFERENCES tollgate.ledger_accounts (id, currency),
    CONSTRAINT holds_captured_has_amount CHECK ((status = 'captured') = (captured_amount IS NOT NULL)),
    CONSTRAINT holds_posting_when_spent CHECK ((posting_id IS NOT NULL) = (status = 'captured' AND captured_amount > 0)),
    CONSTRAINT holds_expiry_after_creation CHECK (expires_at > created_at),
    -- A hold reserves credits for at most a day.
    CONSTRAINT holds_expiry_range CHECK (expires_at <= created_at + interval '1 day')
);

CREATE INDEX holds_active_idx ON tollgate.holds (ledger_account_id, expires_at) WHERE status = 'active';
-- Listing an account's holds newest first, a page at a time (api.list_holds_v1).
CREATE INDEX holds_account_created_idx ON tollgate.holds (account_uuid, created_at DESC, id DESC);

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

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
        PERFORM tollgate.add_spend(NEW.account_uuid, NEW.agent_id, NEW.currency,
                                   (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.amount);
        PERFORM tollgate.audit(NEW.account_uuid, 'hold', NEW.id::text, 'created', NULL, 'active');
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM tollgate.add_spend(NEW.account_uuid, NEW.agent_id, NEW.currency,
                                   (NEW.created_at AT TIME ZONE 'UTC')::date,
                                   coalesce(NEW.captured_amount, 0) - NEW.amount);
        PERFORM tollgate.audit(NEW.account_uuid, 'hold', NEW.id::text, 'status_changed',
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
    IF (NEW.id, NEW.account_uuid, NEW.agent_id, NEW.action, NEW.ledger_account_id, NEW.currency,
        NEW.amount, NEW.expires_at, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.account_uuid, OLD.agent_id, OLD.action, OLD.ledger_account_id,
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

-- How a hold looks to API callers.
CREATE OR REPLACE VIEW tollgate.hold_v1 AS
SELECT h.id, a.external_id AS account_id, nullif(h.agent_id, '') AS agent_id, h.action,
       tollgate.format_minor(h.amount, h.currency) AS amount,
       CASE WHEN h.captured_amount IS NOT NULL THEN tollgate.format_minor(h.captured_amount, h.currency) END
           AS captured_amount,
       h.currency,
       CASE WHEN h.status = 'active' AND h.expires_at <= now() THEN 'expired' ELSE h.status::text END AS status,
       h.expires_at, h.created_at, h.updated_at
FROM tollgate.holds h JOIN tollgate.accounts a ON a.id = h.account_uuid;

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
    IF NOT FOUND OR NOT (p_key.is_admin OR h.account_uuid = p_key.account_uuid) THEN
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
        IF EXISTS (SELECT FROM tollgate.cap_exceeded(h.account_uuid, h.agent_id, h.currency, take - h.amount)) THEN
            RAISE EXCEPTION 'capturing % would pass a spend cap', tollgate.format_minor(take, h.currency)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'spend_cap';
        END IF;
    END IF;
    IF take > 0 THEN
        posting := tollgate.post(h.account_uuid, 'charge',
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
    IF NOT FOUND OR NOT (k.is_admin OR h.account_uuid = k.account_uuid) THEN
        RAISE EXCEPTION 'hold % not found', p_hold_id USING ERRCODE = 'TG003', CONSTRAINT = 'hold_visible';
    END IF;
    RETURN QUERY SELECT * FROM tollgate.hold_v1 v WHERE v.id = p_hold_id;
END
$$;

-- An account's holds, newest first, optionally of one status (as hold_v1 shows it: an active
-- hold past its expiry is expired), action or agent: a page of at most p_limit (1-500) after
-- the hold p_after (the id of the last of the previous page).
CREATE OR REPLACE FUNCTION api.list_holds_v1(
    p_api_key text, p_account text, p_status text, p_action text, p_agent text, p_limit integer, p_after uuid
) RETURNS SETOF tollgate.hold_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct   tollgate.accounts := tollgate.account_for(tollgate.authenticate(p_api_key), p_account);
    wanted tollgate.hold_status := p_status::tollgate.hold_status;
    after  tollgate.holds;
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    IF p_after IS NOT NULL THEN
        SELECT * INTO after FROM tollgate.holds h WHERE h.id = p_after AND h.account_uuid = acct.id;
        IF NOT FOUND THEN
            PERFORM tollgate.refuse_cursor('hold', p_after::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT v.* FROM tollgate.hold_v1 v
    WHERE v.id IN (SELECT h.id FROM tollgate.holds h
                   WHERE h.account_uuid = acct.id
                     AND (wanted IS NULL
                          OR CASE WHEN h.status = 'active' AND h.expires_at <= now() THEN 'expired'
                                  ELSE h.status END = wanted)
                     AND (p_action IS NULL OR h.action = p_action)
                     AND (p_agent IS NULL OR h.agent_id = p_agent)
                     AND (after.id IS NULL OR (h.created_at, h.id) < (after.created_at, after.id))
                   ORDER BY h.created_at DESC, h.id DESC
                   LIMIT p_limit)
    ORDER BY v.created_at DESC, v.id DESC;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.hold_transitions ---

CREATE OR REPLACE TRIGGER hold_transitions_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.hold_transitions
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

CREATE OR REPLACE TRIGGER hold_transitions_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.hold_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

-- --- tollgate.holds ---

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
