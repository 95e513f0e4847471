-- Refunds, disputes and debts: taking back what a payment granted.
--
-- What Stripe takes back from a payment ("clawed"): what it refunded (payment_intents.
-- amount_refunded, from charge.refunded's amount_refunded, or the whole amount once refunded in
-- full) plus the disputes it lost, at most the payment's amount. What a payment granted:
--   - credits (purpose "credits"): its linked transaction's amount, once settled. A refund takes
--     back as many credits as were refunded (a credits payment's transaction is its amount).
--     They come from the disputed (frozen) credits of the payment first, then from what the
--     wallet holds beyond its active holds (credits held for authorized work are not taken),
--     and the rest, already spent, is recorded as debt: a posting to the account's "debt"
--     ledger account, whose balance (never above zero) is what the account owes. A balance
--     never goes negative otherwise. Money that settles for the account later pays the debt
--     first (posting kind debt_repayment).
--   - a paid run (any other purpose): taken back (uses_left 0) once what is left paid no longer
--     covers the action's price. A run already used is not turned into debt: Tollgate's ledger
--     never held that money, and the run was delivered.
-- An open dispute freezes what the payment granted: its credits still in the wallet move to the
-- account's "disputed" ledger account (kind dispute), its paid run cannot be used. Won: released.
-- Lost: taken back like a refund of the disputed amount.
--
-- Refunds Tollgate asked for and disputes Stripe reported are kept here; payment_intents.
-- amount_refunded lives with the payment (30-payments.sql).

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

-- Stripe's refund statuses.
CREATE TYPE tollgate.refund_status AS ENUM (
    'pending',          -- asked for; Stripe has not finished it
    'requires_action',  -- Stripe needs the customer (some payment methods)
    'succeeded',        -- the money went back to the customer
    'failed',           -- terminal: Stripe could not refund
    'canceled'          -- terminal: canceled before it went through
);

-- One row per refund request, written in the transaction that calls Stripe, so a failed call
-- leaves nothing. It is also the idempotency record: (account, key) once, same body only.
-- The money is applied from Stripe's events (charge.refunded), not from this row.
CREATE TABLE tollgate.refunds (
    -- Derived from (account, idempotency key): a retry after a failure reuses the id.
    id                 uuid        PRIMARY KEY,
    -- The payment's account (idempotency keys are per account, as for payments).
    account_uuid         uuid        NOT NULL CONSTRAINT refunds_account_uuid_fkey REFERENCES tollgate.accounts,
    payment_intent_id  uuid        NOT NULL CONSTRAINT refunds_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    amount             tollgate.amount_minor NOT NULL,
    currency           text        NOT NULL CONSTRAINT refunds_currency_fkey REFERENCES tollgate.currencies,
    idempotency_key    text        NOT NULL CONSTRAINT refunds_idempotency_key_format CHECK (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    -- SHA-256 of the normalised request (payment and amount): another body is refused.
    request_hash       bytea       NOT NULL,
    -- The admin key that asked.
    requested_by       uuid        NOT NULL CONSTRAINT refunds_requested_by_fkey REFERENCES tollgate.api_keys,
    -- Stripe's refund (re_...), once Stripe answered.
    stripe_id          text        CONSTRAINT refunds_stripe_id_key UNIQUE
                                   CONSTRAINT refunds_stripe_id_format CHECK (stripe_id ~ '^re_[A-Za-z0-9_]{1,250}$'),
    status             tollgate.refund_status NOT NULL DEFAULT 'pending',
    -- The creation time of the last refund event applied to this row: older ones are stale.
    last_event_at      timestamptz,
    -- The response first sent; a replay sends it again.
    response           jsonb,
    completed_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refunds_account_idempotency_key UNIQUE (account_uuid, idempotency_key),
    CONSTRAINT refunds_completed_has_response CHECK ((completed_at IS NULL) = (response IS NULL)),
    CONSTRAINT refunds_completed_has_stripe_id CHECK (completed_at IS NULL OR stripe_id IS NOT NULL)
);
CREATE INDEX refunds_payment_intent_idx ON tollgate.refunds (payment_intent_id);
COMMENT ON TABLE tollgate.refunds IS 'Refunds asked of Stripe through Tollgate; their money is applied from Stripe''s events.';

-- ---------------------------------------------------------------------------------------------
-- Disputes (charge.dispute.* events)
-- ---------------------------------------------------------------------------------------------

CREATE TYPE tollgate.dispute_status AS ENUM (
    'open',  -- Stripe has withdrawn (or may withdraw) the money: what the payment granted is frozen
    'won',   -- terminal: the money came back; what was frozen is released
    'lost'   -- terminal: the money is gone; what the payment granted is taken back like a refund
);

CREATE TABLE tollgate.disputes (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid         uuid        NOT NULL CONSTRAINT disputes_account_uuid_fkey REFERENCES tollgate.accounts,
    payment_intent_id  uuid        NOT NULL CONSTRAINT disputes_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    stripe_id          text        NOT NULL CONSTRAINT disputes_stripe_id_key UNIQUE
                                   CONSTRAINT disputes_stripe_id_format CHECK (stripe_id ~ '^(dp|du)_[A-Za-z0-9_]{1,250}$'),
    -- The disputed amount, in ISO minor units.
    amount             tollgate.amount_minor NOT NULL,
    currency           text        NOT NULL CONSTRAINT disputes_currency_fkey REFERENCES tollgate.currencies,
    status             tollgate.dispute_status NOT NULL,
    -- Stripe's own status (needs_response, under_review, won, lost, ...).
    stripe_status      text        NOT NULL,
    -- Credits moved from the wallet to the account's "disputed" ledger account while open.
    frozen             bigint      NOT NULL DEFAULT 0 CONSTRAINT disputes_frozen_non_negative CHECK (frozen >= 0),
    last_event_id      text        NOT NULL,
    last_event_at      timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disputes_payment_intent_idx ON tollgate.disputes (payment_intent_id);
COMMENT ON TABLE tollgate.disputes IS 'Stripe disputes of payments Tollgate created: open ones freeze what the payment granted.';

-- ---------------------------------------------------------------------------------------------
-- Taking back what a payment granted
-- ---------------------------------------------------------------------------------------------

-- One row per taking back (append-only): how much of the payment's credits, from where, and
-- the posting that did it. Their sum per payment is what has been taken back so far.
CREATE TABLE tollgate.payment_takebacks (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_uuid         uuid        NOT NULL CONSTRAINT payment_takebacks_account_uuid_fkey REFERENCES tollgate.accounts,
    payment_intent_id  uuid        NOT NULL CONSTRAINT payment_takebacks_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    currency           text        NOT NULL CONSTRAINT payment_takebacks_currency_fkey REFERENCES tollgate.currencies,
    -- refund: Stripe refunded (part of) the payment; dispute_lost: a dispute of it was lost.
    reason             text        NOT NULL CONSTRAINT payment_takebacks_reason_values CHECK (reason IN ('refund', 'dispute_lost')),
    amount             tollgate.amount_minor NOT NULL,
    from_disputed      bigint      NOT NULL
                       CONSTRAINT payment_takebacks_parts_non_negative
                       CHECK (from_disputed >= 0 AND from_wallet >= 0 AND as_debt >= 0),
    from_wallet        bigint      NOT NULL,
    -- Already spent: recorded as the account's debt.
    as_debt            bigint      NOT NULL,
    posting_id         uuid        NOT NULL CONSTRAINT payment_takebacks_posting_id_fkey REFERENCES tollgate.ledger_postings
                                   CONSTRAINT payment_takebacks_posting_id_key UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_takebacks_parts_sum CHECK (amount = from_disputed + from_wallet + as_debt)
);
CREATE INDEX payment_takebacks_payment_intent_idx ON tollgate.payment_takebacks (payment_intent_id);
COMMENT ON TABLE tollgate.payment_takebacks IS 'Credits taken back because their payment was refunded or lost a dispute.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- What was granted, what Stripe took back
-- ---------------------------------------------------------------------------------------------

-- Is a dispute of the payment open? Its paid run cannot be used, its credits are frozen.
CREATE OR REPLACE FUNCTION tollgate.payment_disputed(p_payment_intent_id uuid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM tollgate.disputes d
                   WHERE d.payment_intent_id = p_payment_intent_id AND d.status = 'open')
$$;

-- What Stripe has taken back from the payment: refunds and lost disputes, at most its amount.
CREATE OR REPLACE FUNCTION tollgate.payment_clawed(p_payment tollgate.payment_intents) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least(p_payment.amount::bigint,
                 CASE WHEN p_payment.status = 'refunded' THEN p_payment.amount::bigint
                      ELSE p_payment.amount_refunded END
                 + coalesce((SELECT sum(d.amount) FROM tollgate.disputes d
                             WHERE d.payment_intent_id = p_payment.id AND d.status = 'lost'), 0)::bigint)
$$;

-- What a refund or a freeze may take from a wallet: its balance beyond its active holds, and
-- never below zero (the caller holds the wallet's lock and has expired its old holds).
CREATE OR REPLACE FUNCTION tollgate.spare_credits(p_wallet uuid) RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT greatest(la.balance - coalesce((SELECT sum(h.amount) FROM tollgate.holds h
                                           WHERE h.ledger_account_id = la.id AND h.status = 'active'
                                             AND h.expires_at > now()), 0), 0)::bigint
    FROM tollgate.ledger_accounts la WHERE la.id = p_wallet
$$;

-- The account's wallet in the currency, locked (every credit path locks the wallet first).
CREATE OR REPLACE FUNCTION tollgate.locked_wallet(p_account_uuid uuid, p_currency text) RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wallet uuid := tollgate.ledger_account(p_account_uuid, 'main', p_currency);
BEGIN
    PERFORM FROM tollgate.ledger_accounts WHERE id = wallet FOR UPDATE;
    PERFORM tollgate.expire_holds(wallet);
    RETURN wallet;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Taking back
-- ---------------------------------------------------------------------------------------------

-- The part of a take back that comes from what disputes of the payment froze: up to p_amount,
-- the oldest dispute first (their rows locked in that order), each one's frozen lowered by
-- what it gives. Returns how much they gave.
CREATE OR REPLACE FUNCTION tollgate.take_back_frozen(p_payment_intent_id uuid, p_amount bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      record;
    part   bigint;
    frozen bigint := 0;
BEGIN
    FOR d IN SELECT x.id, x.frozen FROM tollgate.disputes x
             WHERE x.payment_intent_id = p_payment_intent_id AND x.frozen > 0
             ORDER BY x.created_at, x.id FOR UPDATE LOOP
        part := least(p_amount - frozen, d.frozen);
        EXIT WHEN part = 0;
        UPDATE tollgate.disputes SET frozen = disputes.frozen - part WHERE id = d.id;
        frozen := frozen + part;
    END LOOP;
    RETURN frozen;
END
$$;

-- Record a take back of the payment's credits: one posting (kind refund) that gives the
-- payment's clearing account all of it and takes p_frozen from the account's disputed
-- credits, p_spare from its wallet (p_wallet) and p_debt as debt; its payment_takebacks row;
-- its audit row; and the announcements: credits.taken_back, and debt.recorded when there is
-- debt. p_reason: refund or dispute_lost.
CREATE OR REPLACE FUNCTION tollgate.record_takeback(
    p_payment tollgate.payment_intents, p_reason text, p_wallet uuid,
    p_frozen bigint, p_spare bigint, p_debt bigint
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    step     bigint := p_frozen + p_spare + p_debt;
    accts    uuid[] := ARRAY[tollgate.clearing_account(p_payment.currency)];
    amounts  bigint[] := ARRAY[step];
    posting  uuid;
BEGIN
    IF p_frozen > 0 THEN
        accts := accts || tollgate.ledger_account(p_payment.account_uuid, 'disputed', p_payment.currency);
        amounts := amounts || -p_frozen;
    END IF;
    IF p_spare > 0 THEN
        accts := accts || p_wallet;
        amounts := amounts || -p_spare;
    END IF;
    IF p_debt > 0 THEN
        accts := accts || tollgate.ledger_account(p_payment.account_uuid, 'debt', p_payment.currency, true);
        amounts := amounts || -p_debt;
    END IF;
    posting := tollgate.post(p_payment.account_uuid, 'refund', accts, amounts);
    INSERT INTO tollgate.payment_takebacks
        (account_uuid, payment_intent_id, currency, reason, amount, from_disputed, from_wallet, as_debt, posting_id)
    VALUES (p_payment.account_uuid, p_payment.id, p_payment.currency, p_reason, step, p_frozen, p_spare, p_debt, posting);
    PERFORM tollgate.audit(p_payment.account_uuid, 'payment_intent', p_payment.id::text, 'credits_taken_back', NULL,
                           tollgate.format_minor(step, p_payment.currency),
                           format('%s: %s from disputed credits, %s from the wallet, %s as debt', p_reason,
                                  tollgate.format_minor(p_frozen, p_payment.currency),
                                  tollgate.format_minor(p_spare, p_payment.currency),
                                  tollgate.format_minor(p_debt, p_payment.currency)));
    PERFORM tollgate.emit(p_payment.account_uuid, 'credits.taken_back',
        jsonb_build_object('payment_id', p_payment.id, 'stripe_id', p_payment.stripe_id, 'reason', p_reason,
                           'currency', p_payment.currency, 'amount', step, 'from_disputed', p_frozen,
                           'from_wallet', p_spare, 'as_debt', p_debt, 'posting_id', posting));
    IF p_debt > 0 THEN
        PERFORM tollgate.emit(p_payment.account_uuid, 'debt.recorded',
            jsonb_build_object('payment_id', p_payment.id, 'currency', p_payment.currency, 'amount', p_debt,
                               'owed', -(SELECT la.balance FROM tollgate.ledger_accounts la
                                         WHERE la.account_uuid = p_payment.account_uuid AND la.name = 'debt'
                                           AND la.currency = p_payment.currency)));
    END IF;
END
$$;

-- Bring what was taken back from a payment up to what Stripe took back (idempotent: a second
-- call finds nothing left to do). p_reason names what moved it: refund or dispute_lost.
CREATE OR REPLACE FUNCTION tollgate.take_back(p_payment_intent_id uuid, p_reason text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pay      tollgate.payment_intents;
    txn      tollgate.transactions;
    clawed   bigint;
    done     bigint;
    step     bigint;
    wallet   uuid;
    frozen   bigint;
    spare    bigint;
BEGIN
    SELECT * INTO STRICT pay FROM tollgate.payment_intents WHERE id = p_payment_intent_id;
    clawed := tollgate.payment_clawed(pay);
    IF clawed = 0 THEN
        RETURN 0;
    END IF;

    -- A paid run stays only while what is left paid still covers the action's price.
    IF pay.purpose IS NOT NULL AND pay.purpose <> 'credits' THEN
        UPDATE tollgate.payment_entitlements e SET uses_left = 0
        WHERE e.payment_intent_id = pay.id AND e.uses_left > 0
          AND (pay.amount - clawed = 0
               OR EXISTS (SELECT FROM tollgate.actions a
                          WHERE a.name = pay.purpose AND a.price > pay.amount - clawed));
        RETURN 0;
    END IF;

    -- Credits: only what settled was granted (a reversed transaction was taken back whole).
    SELECT * INTO txn FROM tollgate.transactions t WHERE t.payment_intent_id = pay.id FOR UPDATE;
    IF NOT FOUND OR txn.status <> 'settled' THEN
        RETURN 0;
    END IF;
    SELECT coalesce(sum(tb.amount), 0) INTO done FROM tollgate.payment_takebacks tb
    WHERE tb.payment_intent_id = pay.id;
    step := least(txn.amount::bigint, clawed) - done;
    IF step <= 0 THEN
        RETURN 0;
    END IF;

    wallet := tollgate.locked_wallet(pay.account_uuid, pay.currency);
    -- 1. What a dispute of this payment froze.
    frozen := tollgate.take_back_frozen(pay.id, step);
    -- 2. What the wallet can spare; 3. the rest was spent: a debt.
    spare := least(step - frozen, tollgate.spare_credits(wallet));
    PERFORM tollgate.record_takeback(pay, p_reason, wallet, frozen, spare, step - frozen - spare);
    -- All of it taken back: the transaction is reversed (by these postings).
    IF done + step = txn.amount THEN
        UPDATE tollgate.transactions SET status = 'reversed' WHERE id = txn.id;
    END IF;
    RETURN step;
END
$$;

-- The posting that completed taking back a payment's transaction in full: a payment's
-- transaction is reversed by its takebacks, not by the mirror image of its settlement. NULL
-- when not all of it was taken back.
CREATE OR REPLACE FUNCTION tollgate.takeback_reversal(p_transaction tollgate.transactions) RETURNS uuid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (array_agg(tb.posting_id ORDER BY tb.id DESC))[1]
    FROM tollgate.payment_takebacks tb
    WHERE tb.payment_intent_id = p_transaction.payment_intent_id
    HAVING sum(tb.amount) = p_transaction.amount
$$;

-- Money settled for an account pays its debt in the currency first.
CREATE OR REPLACE FUNCTION tollgate.repay_debt(p_account_uuid uuid, p_currency text, p_available bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    debt_acct tollgate.ledger_accounts;
    wallet    uuid;
    paid      bigint;
BEGIN
    SELECT * INTO debt_acct FROM tollgate.ledger_accounts la
    WHERE la.account_uuid = p_account_uuid AND la.name = 'debt' AND la.currency = p_currency;
    IF NOT FOUND OR debt_acct.balance >= 0 THEN
        RETURN 0;
    END IF;
    wallet := tollgate.locked_wallet(p_account_uuid, p_currency);
    paid := least(-debt_acct.balance, p_available, tollgate.spare_credits(wallet));
    IF paid <= 0 THEN
        RETURN 0;
    END IF;
    PERFORM tollgate.post(p_account_uuid, 'debt_repayment', ARRAY[wallet, debt_acct.id], ARRAY[-paid, paid]);
    PERFORM tollgate.emit(p_account_uuid, 'debt.repaid',
        jsonb_build_object('currency', p_currency, 'amount', paid, 'owed', -debt_acct.balance - paid));
    RETURN paid;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tollgate.payment_refunded_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status = 'refunded' THEN
        NEW.amount_refunded := NEW.amount;
    END IF;
    IF NEW.amount_refunded < OLD.amount_refunded THEN
        RAISE EXCEPTION 'payment %: what Stripe refunded only grows (% -> %)', OLD.id,
                OLD.amount_refunded, NEW.amount_refunded
            USING ERRCODE = 'TG011', CONSTRAINT = 'payment_intents_refunded_forward',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'amount_refunded';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.payment_take_back() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.status, NEW.amount_refunded) IS DISTINCT FROM (OLD.status, OLD.amount_refunded) THEN
        PERFORM tollgate.take_back(NEW.id, 'refund');
    END IF;
    RETURN NULL;
END
$$;

-- A transaction that settles: if its payment was refunded in the meantime (a settlement a
-- review held), take that back; then pay the account's debt from what arrived.
CREATE OR REPLACE FUNCTION tollgate.transactions_after_settlement() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken bigint := 0;
BEGIN
    IF NEW.status <> 'settled' OR OLD.status = 'settled' THEN
        RETURN NULL;
    END IF;
    IF NEW.payment_intent_id IS NOT NULL THEN
        taken := tollgate.take_back(NEW.payment_intent_id, 'refund');
    END IF;
    IF taken < NEW.amount THEN
        PERFORM tollgate.repay_debt(NEW.account_uuid, NEW.currency, NEW.amount - taken);
    END IF;
    RETURN NULL;
END
$$;

-- A debt account holds what the account owes: never money of its own.
CREATE OR REPLACE FUNCTION tollgate.debt_not_positive() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'ledger account %: a debt is paid back to zero, never beyond', OLD.id
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_debt_not_positive',
              SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'balance';
END
$$;

-- A disputed payment's paid run is frozen: not used until the dispute is won. (A use stamps
-- used_at; taking the run back does not.)
CREATE OR REPLACE FUNCTION tollgate.entitlements_dispute_gate() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.used_at IS DISTINCT FROM OLD.used_at AND tollgate.payment_disputed(NEW.payment_intent_id) THEN
        RAISE EXCEPTION 'payment % is disputed: its run is frozen until the dispute is won', NEW.payment_intent_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_dispute_open',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$;

-- Refunds: the request never changes; Stripe's id and the response are set once.
CREATE OR REPLACE FUNCTION tollgate.refunds_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.status := 'pending';
        NEW.stripe_id := NULL;
        NEW.response := NULL;
        NEW.completed_at := NULL;
        NEW.last_event_at := NULL;
        NEW.created_at := now();
        NEW.updated_at := now();
        PERFORM tollgate.audit(NEW.account_uuid, 'refund', NEW.id::text, 'created', NULL,
                               tollgate.format_minor(NEW.amount, NEW.currency),
                               format('payment %s', NEW.payment_intent_id));
        RETURN NEW;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'refund', NEW.id::text, 'status_changed',
                               OLD.status::text, NEW.status::text);
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.disputes_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
        NEW.updated_at := now();
        PERFORM tollgate.audit(NEW.account_uuid, 'dispute', NEW.stripe_id, 'created', NULL, NEW.status::text,
                               format('payment %s, %s %s', NEW.payment_intent_id,
                                      tollgate.format_minor(NEW.amount, NEW.currency), NEW.currency));
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.account_uuid, NEW.payment_intent_id, NEW.stripe_id, NEW.amount, NEW.currency, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.account_uuid, OLD.payment_intent_id, OLD.stripe_id, OLD.amount, OLD.currency, OLD.created_at) THEN
        RAISE EXCEPTION 'dispute %: only its status and what it froze change', OLD.stripe_id
            USING ERRCODE = 'TG011', CONSTRAINT = 'disputes_identity_immutable';
    END IF;
    IF OLD.status <> 'open' AND NEW.status <> OLD.status THEN
        RAISE EXCEPTION 'dispute % is % already', OLD.stripe_id, OLD.status
            USING ERRCODE = 'TG010', CONSTRAINT = 'dispute_transition_allowed';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'dispute', NEW.stripe_id, 'status_changed',
                               OLD.status::text, NEW.status::text);
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- What a dispute does, whoever writes its row: open freezes, won releases, lost takes back
-- (then releases what the lost amount did not need); each change is announced.
CREATE OR REPLACE FUNCTION tollgate.disputes_follow() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    frozen bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'open' THEN
        PERFORM tollgate.freeze_for_dispute(NEW.id);
    ELSIF NEW.status = 'won' THEN
        PERFORM tollgate.release_dispute(NEW.id);
    ELSE
        PERFORM tollgate.take_back(NEW.payment_intent_id, 'dispute_lost');
        PERFORM tollgate.release_dispute(NEW.id);
    END IF;
    SELECT d.frozen INTO STRICT frozen FROM tollgate.disputes d WHERE d.id = NEW.id;
    PERFORM tollgate.emit(NEW.account_uuid, 'payment.dispute_' || NEW.status::text,
        jsonb_build_object('payment_id', NEW.payment_intent_id, 'dispute_id', NEW.stripe_id,
                           'amount', NEW.amount, 'currency', NEW.currency, 'frozen', frozen));
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Disputes: freeze, release
-- ---------------------------------------------------------------------------------------------

-- Freeze what the payment granted and is still in the wallet (beyond active holds): the
-- credits move to the account's "disputed" ledger account, where nothing can spend them.
CREATE OR REPLACE FUNCTION tollgate.freeze_for_dispute(p_dispute_id uuid) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d       tollgate.disputes;
    granted bigint;
    held    bigint;
    wallet  uuid;
    part    bigint;
BEGIN
    SELECT * INTO STRICT d FROM tollgate.disputes WHERE id = p_dispute_id FOR UPDATE;
    SELECT t.amount INTO granted FROM tollgate.transactions t
    WHERE t.payment_intent_id = d.payment_intent_id AND t.status = 'settled';
    IF granted IS NULL THEN
        RETURN 0;
    END IF;
    -- Less what was taken back already, and what other disputes of it froze.
    granted := granted
        - coalesce((SELECT sum(tb.amount) FROM tollgate.payment_takebacks tb
                    WHERE tb.payment_intent_id = d.payment_intent_id), 0)
        - coalesce((SELECT sum(x.frozen) FROM tollgate.disputes x
                    WHERE x.payment_intent_id = d.payment_intent_id AND x.id <> d.id), 0);
    wallet := tollgate.locked_wallet(d.account_uuid, d.currency);
    part := least(granted, d.amount, tollgate.spare_credits(wallet));
    IF part <= 0 THEN
        RETURN 0;
    END IF;
    PERFORM tollgate.post(d.account_uuid, 'dispute',
                          ARRAY[wallet, tollgate.ledger_account(d.account_uuid, 'disputed', d.currency)],
                          ARRAY[-part, part]);
    UPDATE tollgate.disputes SET frozen = disputes.frozen + part WHERE id = d.id;
    RETURN part;
END
$$;

-- Give back what a dispute froze (won, or what a lost one did not take).
CREATE OR REPLACE FUNCTION tollgate.release_dispute(p_dispute_id uuid) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d      tollgate.disputes;
    wallet uuid;
BEGIN
    SELECT * INTO STRICT d FROM tollgate.disputes WHERE id = p_dispute_id FOR UPDATE;
    IF d.frozen = 0 THEN
        RETURN 0;
    END IF;
    wallet := tollgate.locked_wallet(d.account_uuid, d.currency);
    PERFORM tollgate.post(d.account_uuid, 'dispute',
                          ARRAY[tollgate.ledger_account(d.account_uuid, 'disputed', d.currency), wallet],
                          ARRAY[-d.frozen, d.frozen]);
    UPDATE tollgate.disputes SET frozen = 0 WHERE id = d.id;
    RETURN d.frozen;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Stripe events about a payment's charge: partial refunds, refunds, disputes
-- ---------------------------------------------------------------------------------------------

-- A partial refund (charge.refunded, not in full) of p_payment, locked: amount_refunded is
-- what Stripe refunded of it so far, in its units. Applied: the payment's amount_refunded
-- grows to it (a refund implies the payment succeeded, as for a full refund); stale when it
-- was counted already; rejected when its money is not the payment's or the payment cannot
-- have been refunded. why: the note for the event.
CREATE OR REPLACE FUNCTION tollgate.apply_partial_refund(
    p_object jsonb, p_payment tollgate.payment_intents,
    OUT outcome tollgate.event_state, OUT why text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refunded bigint;
BEGIN
    outcome := 'applied';
    why := tollgate.stripe_amount_mismatch(p_object, p_payment);
    IF jsonb_typeof(p_object -> 'amount_refunded') = 'number' THEN
        refunded := tollgate.from_stripe_amount((p_object ->> 'amount_refunded')::numeric, p_payment.currency);
    END IF;
    IF why IS NULL AND (refunded IS NULL OR refunded > p_payment.amount) THEN
        why := format('amount_refunded %s (Stripe''s units) is not a part of %s %s',
                      coalesce(p_object ->> 'amount_refunded', 'missing'),
                      tollgate.format_minor(p_payment.amount, p_payment.currency), p_payment.currency);
    END IF;
    IF why IS NOT NULL THEN
        outcome := 'rejected';
    ELSIF p_payment.status = 'refunded' OR refunded <= p_payment.amount_refunded THEN
        outcome := 'stale';
        why := format('%s refunded already counted', tollgate.format_minor(p_payment.amount_refunded, p_payment.currency));
    ELSIF p_payment.status <> 'succeeded' AND NOT EXISTS (
        SELECT FROM tollgate.payment_transitions WHERE from_status = p_payment.status AND to_status = 'succeeded') THEN
        outcome := 'rejected';
        why := format('a %s payment cannot have been refunded', p_payment.status);
    ELSE
        IF p_payment.status <> 'succeeded' THEN
            -- A refund implies the payment succeeded, as for a full refund.
            UPDATE tollgate.payment_intents SET status = 'succeeded' WHERE id = p_payment.id;
            why := format('a refund implies the payment succeeded (was %s)', p_payment.status);
        END IF;
        UPDATE tollgate.payment_intents
        SET amount_refunded = refunded,
            status = CASE WHEN refunded = p_payment.amount THEN 'refunded' ELSE 'succeeded' END::tollgate.payment_status
        WHERE id = p_payment.id;
    END IF;
END
$$;

-- A refund.* or charge.refund.updated event (p_event, its object p_object) of p_payment,
-- locked: a refund Tollgate asked for takes the event's status unless the event is older than
-- the last one applied or the refund is final (stale); a succeeded one is counted
-- (tollgate.count_refunds). Another refund is ignored: charge.refunded counts its money.
CREATE OR REPLACE FUNCTION tollgate.apply_refund_event(
    p_event tollgate.payment_events, p_object jsonb, p_payment tollgate.payment_intents,
    OUT outcome tollgate.event_state, OUT why text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r_status tollgate.refund_status;
BEGIN
    outcome := 'applied';
    SELECT s.enumlabel::tollgate.refund_status INTO r_status FROM pg_enum s
    WHERE s.enumtypid = 'tollgate.refund_status'::regtype AND s.enumlabel = p_object ->> 'status';
    UPDATE tollgate.refunds r
    SET status = coalesce(r_status, r.status), last_event_at = p_event.stripe_created
    WHERE r.stripe_id = p_object ->> 'id' AND r.payment_intent_id = p_payment.id
      AND (r.last_event_at IS NULL OR r.last_event_at <= p_event.stripe_created)
      AND r.status NOT IN ('failed', 'canceled');
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM tollgate.refunds r WHERE r.stripe_id = p_object ->> 'id' AND r.payment_intent_id = p_payment.id) THEN
            outcome := 'stale';
            why := 'an older event of the refund, or the refund is final';
        ELSE
            outcome := 'ignored';
            why := 'not a refund Tollgate asked for: charge.refunded counts its money';
        END IF;
    ELSIF r_status = 'succeeded' THEN
        PERFORM tollgate.count_refunds(p_payment);
    END IF;
END
$$;

-- A charge.dispute.* event (p_event, its object p_object) of p_payment, locked: the dispute's
-- row is created, or moved to the event's status (warning_closed and won give the money back;
-- lost keeps it; any other status means it is, or may be, withdrawn), and its trigger does
-- the rest. Stale: older than the last event applied to it; rejected: its amount is not a
-- part of the payment's, it names no dispute or another payment's, the payment cannot be
-- disputed, or the dispute is final.
CREATE OR REPLACE FUNCTION tollgate.apply_dispute_event(
    p_event tollgate.payment_events, p_object jsonb, p_payment tollgate.payment_intents,
    OUT outcome tollgate.event_state, OUT why text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    amount   bigint;
    d_status tollgate.dispute_status;
    d        tollgate.disputes;
BEGIN
    outcome := 'applied';
    d_status := CASE p_object ->> 'status' WHEN 'won' THEN 'won' WHEN 'warning_closed' THEN 'won'
                                           WHEN 'lost' THEN 'lost' ELSE 'open' END;
    IF jsonb_typeof(p_object -> 'amount') = 'number' THEN
        amount := tollgate.from_stripe_amount((p_object ->> 'amount')::numeric, p_payment.currency);
    END IF;
    IF amount IS NULL OR amount <= 0 OR amount > p_payment.amount THEN
        outcome := 'rejected';
        why := format('disputed amount %s (Stripe''s units) is not a part of %s %s',
                      coalesce(p_object ->> 'amount', 'missing'),
                      tollgate.format_minor(p_payment.amount, p_payment.currency), p_payment.currency);
    ELSIF jsonb_typeof(p_object -> 'id') IS DISTINCT FROM 'string' OR p_object ->> 'id' !~ '^(dp|du)_[A-Za-z0-9_]{1,250}$' THEN
        outcome := 'rejected';
        why := 'the event names no dispute';
    ELSIF p_payment.status NOT IN ('succeeded', 'refunded') THEN
        outcome := 'rejected';
        why := format('a %s payment cannot be disputed', p_payment.status);
    ELSE
        SELECT * INTO d FROM tollgate.disputes x WHERE x.stripe_id = p_object ->> 'id' FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO tollgate.disputes (account_uuid, payment_intent_id, stripe_id, amount, currency, status,
                                           stripe_status, last_event_id, last_event_at)
            VALUES (p_payment.account_uuid, p_payment.id, p_object ->> 'id', amount, p_payment.currency, d_status,
                    coalesce(p_object ->> 'status', ''), p_event.id, p_event.stripe_created)
            RETURNING * INTO d;
        ELSIF d.payment_intent_id <> p_payment.id THEN
            outcome := 'rejected';
            why := format('dispute %s is about another payment', d.stripe_id);
        ELSIF p_event.stripe_created < d.last_event_at
              OR (p_event.stripe_created = d.last_event_at AND d_status = 'open' AND d.status <> 'open') THEN
            outcome := 'stale';
            why := format('older than %s (%s), already applied', d.last_event_id, d.last_event_at);
        ELSIF d.status <> 'open' AND d_status <> d.status THEN
            outcome := 'rejected';
            why := format('dispute %s is %s: final', d.stripe_id, d.status);
        ELSE
            UPDATE tollgate.disputes
            SET status = d_status, stripe_status = coalesce(p_object ->> 'status', disputes.stripe_status),
                last_event_id = p_event.id, last_event_at = p_event.stripe_created
            WHERE id = d.id;
        END IF;
    END IF;
END
$$;

-- Apply a stored charge.refunded (partial), refund.* / charge.refund.updated or
-- charge.dispute.* event to its payment. Returns the event's state (as apply_payment_event):
-- pending while the payment is unknown; applied; stale (nothing new: an amount already
-- counted, an older dispute event); rejected (its money is not the payment's, a final dispute
-- asked to change); ignored (a refund Tollgate did not ask for: charge.refunded counts it).
-- The caller holds tollgate.lock_stripe_object for the payment.
CREATE OR REPLACE FUNCTION tollgate.apply_charge_event(p_event_id text)
RETURNS tollgate.event_state
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev          tollgate.payment_events;
    obj         jsonb;
    pi          tollgate.payment_intents;
    outcome     tollgate.event_state;
    why         text;
    prev_actor  text := current_setting('tollgate.actor', true);
BEGIN
    SELECT * INTO STRICT ev FROM tollgate.payment_events WHERE id = p_event_id FOR UPDATE;
    IF ev.state <> 'pending' THEN
        RETURN ev.state;
    END IF;
    SELECT * INTO pi FROM tollgate.payment_intents WHERE stripe_id = ev.stripe_object_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'pending';
    END IF;
    PERFORM tollgate.set_actor('stripe:' || ev.id);
    obj := ev.payload -> 'data' -> 'object';

    IF jsonb_typeof(obj -> 'currency') = 'string' AND upper(obj ->> 'currency') <> pi.currency THEN
        outcome := 'rejected';
        why := format('Stripe says currency %s, the payment is in %s', upper(obj ->> 'currency'), pi.currency);
    ELSIF obj ->> 'object' = 'charge' THEN
        SELECT * INTO outcome, why FROM tollgate.apply_partial_refund(obj, pi);
    ELSIF obj ->> 'object' = 'refund' THEN
        SELECT * INTO outcome, why FROM tollgate.apply_refund_event(ev, obj, pi);
    ELSE
        SELECT * INTO outcome, why FROM tollgate.apply_dispute_event(ev, obj, pi);
    END IF;

    UPDATE tollgate.payment_events
    SET state = outcome, note = why, processed_at = now(),
        account_uuid = pi.account_uuid, payment_intent_id = pi.id
    WHERE id = ev.id;
    PERFORM tollgate.set_actor(coalesce(prev_actor, ''));
    RETURN outcome;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- api: refunds (admin keys)
-- ---------------------------------------------------------------------------------------------

-- How a refund looks to API callers (also the body stored for idempotent replays).
CREATE OR REPLACE VIEW tollgate.refund_v1 AS
SELECT r.id,
       r.payment_intent_id                          AS payment_id,
       p.stripe_id                                  AS payment_stripe_id,
       a.external_id                                AS account_id,
       r.stripe_id,
       tollgate.format_minor(r.amount, r.currency)  AS amount,
       r.amount::bigint                             AS amount_minor,
       r.currency,
       r.status::text                               AS status,
       r.created_at,
       r.updated_at
FROM tollgate.refunds r
JOIN tollgate.payment_intents p ON p.id = r.payment_intent_id
JOIN tollgate.accounts a ON a.id = r.account_uuid;

-- What a refund of p_payment (read again under its refund lock) takes: p_minor, or (NULL)
-- all that is not refunded yet; refunds asked for but not yet seen in an event count as
-- refunded. Refused: a payment that is not succeeded or was refunded in full
-- (refund_refundable), one with an open dispute (refund_payment_disputed), more than is not
-- yet refunded (refund_within_payment).
CREATE OR REPLACE FUNCTION tollgate.refund_amount(p_payment tollgate.payment_intents, p_minor bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unrefunded bigint;
BEGIN
    IF p_payment.status <> 'succeeded' THEN
        RAISE EXCEPTION 'payment % is %: only a succeeded payment can be refunded', p_payment.stripe_id, p_payment.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refund_refundable';
    END IF;
    IF tollgate.payment_disputed(p_payment.id) THEN
        RAISE EXCEPTION 'payment % is disputed: the dispute decides what goes back', p_payment.stripe_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refund_payment_disputed';
    END IF;
    unrefunded := p_payment.amount - greatest(p_payment.amount_refunded,
        (SELECT coalesce(sum(r.amount), 0) FROM tollgate.refunds r
         WHERE r.payment_intent_id = p_payment.id AND r.status IN ('pending', 'requires_action', 'succeeded')));
    IF unrefunded <= 0 THEN
        RAISE EXCEPTION 'payment % was refunded in full', p_payment.stripe_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refund_refundable';
    END IF;
    IF coalesce(p_minor, unrefunded) > unrefunded THEN
        RAISE EXCEPTION 'refunding % % is more than the % % of payment % not yet refunded',
                tollgate.format_minor(p_minor, p_payment.currency), p_payment.currency,
                tollgate.format_minor(unrefunded, p_payment.currency), p_payment.currency, p_payment.stripe_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refund_within_payment';
    END IF;
    RETURN coalesce(p_minor, unrefunded);
END
$$;

-- Step 1 of POST /v1/payments/{ref}/refunds, in the transaction that also calls Stripe and runs
-- step 2. Admin keys only. The amount is p_amount (a decimal in the payment's currency) or
-- p_amount_minor, not both; neither: all that is not refunded yet. Claims the idempotency key
-- for the payment's account:
--   new request          -> replayed = false, and what the Stripe call needs (stripe_amount in
--                           Stripe's units for the currency);
--   same key, same body  -> replayed = true and the stored response;
--   same key, other body -> TG020;
--   same key (or another refund of the payment) in progress -> TG021 at once (the caller polls).
-- Refused before Stripe is called: a payment that is not succeeded or was refunded in full
-- (refund_refundable), one with an open dispute (refund_payment_disputed), more than is not
-- yet refunded (refund_within_payment), an amount Stripe cannot write (stripe_amount_step).
CREATE OR REPLACE FUNCTION api.begin_refund_v1(
    p_api_key text, p_payment text, p_idempotency_key text, p_amount numeric, p_amount_minor bigint
) RETURNS TABLE (replayed boolean, refund_id uuid, payment_stripe_id text, amount bigint, currency text,
                 stripe_amount bigint, stripe_idempotency_key text, response jsonb)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k          tollgate.api_keys := tollgate.authenticate(p_api_key);
    pay        tollgate.payment_intents;
    minor      bigint;
    req_hash   bytea;
    claim      tollgate.refunds;
    rid        uuid;
BEGIN
    IF NOT k.is_admin THEN
        RAISE EXCEPTION 'only an admin key may refund a payment'
            USING ERRCODE = 'TG002', CONSTRAINT = 'admin_key';
    END IF;
    IF p_payment ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        SELECT * INTO pay FROM tollgate.payment_intents p WHERE p.id = p_payment::uuid;
    ELSE
        SELECT * INTO pay FROM tollgate.payment_intents p WHERE p.stripe_id = p_payment;
    END IF;
    IF pay.id IS NULL THEN
        RAISE EXCEPTION 'payment % not found', p_payment
            USING ERRCODE = 'TG003', CONSTRAINT = 'payment_visible';
    END IF;
    IF p_amount IS NOT NULL AND p_amount_minor IS NOT NULL THEN
        RAISE EXCEPTION 'give amount (a decimal) or amount_minor (minor units), not both'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'amount_one_form';
    END IF;
    minor := CASE WHEN p_amount IS NOT NULL THEN tollgate.to_minor(p_amount, pay.currency)
                  WHEN p_amount_minor IS NOT NULL THEN p_amount_minor::tollgate.amount_minor END;
    -- Held until this transaction ends, i.e. across the Stripe call.
    IF NOT pg_try_advisory_xact_lock(
        hashtextextended('tollgate:idempotency:' || pay.account_uuid || ':' || p_idempotency_key, 0)
    ) THEN
        RAISE EXCEPTION 'a request with idempotency key % is in progress', p_idempotency_key
            USING ERRCODE = 'TG021', CONSTRAINT = 'idempotency_key_free';
    END IF;
    req_hash := sha256(convert_to(jsonb_build_object('payment_id', pay.id, 'amount_minor', minor)::text, 'UTF8'));
    SELECT * INTO claim FROM tollgate.refunds r
    WHERE r.account_uuid = pay.account_uuid AND r.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        IF claim.request_hash <> req_hash THEN
            RAISE EXCEPTION 'idempotency key % was used with a different request', p_idempotency_key
                USING ERRCODE = 'TG020', CONSTRAINT = 'idempotency_key_same_request';
        END IF;
        RETURN QUERY SELECT true, claim.id, pay.stripe_id, claim.amount::bigint, claim.currency, NULL::bigint,
                            'tollgate-refund-' || claim.id::text, claim.response;
        RETURN;
    END IF;
    -- One refund of a payment at a time: what is left to refund is read after the last one.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('tollgate:refund:' || pay.id, 0)) THEN
        RAISE EXCEPTION 'another refund of payment % is in progress', pay.stripe_id
            USING ERRCODE = 'TG021', CONSTRAINT = 'refund_free';
    END IF;
    SELECT * INTO STRICT pay FROM tollgate.payment_intents p WHERE p.id = pay.id;
    -- Refundable, and how much (all that is left when no amount was given).
    minor := tollgate.refund_amount(pay, minor);
    rid := encode(substring(sha256(convert_to('refund:' || pay.account_uuid::text || ':' || p_idempotency_key, 'UTF8'))
                            FROM 1 FOR 16), 'hex')::uuid;
    INSERT INTO tollgate.refunds (id, account_uuid, payment_intent_id, amount, currency, idempotency_key,
                                  request_hash, requested_by)
    VALUES (rid, pay.account_uuid, pay.id, minor, pay.currency, p_idempotency_key, req_hash, k.id);
    RETURN QUERY SELECT false, rid, pay.stripe_id, minor, pay.currency,
                        tollgate.to_stripe_amount(minor, pay.currency), 'tollgate-refund-' || rid::text,
                        NULL::jsonb;
END
$$;

-- Step 2: record the refund Stripe created (its id and status) and the response to replay.
-- What Tollgate's own succeeded refunds of a (locked) payment add up to is refunded at least:
-- the payment's amount_refunded grows to it, and what the payment granted is taken back
-- (trigger payment_intents_30_refunded and what follows it).
CREATE OR REPLACE FUNCTION tollgate.count_refunds(p_payment tollgate.payment_intents) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    refunded bigint;
BEGIN
    SELECT coalesce(sum(r.amount), 0) INTO refunded FROM tollgate.refunds r
    WHERE r.payment_intent_id = p_payment.id AND r.status = 'succeeded';
    IF p_payment.status = 'succeeded' AND refunded > p_payment.amount_refunded THEN
        UPDATE tollgate.payment_intents
        SET amount_refunded = least(refunded, p_payment.amount),
            status = CASE WHEN refunded >= p_payment.amount THEN 'refunded' ELSE 'succeeded' END::tollgate.payment_status
        WHERE id = p_payment.id;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION api.finish_refund_v1(
    p_api_key text, p_refund_id uuid, p_stripe_id text, p_status text
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k      tollgate.api_keys := tollgate.authenticate(p_api_key);
    claim  tollgate.refunds;
    pay    tollgate.payment_intents;
    body   jsonb;
BEGIN
    IF NOT k.is_admin THEN
        RAISE EXCEPTION 'only an admin key may refund a payment'
            USING ERRCODE = 'TG002', CONSTRAINT = 'admin_key';
    END IF;
    -- The payment first, in the order its events lock it (Stripe id, payment, refund).
    SELECT p.* INTO pay FROM tollgate.payment_intents p JOIN tollgate.refunds r ON r.payment_intent_id = p.id
    WHERE r.id = p_refund_id;
    IF FOUND THEN
        PERFORM tollgate.lock_stripe_object(pay.stripe_id);
        SELECT * INTO STRICT pay FROM tollgate.payment_intents p WHERE p.id = pay.id FOR UPDATE;
    END IF;
    SELECT * INTO claim FROM tollgate.refunds r WHERE r.id = p_refund_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund % not found', p_refund_id
            USING ERRCODE = 'TG003', CONSTRAINT = 'refund_visible';
    END IF;
    IF claim.completed_at IS NOT NULL THEN
        RETURN claim.response;
    END IF;
    UPDATE tollgate.refunds r
    SET stripe_id = p_stripe_id,
        status = coalesce((SELECT s.enumlabel::tollgate.refund_status FROM pg_enum s
                           WHERE s.enumtypid = 'tollgate.refund_status'::regtype AND s.enumlabel = p_status),
                          'pending')
    WHERE r.id = claim.id;
    -- Stripe answered that the refund succeeded: what the payment granted is taken back now,
    -- not when (or if) its event arrives; the event then finds it counted.
    IF EXISTS (SELECT FROM tollgate.refunds r WHERE r.id = claim.id AND r.status = 'succeeded') THEN
        PERFORM tollgate.count_refunds(pay);
    END IF;
    SELECT to_jsonb(v) INTO STRICT body FROM tollgate.refund_v1 v WHERE v.id = claim.id;
    UPDATE tollgate.refunds r SET response = body, completed_at = now() WHERE r.id = claim.id;
    RETURN body;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.refunds ---

CREATE OR REPLACE TRIGGER refunds_05_changed
    BEFORE INSERT OR UPDATE ON tollgate.refunds
    FOR EACH ROW EXECUTE FUNCTION tollgate.refunds_changed();

CREATE OR REPLACE TRIGGER refunds_10_keep_columns
    BEFORE UPDATE ON tollgate.refunds
    FOR EACH ROW EXECUTE FUNCTION tollgate.keep_columns(
        'id', 'account_uuid', 'payment_intent_id', 'amount', 'currency', 'idempotency_key',
        'request_hash', 'requested_by', 'created_at', 'stripe_id?', 'response?', 'completed_at?');

CREATE OR REPLACE TRIGGER refunds_no_delete
    BEFORE DELETE ON tollgate.refunds
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER refunds_no_truncate
    BEFORE TRUNCATE ON tollgate.refunds
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.disputes ---

CREATE OR REPLACE TRIGGER disputes_05_changed
    BEFORE INSERT OR UPDATE ON tollgate.disputes
    FOR EACH ROW EXECUTE FUNCTION tollgate.disputes_changed();

CREATE OR REPLACE TRIGGER disputes_50_follow
    AFTER INSERT OR UPDATE OF status ON tollgate.disputes
    FOR EACH ROW EXECUTE FUNCTION tollgate.disputes_follow();

CREATE OR REPLACE TRIGGER disputes_no_delete
    BEFORE DELETE ON tollgate.disputes
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER disputes_no_truncate
    BEFORE TRUNCATE ON tollgate.disputes
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.payment_takebacks ---

CREATE OR REPLACE TRIGGER payment_takebacks_append_only
    BEFORE UPDATE OR DELETE ON tollgate.payment_takebacks
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER payment_takebacks_no_truncate
    BEFORE TRUNCATE ON tollgate.payment_takebacks
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();
