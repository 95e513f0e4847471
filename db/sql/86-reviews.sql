-- Risk reviews. Rules (tollgate.risk_rules) flag a transaction or payment when it is
-- recorded; the review they open must be approved before a flagged transaction settles
-- (trigger transactions_25_review_gate, SQLSTATE TG050), and before a flagged payment's paid
-- run can be used (payment_entitlements_25_review_gate). A rejected review fails the
-- transaction; a rejected payment's money stays at Stripe until an operator refunds it.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

-- Thresholds per currency: the row with account_uuid NULL applies to every account that has
-- no row of its own. NULL thresholds are not checked.
CREATE TABLE tollgate.risk_rules (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid         uuid        CONSTRAINT risk_rules_account_uuid_fkey REFERENCES tollgate.accounts,
    currency           text        NOT NULL CONSTRAINT risk_rules_currency_fkey REFERENCES tollgate.currencies,
    -- One amount above this is reviewed.
    max_amount         tollgate.amount_minor,
    -- More than velocity_count payments or transactions within velocity_window is reviewed.
    velocity_count     integer     CONSTRAINT risk_rules_velocity_count_positive CHECK (velocity_count > 0),
    velocity_window    interval    CONSTRAINT risk_rules_velocity_window_positive CHECK (velocity_window > interval '0'),
    -- The first payment or transaction of an account above this is reviewed.
    first_amount_max   tollgate.amount_minor,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT risk_rules_scope_key UNIQUE NULLS NOT DISTINCT (account_uuid, currency),
    CONSTRAINT risk_rules_velocity_pair CHECK ((velocity_count IS NULL) = (velocity_window IS NULL))
);

CREATE TYPE tollgate.review_status AS ENUM (
    'open',      -- waiting for a reviewer; a flagged transaction cannot settle
    'approved',  -- terminal: may proceed
    'rejected'   -- terminal: a flagged transaction fails
);

CREATE TABLE tollgate.review_transitions (
    from_status tollgate.review_status NOT NULL,
    to_status   tollgate.review_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT review_transitions_terminal_is_final CHECK (from_status = 'open')
);

INSERT INTO tollgate.review_transitions VALUES ('open', 'approved'), ('open', 'rejected');

CREATE TABLE tollgate.reviews (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid         uuid        NOT NULL CONSTRAINT reviews_account_uuid_fkey REFERENCES tollgate.accounts,
    transaction_id     uuid        CONSTRAINT reviews_transaction_id_fkey REFERENCES tollgate.transactions
                                   CONSTRAINT reviews_transaction_id_key UNIQUE,
    payment_intent_id  uuid        CONSTRAINT reviews_payment_intent_id_fkey REFERENCES tollgate.payment_intents
                                   CONSTRAINT reviews_payment_intent_id_key UNIQUE,
    -- The rules that flagged it: amount_above_threshold, velocity, first_amount_above_threshold.
    rules              text[]      NOT NULL CONSTRAINT reviews_rules_not_empty CHECK (cardinality(rules) > 0),
    detail             text        NOT NULL,
    status             tollgate.review_status NOT NULL DEFAULT 'open',
    decided_by         text,
    note               text        CONSTRAINT reviews_note_length CHECK (length(note) <= 2000),
    created_at         timestamptz NOT NULL DEFAULT now(),
    decided_at         timestamptz,
    CONSTRAINT reviews_one_subject CHECK ((transaction_id IS NULL) <> (payment_intent_id IS NULL)),
    CONSTRAINT reviews_decided_when CHECK ((status = 'open') = (decided_at IS NULL))
);

CREATE INDEX reviews_open_idx ON tollgate.reviews (created_at) WHERE status = 'open';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- The rules p_amount of p_currency breaks for the account: amount_above_threshold, velocity
-- (more than velocity_count recorded within velocity_window, this one included) and
-- first_amount_above_threshold (its first, above first_amount_max). p_kind: transaction or
-- payment, whose records are counted.
CREATE OR REPLACE FUNCTION tollgate.risk_flags(p_account_uuid uuid, p_kind text, p_amount bigint, p_currency text)
RETURNS text[]
LANGUAGE plpgsql VOLATILE  -- not STABLE: the counts must see what committed while it waited
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rule  tollgate.risk_rules;
    flags text[] := '{}';
    seen  bigint;
BEGIN
    SELECT * INTO rule FROM tollgate.risk_rules r
    WHERE r.currency = p_currency AND (r.account_uuid = p_account_uuid OR r.account_uuid IS NULL)
    ORDER BY r.account_uuid NULLS LAST LIMIT 1;
    IF NOT FOUND THEN
        RETURN flags;
    END IF;
    -- Counting what came before races with concurrent inserts for the account: they take turns
    -- here (until commit), so each counts the others.
    IF rule.velocity_count IS NOT NULL OR rule.first_amount_max IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:risk:' || p_kind || ':' || p_account_uuid, 0));
    END IF;
    IF p_amount > rule.max_amount THEN
        flags := array_append(flags, 'amount_above_threshold');
    END IF;
    IF rule.velocity_count IS NOT NULL THEN
        seen := CASE p_kind
            WHEN 'transaction' THEN (SELECT count(*) FROM tollgate.transactions t
                                     WHERE t.account_uuid = p_account_uuid AND t.created_at > now() - rule.velocity_window)
            ELSE (SELECT count(*) FROM tollgate.payment_intents p
                  WHERE p.account_uuid = p_account_uuid AND p.created_at > now() - rule.velocity_window) END;
        IF seen > rule.velocity_count THEN
            flags := array_append(flags, 'velocity');
        END IF;
    END IF;
    seen := CASE p_kind
        WHEN 'transaction' THEN (SELECT count(*) FROM tollgate.transactions t WHERE t.account_uuid = p_account_uuid)
        ELSE (SELECT count(*) FROM tollgate.payment_intents p WHERE p.account_uuid = p_account_uuid) END;
    IF p_amount > rule.first_amount_max AND seen = 1 THEN
        flags := array_append(flags, 'first_amount_above_threshold');
    END IF;
    RETURN flags;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.flag_for_review() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind  text := CASE TG_TABLE_NAME WHEN 'transactions' THEN 'transaction' ELSE 'payment' END;
    flags text[] := tollgate.risk_flags(NEW.account_uuid, kind, NEW.amount, NEW.currency);
BEGIN
    IF cardinality(flags) > 0 THEN
        INSERT INTO tollgate.reviews (account_uuid, transaction_id, payment_intent_id, rules, detail)
        VALUES (NEW.account_uuid,
                CASE kind WHEN 'transaction' THEN NEW.id END,
                CASE kind WHEN 'payment' THEN NEW.id END,
                flags,
                format('%s of %s %s', kind, tollgate.format_minor(NEW.amount, NEW.currency), NEW.currency));
    END IF;
    RETURN NULL;
END
$$;

-- Is the transaction held by a review (open, or rejected): its own, or the review of the
-- payment that backs it (a credits top-up: what the payment grants is held with it)?
-- PL/pgSQL rather than SQL, here and below: a SQL function with its own search_path is never
-- inlined, and is parsed and planned again on every call; PL/pgSQL keeps its plan.
CREATE OR REPLACE FUNCTION tollgate.under_review(p_transaction_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT FROM tollgate.reviews r
                   WHERE r.transaction_id = p_transaction_id AND r.status IN ('open', 'rejected'))
        OR EXISTS (SELECT FROM tollgate.transactions t
                   JOIN tollgate.reviews r ON r.payment_intent_id = t.payment_intent_id
                   WHERE t.id = p_transaction_id AND r.status IN ('open', 'rejected'));
END
$$;

-- Is the payment held by a review? Its entitlement cannot be used until a reviewer approves.
CREATE OR REPLACE FUNCTION tollgate.payment_under_review(p_payment_intent_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT FROM tollgate.reviews r
                   WHERE r.payment_intent_id = p_payment_intent_id AND r.status IN ('open', 'rejected'));
END
$$;

CREATE OR REPLACE FUNCTION tollgate.entitlements_review_gate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A use stamps used_at; a refund zeroes uses_left without one, and must go through.
    IF NEW.used_at IS DISTINCT FROM OLD.used_at AND tollgate.payment_under_review(NEW.payment_intent_id) THEN
        RAISE EXCEPTION 'payment % is held for risk review: a reviewer must approve it first', NEW.payment_intent_id
            USING ERRCODE = 'TG050', CONSTRAINT = 'payment_review_approved',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.transactions_review_gate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status = 'settled' AND OLD.status <> 'settled' AND tollgate.under_review(NEW.id) THEN
        RAISE EXCEPTION 'transaction % is held for risk review: a reviewer must approve it first', NEW.reference
            USING ERRCODE = 'TG050', CONSTRAINT = 'transaction_review_approved',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$;

-- A decision is final, and on the record with its note.
CREATE OR REPLACE FUNCTION tollgate.reviews_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'review', NEW.id::text, 'opened', NULL, 'open',
                               array_to_string(NEW.rules, ', ') || ': ' || NEW.detail);
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'review', NEW.id::text, 'decided', OLD.status::text,
                               NEW.status::text, NEW.note);
        -- Credits a flagged payment bought before its review could hold them (settled before
        -- this rule existed): recorded and announced for the operator to refund.
        IF NEW.status = 'rejected' AND NEW.payment_intent_id IS NOT NULL THEN
            PERFORM tollgate.take_back_reviewed(t.id) FROM tollgate.transactions t
            WHERE t.status = 'settled' AND t.payment_intent_id = NEW.payment_intent_id;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.reviews_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.id, NEW.account_uuid, NEW.transaction_id, NEW.payment_intent_id, NEW.rules, NEW.detail, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.account_uuid, OLD.transaction_id, OLD.payment_intent_id, OLD.rules,
                         OLD.detail, OLD.created_at)
       OR (OLD.status <> 'open' AND (NEW.note, NEW.decided_by, NEW.decided_at)
           IS DISTINCT FROM (OLD.note, OLD.decided_by, OLD.decided_at)) THEN
        RAISE EXCEPTION 'review %: only an open review takes a decision', OLD.id
            USING ERRCODE = 'TG011', CONSTRAINT = 'reviews_decided_once';
    END IF;
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- api (admin keys)
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE VIEW tollgate.review_v1 AS
SELECT r.id, a.external_id AS account_id,
       CASE WHEN r.transaction_id IS NOT NULL THEN 'transaction' ELSE 'payment' END AS subject,
       coalesce(t.reference, p.stripe_id) AS subject_ref,
       r.rules, r.detail, r.status::text AS status, r.decided_by, r.note, r.created_at, r.decided_at
FROM tollgate.reviews r
JOIN tollgate.accounts a ON a.id = r.account_uuid
LEFT JOIN tollgate.transactions t ON t.id = r.transaction_id
LEFT JOIN tollgate.payment_intents p ON p.id = r.payment_intent_id;

CREATE OR REPLACE FUNCTION api.list_reviews_v1(p_api_key text, p_status text)
RETURNS SETOF tollgate.review_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM tollgate.require_admin(p_api_key);
    RETURN QUERY SELECT * FROM tollgate.review_v1 v
    WHERE p_status IS NULL OR v.status = p_status ORDER BY v.created_at, v.id;
END
$$;

-- Approve or reject an open review. Approving a transaction whose payment has succeeded
-- settles it now; rejecting a pending transaction fails it.
CREATE OR REPLACE FUNCTION api.decide_review_v1(p_api_key text, p_review_id uuid, p_decision text, p_note text)
RETURNS SETOF tollgate.review_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k   tollgate.api_keys := tollgate.require_admin(p_api_key);
    rev tollgate.reviews;
BEGIN
    SELECT * INTO rev FROM tollgate.reviews WHERE id = p_review_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'review % not found', p_review_id USING ERRCODE = 'TG003', CONSTRAINT = 'review_visible';
    END IF;
    IF rev.status::text = p_decision THEN  -- the same decision again: answered again
        RETURN QUERY SELECT * FROM tollgate.review_v1 v WHERE v.id = rev.id;
        RETURN;
    END IF;
    UPDATE tollgate.reviews
    SET status = p_decision::tollgate.review_status, note = p_note, decided_by = 'key:' || k.id, decided_at = now()
    WHERE id = rev.id;
    -- What the review held: its transaction, or the transaction a flagged payment backs.
    IF p_decision = 'rejected' THEN
        UPDATE tollgate.transactions t SET status = 'failed'
        WHERE t.status = 'pending'
          AND (t.id = rev.transaction_id OR t.payment_intent_id = rev.payment_intent_id);
    ELSE
        UPDATE tollgate.transactions t SET status = 'settled'
        FROM tollgate.payment_intents p
        WHERE (t.id = rev.transaction_id OR t.payment_intent_id = rev.payment_intent_id)
          AND t.status = 'pending' AND p.id = t.payment_intent_id
          AND p.status IN ('succeeded', 'refunded')
          AND NOT tollgate.under_review(t.id);  -- the other review (payment or transaction) too
    END IF;
    RETURN QUERY SELECT * FROM tollgate.review_v1 v WHERE v.id = rev.id;
END
$$;

-- A payment's review was rejected after its transaction settled (possible only for credits
-- settled before reviews held them); called by trigger reviews_50_audit. A payment's credits come back only as Stripe takes the
-- money back (tollgate.take_back): the rejection is recorded and announced
-- (transaction.review_rejected) so that the operator refunds it, which takes them back.
CREATE OR REPLACE FUNCTION tollgate.take_back_reviewed(p_transaction_id uuid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    txn tollgate.transactions;
BEGIN
    SELECT * INTO STRICT txn FROM tollgate.transactions WHERE id = p_transaction_id;
    PERFORM tollgate.audit(txn.account_uuid, 'transaction', txn.id::text, 'review_rejected',
                           'settled', 'settled', 'its payment''s review was rejected after it settled: refund the payment');
    PERFORM tollgate.emit(txn.account_uuid, 'transaction.review_rejected',
                          jsonb_build_object('transaction_id', txn.id, 'reference', txn.reference,
                                             'payment_id', txn.payment_intent_id));
END
$$;

-- Set the review thresholds of an account (p_account NULL: the default for every account).
CREATE OR REPLACE FUNCTION api.set_risk_rule_v1(
    p_api_key text, p_account text, p_currency text, p_max_amount numeric, p_velocity_count integer,
    p_velocity_seconds integer, p_first_amount_max numeric
) RETURNS TABLE (account_id text, currency text, max_amount text, velocity_count integer,
                 velocity_seconds integer, first_amount_max text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k    tollgate.api_keys := tollgate.require_admin(p_api_key);
    acct uuid;
    mx   bigint;
    fst  bigint;
BEGIN
    IF p_account IS NOT NULL THEN
        acct := (tollgate.account_for(k, p_account)).id;
    END IF;
    PERFORM tollgate.to_minor(1, p_currency);
    IF p_max_amount IS NOT NULL THEN mx := tollgate.to_minor(p_max_amount, p_currency); END IF;
    IF p_first_amount_max IS NOT NULL THEN fst := tollgate.to_minor(p_first_amount_max, p_currency); END IF;
    INSERT INTO tollgate.risk_rules AS r (account_uuid, currency, max_amount, velocity_count, velocity_window, first_amount_max)
    VALUES (acct, p_currency, mx, p_velocity_count, make_interval(secs => p_velocity_seconds), fst)
    ON CONFLICT ON CONSTRAINT risk_rules_scope_key DO UPDATE
    SET max_amount = excluded.max_amount, velocity_count = excluded.velocity_count,
        velocity_window = excluded.velocity_window, first_amount_max = excluded.first_amount_max,
        updated_at = now();
    RETURN QUERY SELECT p_account, p_currency, tollgate.format_minor(mx, p_currency), p_velocity_count,
                        p_velocity_seconds, tollgate.format_minor(fst, p_currency);
END
$$;

-- Admin keys: the review thresholds, by account (the defaults, account_id NULL, first) and
-- currency; of one account only (its own rules, not the defaults) when p_account is given. A
-- page of at most p_limit (1-500) after the rule p_after (the id of the last of the previous
-- page). Only admin keys read them: an account told its thresholds could stay under them.
CREATE OR REPLACE FUNCTION api.list_risk_rules_v1(p_api_key text, p_account text, p_limit integer, p_after uuid)
RETURNS TABLE (id uuid, account_id text, currency text, max_amount text, max_amount_minor bigint,
               velocity_count integer, velocity_seconds integer, first_amount_max text,
               first_amount_max_minor bigint, updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k         tollgate.api_keys := tollgate.require_admin(p_api_key);
    acct      uuid;
    after_who text;
    after_cur text;
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    IF p_account IS NOT NULL THEN
        acct := (tollgate.account_for(k, p_account)).id;
    END IF;
    IF p_after IS NOT NULL THEN
        SELECT coalesce(a.external_id, ''), r.currency INTO after_who, after_cur
        FROM tollgate.risk_rules r LEFT JOIN tollgate.accounts a ON a.id = r.account_uuid
        WHERE r.id = p_after AND (acct IS NULL OR r.account_uuid = acct);
        IF NOT FOUND THEN
            PERFORM tollgate.refuse_cursor('risk rule', p_after::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT r.id, a.external_id, r.currency, tollgate.format_minor(r.max_amount, r.currency),
           r.max_amount::bigint, r.velocity_count, extract(epoch FROM r.velocity_window)::integer,
           tollgate.format_minor(r.first_amount_max, r.currency), r.first_amount_max::bigint, r.updated_at
    FROM tollgate.risk_rules r LEFT JOIN tollgate.accounts a ON a.id = r.account_uuid
    WHERE (acct IS NULL OR r.account_uuid = acct)
      AND (p_after IS NULL OR (coalesce(a.external_id, ''), r.currency) > (after_who, after_cur))
    ORDER BY coalesce(a.external_id, ''), r.currency
    LIMIT p_limit;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.review_transitions ---

CREATE OR REPLACE TRIGGER review_transitions_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.review_transitions
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

-- --- tollgate.reviews ---

CREATE OR REPLACE TRIGGER reviews_10_guard
    BEFORE UPDATE ON tollgate.reviews
    FOR EACH ROW EXECUTE FUNCTION tollgate.reviews_guard();

CREATE OR REPLACE TRIGGER reviews_20_transition
    BEFORE UPDATE ON tollgate.reviews
    FOR EACH ROW EXECUTE FUNCTION tollgate.check_transition('review_transitions', 'review');

CREATE OR REPLACE TRIGGER reviews_50_audit
    AFTER INSERT OR UPDATE OF status ON tollgate.reviews
    FOR EACH ROW EXECUTE FUNCTION tollgate.reviews_changed();

CREATE OR REPLACE TRIGGER reviews_no_delete
    BEFORE DELETE ON tollgate.reviews
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
