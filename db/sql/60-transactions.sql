-- Transactions: a financial action recorded first (pending), then settled (a settlement posting
-- credits the account), failed, or reversed (a compensating posting). A transaction linked to a
-- Stripe payment follows it: the payment's webhook settles, fails or reverses it through the
-- same UPDATE. The Triggers section lists every trigger on transactions in firing order.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TYPE tollgate.transaction_status AS ENUM (
    'pending',   -- recorded; nothing posted yet
    'settled',   -- the money arrived: a settlement posting credited the account
    'failed',    -- terminal: it did not happen; nothing was posted
    'reversed'   -- terminal: settled, then undone by a compensating posting
);

CREATE TABLE tollgate.transaction_transitions (
    from_status tollgate.transaction_status NOT NULL,
    to_status   tollgate.transaction_status NOT NULL,
    PRIMARY KEY (from_status, to_status),
    CONSTRAINT transaction_transitions_not_to_self CHECK (from_status <> to_status),
    CONSTRAINT transaction_transitions_terminal_is_final CHECK (from_status NOT IN ('failed', 'reversed'))
);

INSERT INTO tollgate.transaction_transitions (from_status, to_status) VALUES
    ('pending', 'settled'),
    ('pending', 'failed'),
    ('settled', 'reversed');

CREATE TABLE tollgate.transactions (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid            uuid        NOT NULL CONSTRAINT transactions_account_uuid_fkey REFERENCES tollgate.accounts,
    -- The caller's own id for the transaction, unique per account.
    reference             text        NOT NULL CONSTRAINT transactions_reference_format CHECK (reference ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    amount                tollgate.amount_minor NOT NULL,
    currency              text        NOT NULL CONSTRAINT transactions_currency_fkey REFERENCES tollgate.currencies,
    status                tollgate.transaction_status NOT NULL DEFAULT 'pending',
    -- The Stripe payment whose webhooks settle, fail or reverse this transaction, if any. One
    -- payment backs at most one transaction, or it would credit the account more than once.
    payment_intent_id     uuid        CONSTRAINT transactions_payment_intent_id_fkey REFERENCES tollgate.payment_intents
                                      CONSTRAINT transactions_payment_intent_id_key UNIQUE,
    settlement_posting_id uuid        CONSTRAINT transactions_settlement_posting_id_fkey REFERENCES tollgate.ledger_postings,
    reversal_posting_id   uuid        CONSTRAINT transactions_reversal_posting_id_fkey REFERENCES tollgate.ledger_postings,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transactions_account_reference_key UNIQUE (account_uuid, reference),
    CONSTRAINT transactions_settled_has_posting CHECK ((status IN ('settled', 'reversed')) = (settlement_posting_id IS NOT NULL)),
    CONSTRAINT transactions_reversed_has_posting CHECK ((status = 'reversed') = (reversal_posting_id IS NOT NULL))
);

COMMENT ON TABLE tollgate.transactions IS 'Financial actions recorded before they happen; settling one posts to the ledger.';

-- Listing an account's transactions newest first, a page at a time.
CREATE INDEX transactions_account_created_idx ON tollgate.transactions (account_uuid, created_at DESC, id DESC);

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

CREATE OR REPLACE FUNCTION tollgate.transactions_start() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status <> 'pending' THEN
        RAISE EXCEPTION 'a transaction starts pending, not %', NEW.status
            USING ERRCODE = 'TG010', CONSTRAINT = 'transaction_initial_status',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'status';
    END IF;
    NEW.settlement_posting_id := NULL;
    NEW.reversal_posting_id := NULL;
    NEW.created_at := now();
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Settling credits the account's main balance against the clearing account; reversing posts
-- the mirror image of the settlement. The posting ids are set here and nowhere else.
CREATE OR REPLACE FUNCTION tollgate.transactions_post() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        IF (NEW.settlement_posting_id, NEW.reversal_posting_id)
           IS DISTINCT FROM (OLD.settlement_posting_id, OLD.reversal_posting_id) THEN
            RAISE EXCEPTION 'transaction %: postings are set by status changes only', OLD.id
                USING ERRCODE = 'TG011', CONSTRAINT = 'transactions_postings_by_transition',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
        END IF;
        RETURN NEW;
    END IF;
    NEW.settlement_posting_id := OLD.settlement_posting_id;
    NEW.reversal_posting_id := OLD.reversal_posting_id;
    IF NEW.status = 'settled' THEN
        NEW.settlement_posting_id := tollgate.post(
            NEW.account_uuid, 'settlement',
            ARRAY[tollgate.ledger_account(NEW.account_uuid, 'main', NEW.currency),
                  tollgate.clearing_account(NEW.currency)],
            ARRAY[NEW.amount::bigint, -NEW.amount::bigint]);
    ELSIF NEW.status = 'reversed' AND NEW.payment_intent_id IS NOT NULL THEN
        -- A payment's transaction is reversed by taking its credits back (tollgate.take_back,
        -- db/sql/65-refunds.sql): from the wallet, and as debt what was spent. Its reversal is
        -- the posting that completed that.
        NEW.reversal_posting_id := tollgate.takeback_reversal(NEW);
        IF NEW.reversal_posting_id IS NULL THEN
            RAISE EXCEPTION 'transaction %: a payment''s transaction is reversed when its payment''s refunds took all of it back', OLD.id
                USING ERRCODE = 'TG010', CONSTRAINT = 'transaction_follows_payment',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
        END IF;
    ELSIF NEW.status = 'reversed' THEN
        NEW.reversal_posting_id := tollgate.reverse_posting(OLD.settlement_posting_id, NEW.account_uuid);
        PERFORM tollgate.check_holds_covered(tollgate.ledger_account(NEW.account_uuid, 'main', NEW.currency));
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.transactions_status_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status = NEW.status THEN
        RETURN NULL;
    END IF;
    PERFORM tollgate.audit(NEW.account_uuid, 'transaction', NEW.id::text,
                           CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'status_changed' END,
                           CASE TG_OP WHEN 'UPDATE' THEN OLD.status::text END, NEW.status::text);
    IF TG_OP = 'UPDATE' THEN
        PERFORM tollgate.emit(NEW.account_uuid, 'transaction.' || NEW.status::text,
                              jsonb_build_object('transaction_id', NEW.id, 'reference', NEW.reference,
                                                 'amount', NEW.amount, 'currency', NEW.currency));
    END IF;
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Following a Stripe payment
-- ---------------------------------------------------------------------------------------------

-- succeeded settles the payment's pending transaction, canceled fails it, refunded fails it if
-- still pending. A settled one is taken back by payment_intents_75_take_back (65-refunds.sql):
-- from the wallet, and what was already spent as a recorded debt; taken back in full, it is
-- reversed. The webhook never fails for a wallet that cannot pay.
CREATE OR REPLACE FUNCTION tollgate.transactions_follow_payment() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status = OLD.status THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'succeeded' THEN
        -- One held by a risk review waits for the reviewer (who settles it on approval).
        UPDATE tollgate.transactions SET status = 'settled'
        WHERE payment_intent_id = NEW.id AND status = 'pending' AND NOT tollgate.under_review(id);
    ELSIF NEW.status IN ('canceled', 'refunded') THEN
        UPDATE tollgate.transactions SET status = 'failed'
        WHERE payment_intent_id = NEW.id AND status = 'pending';
    END IF;
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- api
-- ---------------------------------------------------------------------------------------------

-- How a transaction looks to API callers: amount as a decimal string in its currency.
CREATE OR REPLACE VIEW tollgate.transaction_v1 AS
SELECT t.id,
       a.external_id                                AS account_id,
       t.reference,
       tollgate.format_minor(t.amount, t.currency)  AS amount,
       t.amount::bigint                             AS amount_minor,
       t.currency,
       t.status::text                               AS status,
       t.payment_intent_id                          AS payment_id,
       t.created_at,
       t.updated_at
FROM tollgate.transactions t
JOIN tollgate.accounts a ON a.id = t.account_uuid;

-- Record a pending transaction for an account, linked to a payment if p_payment_id is set: a
-- payment backs one transaction only (transactions_payment_intent_id_key), amounts must match,
-- and a payment that already succeeded or was canceled settles or fails it at once. The
-- payment row is locked FOR SHARE, so its webhook waits for this transaction to commit (and
-- then moves the new row) or this waits for the webhook (and sees its status).
CREATE OR REPLACE FUNCTION tollgate.create_transaction(
    p_account_uuid uuid, p_reference text, p_amount bigint, p_currency text, p_payment_id uuid
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pay tollgate.payment_intents;
    txn uuid;
BEGIN
    IF p_payment_id IS NOT NULL THEN
        SELECT * INTO STRICT pay FROM tollgate.payment_intents p WHERE p.id = p_payment_id FOR SHARE;
        IF (pay.amount, pay.currency) IS DISTINCT FROM (p_amount, p_currency) THEN
            RAISE EXCEPTION 'payment % is % %, not %', pay.stripe_id,
                    tollgate.format_minor(pay.amount, pay.currency), pay.currency,
                    tollgate.format_minor(p_amount, p_currency)
                USING ERRCODE = 'check_violation', CONSTRAINT = 'transaction_matches_payment';
        END IF;
        IF pay.status = 'refunded' THEN
            RAISE EXCEPTION 'payment % was refunded', pay.stripe_id
                USING ERRCODE = 'TG010', CONSTRAINT = 'transaction_payment_not_refunded';
        END IF;
        -- A payment for an action entitles that action; it cannot also become credits.
        IF pay.purpose IS NOT NULL AND pay.purpose <> 'credits' THEN
            RAISE EXCEPTION 'payment % pays for %: it cannot back a transaction', pay.stripe_id, pay.purpose
                USING ERRCODE = 'check_violation', CONSTRAINT = 'transaction_matches_payment';
        END IF;
    END IF;
    INSERT INTO tollgate.transactions (account_uuid, reference, amount, currency, payment_intent_id)
    VALUES (p_account_uuid, p_reference, p_amount, p_currency, pay.id)
    RETURNING id INTO txn;
    -- Linked to a payment that already finished: follow it now, unless a risk review holds the
    -- transaction (approving it settles it then).
    IF pay.status = 'canceled' OR (pay.status = 'succeeded' AND NOT tollgate.under_review(txn)) THEN
        UPDATE tollgate.transactions
        SET status = CASE pay.status WHEN 'succeeded' THEN 'settled' ELSE 'failed' END::tollgate.transaction_status
        WHERE id = txn;
    END IF;
    RETURN txn;
END
$$;

-- Record a pending transaction of p_amount (a decimal, e.g. 1250.50) for an account, linked
-- to a payment (its id or pi_...) of the same account if p_payment is set. The reference is
-- unique per account (23505, transactions_account_reference_key).
CREATE OR REPLACE FUNCTION api.create_transaction_v1(
    p_api_key text, p_account text, p_reference text, p_amount numeric, p_currency text,
    p_payment text
) RETURNS SETOF tollgate.transaction_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k     tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct  tollgate.accounts := tollgate.account_for(k, p_account);
    minor bigint := tollgate.to_minor(p_amount, p_currency);
    pay   uuid;
    txn   uuid;
BEGIN
    IF p_payment IS NOT NULL THEN
        SELECT p.id INTO pay FROM tollgate.payment_intents p
        WHERE p.account_uuid = acct.id AND (p.stripe_id = p_payment OR p.id::text = lower(p_payment));
        IF NOT FOUND THEN
            RAISE EXCEPTION 'payment % not found', p_payment
                USING ERRCODE = 'TG003', CONSTRAINT = 'payment_visible';
        END IF;
    END IF;
    txn := tollgate.create_transaction(acct.id, p_reference, minor, p_currency, pay);
    RETURN QUERY SELECT * FROM tollgate.transaction_v1 v WHERE v.id = txn;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.transaction_by_reference(p_key tollgate.api_keys, p_account text, p_reference text)
RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct tollgate.accounts := tollgate.account_for(p_key, p_account);
    txn  uuid;
BEGIN
    SELECT t.id INTO txn FROM tollgate.transactions t
    WHERE t.account_uuid = acct.id AND t.reference = p_reference;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transaction % not found', p_reference
            USING ERRCODE = 'TG003', CONSTRAINT = 'transaction_visible';
    END IF;
    RETURN txn;
END
$$;

-- A transaction by reference, in the key's own account (or p_account, for admin keys).
-- plpgsql, so the lookup (which raises TG003) runs first: as a condition in a SQL function's
-- WHERE it would never be evaluated while the view is empty, answering no row instead.
CREATE OR REPLACE FUNCTION api.get_transaction_v1(p_api_key text, p_account text, p_reference text)
RETURNS SETOF tollgate.transaction_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    txn uuid := tollgate.transaction_by_reference(
        tollgate.authenticate(p_api_key), p_account, p_reference);
BEGIN
    RETURN QUERY SELECT v.* FROM tollgate.transaction_v1 v WHERE v.id = txn;
END
$$;

-- An account's transactions, newest first: at most p_limit (1-500), optionally of one status,
-- and after p_before (the last id of the previous page; one that is not the account's is
-- refused, page_cursor).
CREATE OR REPLACE FUNCTION api.list_transactions_v1(
    p_api_key text, p_account text, p_status text, p_limit integer, p_before uuid
) RETURNS SETOF tollgate.transaction_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct   tollgate.accounts := tollgate.account_for(tollgate.authenticate(p_api_key), p_account);
    wanted tollgate.transaction_status := p_status::tollgate.transaction_status;
    after  tollgate.transactions;
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    IF p_before IS NOT NULL THEN
        SELECT * INTO after FROM tollgate.transactions t WHERE t.id = p_before AND t.account_uuid = acct.id;
        IF NOT FOUND THEN
            PERFORM tollgate.refuse_cursor('transaction', p_before::text);
        END IF;
    END IF;
    RETURN QUERY
    SELECT v.* FROM tollgate.transaction_v1 v
    WHERE v.id IN (SELECT t.id FROM tollgate.transactions t
                   WHERE t.account_uuid = acct.id
                     AND (wanted IS NULL OR t.status = wanted)
                     AND (after.id IS NULL OR (t.created_at, t.id) < (after.created_at, after.id))
                   ORDER BY t.created_at DESC, t.id DESC
                   LIMIT p_limit)
    ORDER BY v.created_at DESC, v.id DESC;
END
$$;

-- Move a transaction to settled, failed or reversed; the triggers decide whether it may.
-- Settling credits an account, so only admin keys (the downstream service that knows the money
-- arrived) move transactions; and a transaction linked to a Stripe payment moves only with it.
CREATE OR REPLACE FUNCTION api.move_transaction_v1(
    p_api_key text, p_account text, p_reference text, p_status text
) RETURNS SETOF tollgate.transaction_v1
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k   tollgate.api_keys := tollgate.authenticate(p_api_key);
    txn tollgate.transactions;
BEGIN
    IF NOT k.is_admin THEN
        RAISE EXCEPTION 'only an admin key may settle, fail or reverse a transaction'
            USING ERRCODE = 'TG002', CONSTRAINT = 'admin_key';
    END IF;
    SELECT * INTO STRICT txn FROM tollgate.transactions t
    WHERE t.id = tollgate.transaction_by_reference(k, p_account, p_reference);
    IF txn.payment_intent_id IS NOT NULL AND txn.status::text <> p_status THEN
        RAISE EXCEPTION 'transaction % follows its Stripe payment: it cannot be moved by hand', p_reference
            USING ERRCODE = 'TG010', CONSTRAINT = 'transaction_follows_payment';
    END IF;
    UPDATE tollgate.transactions SET status = p_status::tollgate.transaction_status WHERE id = txn.id;
    RETURN QUERY SELECT * FROM tollgate.transaction_v1 v WHERE v.id = txn.id;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.transaction_transitions ---

CREATE OR REPLACE TRIGGER transaction_transitions_reference_data
    BEFORE INSERT OR UPDATE OR DELETE ON tollgate.transaction_transitions
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

CREATE OR REPLACE TRIGGER transaction_transitions_reference_data_truncate
    BEFORE TRUNCATE ON tollgate.transaction_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change('reference_data', 'reference data changes only in a migration');

-- --- tollgate.transactions ---

CREATE OR REPLACE TRIGGER transactions_05_start
    BEFORE INSERT ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.transactions_start();

CREATE OR REPLACE TRIGGER transactions_10_keep_columns
    BEFORE UPDATE ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'account_uuid', 'reference', 'amount', 'currency', 'payment_intent_id', 'created_at');

CREATE OR REPLACE TRIGGER transactions_20_transition
    BEFORE UPDATE ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.check_transition('transaction_transitions', 'transaction');

CREATE OR REPLACE TRIGGER transactions_25_review_gate
    BEFORE UPDATE ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.transactions_review_gate();

CREATE OR REPLACE TRIGGER transactions_30_post
    BEFORE UPDATE ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.transactions_post();

CREATE OR REPLACE TRIGGER transactions_40_flag
    AFTER INSERT ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.flag_for_review();

CREATE OR REPLACE TRIGGER transactions_50_status_changed
    AFTER INSERT OR UPDATE OF status ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.transactions_status_changed();

CREATE OR REPLACE TRIGGER transactions_60_after_settlement
    AFTER UPDATE OF status ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.transactions_after_settlement();

CREATE OR REPLACE TRIGGER transactions_no_delete
    BEFORE DELETE ON tollgate.transactions
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER transactions_no_truncate
    BEFORE TRUNCATE ON tollgate.transactions
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();
