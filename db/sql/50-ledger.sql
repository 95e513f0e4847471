-- The double-entry ledger: ledger accounts with a running balance, postings, entries.
--
-- A posting is a set of entries that sums to zero per currency (checked at commit by a
-- deferred constraint trigger), written in one transaction and never changed after. Inserting
-- an entry is the only way to move a balance: the entry's triggers lock its ledger account,
-- record the balance before and after and the account's new version, then update the
-- account, whose guard accepts a new balance only if that very entry exists. Every entry
-- records the balance of its ledger account before and after it, and the account's version,
-- so any past balance can be recomputed and audited. Ledger accounts are locked in id order
-- before any entry is written, so opposite postings cannot deadlock.
--
-- Money is bounded so no account can push a shared ledger account (revenue, clearing) past
-- bigint and stop everyone else's postings: an overdraft has a limit, a single entry and every
-- balance have a ceiling well inside bigint.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.ledger_accounts (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_uuid      uuid        NOT NULL CONSTRAINT ledger_accounts_account_uuid_fkey REFERENCES tollgate.accounts,
    -- "main" for an account's own balance; "clearing" for the system's counterpart of money
    -- that arrived from outside (Stripe, a bank); "revenue", "debt", "disputed": see the
    -- functions that post to them.
    name            text        NOT NULL CONSTRAINT ledger_accounts_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    currency        text        NOT NULL CONSTRAINT ledger_accounts_currency_fkey REFERENCES tollgate.currencies,
    -- Whether the balance may go below zero: overdraft_limit is not 0.
    allow_negative  boolean     NOT NULL DEFAULT false,
    -- Minor units. Changed only by inserting entries.
    balance         bigint      NOT NULL DEFAULT 0,
    -- The number of entries posted to this account.
    version         bigint      NOT NULL DEFAULT 0 CONSTRAINT ledger_accounts_version_non_negative CHECK (version >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- A balance below which its owner is told credits are low (credits.low, once per crossing).
    low_balance     bigint      CONSTRAINT ledger_accounts_low_balance_non_negative CHECK (low_balance >= 0),
    -- How far below zero the balance may go, in minor units: 0 for a prepaid wallet, at most
    -- 999999999999 (the largest single amount). NULL (no limit) only for Tollgate's own ledger
    -- accounts: clearing mirrors what outside parties hold and goes negative by design.
    overdraft_limit bigint      DEFAULT 0,
    CONSTRAINT ledger_accounts_account_name_currency_key UNIQUE (account_uuid, name, currency),
    -- Lets entries reference (ledger account, currency) so an entry's currency is its account's.
    CONSTRAINT ledger_accounts_id_currency_key UNIQUE (id, currency),
    -- Named for what callers know it as (insufficient_funds): not below the overdraft limit.
    CONSTRAINT ledger_accounts_balance_non_negative
        CHECK (overdraft_limit IS NULL OR balance >= -overdraft_limit),
    CONSTRAINT ledger_accounts_overdraft_limit_range
        CHECK (overdraft_limit BETWEEN 0 AND 999999999999),
    CONSTRAINT ledger_accounts_overdraft_bounded
        CHECK (overdraft_limit IS NOT NULL OR account_uuid = '00000000-0000-0000-0000-000000000000'),
    CONSTRAINT ledger_accounts_overdraft_flag
        CHECK (allow_negative = (overdraft_limit IS NULL OR overdraft_limit > 0)),
    -- 10^18 - 1: far above any real balance, far enough below bigint's 9.2e18 that adding one
    -- entry (below 10^15) can never overflow before this check refuses it.
    CONSTRAINT ledger_accounts_balance_range
        CHECK (balance BETWEEN -999999999999999999 AND 999999999999999999)
);

COMMENT ON TABLE tollgate.ledger_accounts IS 'Balances, one per (account, name, currency); moved only by ledger entries.';
COMMENT ON COLUMN tollgate.ledger_accounts.overdraft_limit IS
    'Minor units the balance may go below zero (0: prepaid); NULL only for Tollgate''s own clearing accounts.';

CREATE TYPE tollgate.posting_kind AS ENUM (
    'transfer',       -- between two accounts, on a caller's request
    'settlement',     -- a transaction settled: money arrived for an account
    'reversal',       -- compensates an earlier posting entry by entry; the original stays
    'charge',         -- an account pays Tollgate from its credits: captured holds, metered usage
    'refund',         -- credits a refunded or lost-dispute payment granted, taken back: from the
                      -- disputed (frozen) credits, the wallet, and as a recorded debt for the rest
    'dispute',        -- credits frozen while a dispute is open, or released when it is won
    'debt_repayment'  -- money that arrived for an account pays its recorded debt first
);

CREATE TABLE tollgate.ledger_postings (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The account on whose behalf the posting was made (a transfer's sender, a transaction's
    -- account).
    account_uuid       uuid        NOT NULL CONSTRAINT ledger_postings_account_uuid_fkey REFERENCES tollgate.accounts,
    kind             tollgate.posting_kind NOT NULL,
    -- Caller-supplied key that makes a transfer idempotent, with the request it stood for.
    idempotency_key  text        CONSTRAINT ledger_postings_idempotency_key_format CHECK (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    request_hash     bytea,
    reverses         uuid        CONSTRAINT ledger_postings_reverses_fkey REFERENCES tollgate.ledger_postings
                                 CONSTRAINT ledger_postings_reverses_once UNIQUE,
    -- The transaction that wrote the posting (set by the database): entries can be added to a
    -- posting only in that transaction, so a committed posting never changes.
    created_xid      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_postings_idempotency_key UNIQUE (account_uuid, idempotency_key),
    CONSTRAINT ledger_postings_key_has_hash CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CONSTRAINT ledger_postings_reversal_names_original CHECK ((kind = 'reversal') = (reverses IS NOT NULL))
);

CREATE TABLE tollgate.ledger_entries (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The owner of the ledger account (set by the database).
    account_uuid        uuid        NOT NULL CONSTRAINT ledger_entries_account_uuid_fkey REFERENCES tollgate.accounts,
    posting_id        uuid        NOT NULL CONSTRAINT ledger_entries_posting_id_fkey REFERENCES tollgate.ledger_postings,
    ledger_account_id uuid        NOT NULL,
    currency          text        NOT NULL,
    -- Signed minor units: positive raises the ledger account's balance, negative lowers it.
    amount            bigint      NOT NULL CONSTRAINT ledger_entries_amount_non_zero CHECK (amount <> 0),
    balance_before    bigint      NOT NULL,
    balance_after     bigint      NOT NULL,
    -- The ledger account's version after this entry (1 for its first entry).
    account_version   bigint      NOT NULL CONSTRAINT ledger_entries_account_version_positive CHECK (account_version > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_entries_ledger_account_fkey FOREIGN KEY (ledger_account_id, currency)
        REFERENCES tollgate.ledger_accounts (id, currency),
    CONSTRAINT ledger_entries_balance_arithmetic CHECK (balance_after = balance_before + amount),
    CONSTRAINT ledger_entries_version_key UNIQUE (ledger_account_id, account_version),
    -- One entry moves at most 10^15 - 1 minor units: a single amount is below 10^12, and the
    -- largest posting (a usage batch of 1000 events) below 10^15.
    CONSTRAINT ledger_entries_amount_range CHECK (amount BETWEEN -999999999999999 AND 999999999999999)
);

CREATE INDEX ledger_entries_posting_idx ON tollgate.ledger_entries (posting_id);
CREATE INDEX ledger_entries_account_uuid_idx ON tollgate.ledger_entries (account_uuid, id);

COMMENT ON TABLE tollgate.ledger_entries IS 'Append-only entries; each posting''s entries sum to zero per currency.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- Ledger accounts
-- ---------------------------------------------------------------------------------------------

-- The ledger account (account, name, currency), created on first use.
CREATE OR REPLACE FUNCTION tollgate.ledger_account(
    p_account_uuid uuid, p_name text, p_currency text, p_allow_negative boolean DEFAULT false
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found uuid;
BEGIN
    SELECT la.id INTO found FROM tollgate.ledger_accounts la
    WHERE la.account_uuid = p_account_uuid AND la.name = p_name AND la.currency = p_currency;
    IF found IS NOT NULL THEN
        RETURN found;
    END IF;
    -- p_allow_negative: no overdraft limit for Tollgate's own clearing accounts
    -- (ledger_accounts_overdraft_bounded), the largest one for an account's (its debt); an
    -- account's wallet starts prepaid.
    INSERT INTO tollgate.ledger_accounts (account_uuid, name, currency, allow_negative, overdraft_limit)
    VALUES (p_account_uuid, p_name, p_currency, p_allow_negative,
            CASE WHEN NOT p_allow_negative THEN 0
                 WHEN p_account_uuid <> '00000000-0000-0000-0000-000000000000' THEN 999999999999 END)
    ON CONFLICT ON CONSTRAINT ledger_accounts_account_name_currency_key DO NOTHING
    RETURNING id INTO found;
    IF found IS NULL THEN  -- created concurrently
        SELECT la.id INTO STRICT found FROM tollgate.ledger_accounts la
        WHERE la.account_uuid = p_account_uuid AND la.name = p_name AND la.currency = p_currency;
    END IF;
    RETURN found;
END
$$;

-- Tollgate's counterpart of money that arrived from outside (Stripe, a bank), per currency.
-- It goes negative by design: it mirrors what outside parties hold for Tollgate's accounts.
CREATE OR REPLACE FUNCTION tollgate.clearing_account(p_currency text) RETURNS uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tollgate.ledger_account('00000000-0000-0000-0000-000000000000', 'clearing', p_currency, true)
$$;

-- A ledger account is born empty; afterwards its balance and version move only with an entry
-- (the guard looks for the entry that explains the new balance), and its owner, name and
-- currency never change. Spelled out rather than tollgate.keep_columns: this runs per entry.
CREATE OR REPLACE FUNCTION tollgate.ledger_accounts_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.balance := 0;
        NEW.version := 0;
        NEW.created_at := now();
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.account_uuid, NEW.name, NEW.currency, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.account_uuid, OLD.name, OLD.currency, OLD.created_at) THEN
        RAISE EXCEPTION 'ledger account %: only its settings (overdraft, low balance) may change', OLD.id
            USING ERRCODE = 'TG011', CONSTRAINT = 'ledger_accounts_identity_immutable',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    IF (NEW.balance, NEW.version) IS DISTINCT FROM (OLD.balance, OLD.version)
       AND (NEW.version IS DISTINCT FROM OLD.version + 1 OR NOT EXISTS (
                SELECT FROM tollgate.ledger_entries e
                WHERE e.ledger_account_id = NEW.id AND e.account_version = NEW.version
                  AND e.balance_before = OLD.balance AND e.balance_after = NEW.balance)) THEN
        RAISE EXCEPTION 'ledger account %: balances move only through ledger entries', OLD.id
            USING ERRCODE = 'TG012', CONSTRAINT = 'ledger_accounts_balance_by_entries',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = 'balance';
    END IF;
    IF NEW.allow_negative IS DISTINCT FROM OLD.allow_negative THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'ledger_account', NEW.id::text, 'allow_negative',
                               OLD.allow_negative::text, NEW.allow_negative::text);
    END IF;
    IF NEW.overdraft_limit IS DISTINCT FROM OLD.overdraft_limit THEN
        PERFORM tollgate.audit(NEW.account_uuid, 'ledger_account', NEW.id::text, 'overdraft_limit',
                               OLD.overdraft_limit::text, NEW.overdraft_limit::text);
    END IF;
    RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Entries and postings
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION tollgate.ledger_entries_before_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    la tollgate.ledger_accounts;
BEGIN
    IF (SELECT p.created_xid FROM tollgate.ledger_postings p WHERE p.id = NEW.posting_id)
       IS DISTINCT FROM pg_current_xact_id() THEN
        RAISE EXCEPTION 'entries join posting % only in the transaction that wrote it', NEW.posting_id
            USING ERRCODE = 'TG012', CONSTRAINT = 'ledger_entries_posting_open',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    -- Checked before the sum below, which could otherwise overflow bigint instead of being
    -- refused by name (the CHECK says the same, after this trigger).
    IF NEW.amount NOT BETWEEN -999999999999999 AND 999999999999999 THEN
        RAISE EXCEPTION 'a ledger entry moves less than 10^15 minor units, not %', NEW.amount
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_amount_range',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    SELECT * INTO la FROM tollgate.ledger_accounts WHERE id = NEW.ledger_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ledger account % does not exist', NEW.ledger_account_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'ledger_entries_ledger_account_fkey';
    END IF;
    NEW.account_uuid := la.account_uuid;
    NEW.currency := la.currency;
    NEW.balance_before := la.balance;
    NEW.balance_after := la.balance + NEW.amount;
    NEW.account_version := la.version + 1;
    NEW.created_at := now();
    RETURN NEW;
END
$$;

-- The entry is in place: move the account to it. The CHECK ledger_accounts_balance_non_negative
-- refuses what would take a wallet below its overdraft limit (ledger_accounts_balance_range:
-- any balance past 10^18). A balance that falls below its low_balance announces
-- credits.low (once per crossing).
CREATE OR REPLACE FUNCTION tollgate.ledger_entries_after_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    low bigint;
BEGIN
    UPDATE tollgate.ledger_accounts SET balance = NEW.balance_after, version = NEW.account_version
    WHERE id = NEW.ledger_account_id
    RETURNING low_balance INTO low;
    IF NEW.balance_before >= low AND NEW.balance_after < low THEN
        PERFORM tollgate.emit(NEW.account_uuid, 'credits.low',
            jsonb_build_object('currency', NEW.currency, 'balance', NEW.balance_after, 'low_balance', low,
                               'ledger_account_id', NEW.ledger_account_id));
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tollgate.ledger_postings_before_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.created_xid := pg_current_xact_id();
    NEW.created_at := now();
    RETURN NEW;
END
$$;

-- At commit: every posting balances per currency, and has at least two entries. SECURITY
-- DEFINER because deferred triggers run at COMMIT as the session's role, not the api
-- function's owner.
CREATE OR REPLACE FUNCTION tollgate.check_posting_balanced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    posting uuid;
    bad     record;
BEGIN
    IF TG_TABLE_NAME = 'ledger_postings' THEN
        posting := NEW.id;
    ELSE
        posting := NEW.posting_id;
    END IF;
    SELECT coalesce(sum(c.entries), 0) AS entries,
           (array_agg(c.currency) FILTER (WHERE c.total <> 0))[1] AS currency,
           (array_agg(c.total) FILTER (WHERE c.total <> 0))[1] AS total
    INTO bad
    FROM (SELECT e.currency, sum(e.amount) AS total, count(*) AS entries
          FROM tollgate.ledger_entries e WHERE e.posting_id = posting GROUP BY e.currency) c;
    IF bad.total IS NOT NULL THEN
        RAISE EXCEPTION 'posting % does not balance: % % left over', posting, bad.total, bad.currency
            USING ERRCODE = 'TG040', CONSTRAINT = 'ledger_postings_balanced';
    END IF;
    IF bad.entries < 2 THEN
        RAISE EXCEPTION 'posting % has fewer than two entries', posting
            USING ERRCODE = 'TG040', CONSTRAINT = 'ledger_postings_balanced';
    END IF;
    RETURN NULL;
END
$$;

-- Write a posting: lock its ledger accounts in id order (so opposite postings cannot
-- deadlock), then one entry per (ledger account, amount). Returns the posting id, or NULL
-- when p_idempotency_key was used before by the account (the caller looks that posting up).
CREATE OR REPLACE FUNCTION tollgate.post(
    p_account_uuid uuid, p_kind tollgate.posting_kind, p_ledger_accounts uuid[], p_amounts bigint[],
    p_idempotency_key text DEFAULT NULL, p_request_hash bytea DEFAULT NULL, p_reverses uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    posting uuid;
BEGIN
    INSERT INTO tollgate.ledger_postings (account_uuid, kind, idempotency_key, request_hash, reverses)
    VALUES (p_account_uuid, p_kind, p_idempotency_key, p_request_hash, p_reverses)
    ON CONFLICT ON CONSTRAINT ledger_postings_idempotency_key DO NOTHING
    RETURNING id INTO posting;
    IF posting IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM FROM tollgate.ledger_accounts la WHERE la.id = ANY (p_ledger_accounts)
    ORDER BY la.id FOR UPDATE;
    -- One statement per entry: each entry's account moves before the next entry is computed.
    FOR i IN 1 .. cardinality(p_ledger_accounts) LOOP
        INSERT INTO tollgate.ledger_entries (posting_id, ledger_account_id, amount)
        VALUES (posting, p_ledger_accounts[i], p_amounts[i]);
    END LOOP;
    RETURN posting;
END
$$;

-- Undo a posting with its mirror image: the same ledger accounts, negated amounts. A posting
-- is reversed at most once (ledger_postings_reverses_once).
CREATE OR REPLACE FUNCTION tollgate.reverse_posting(p_posting_id uuid, p_account_uuid uuid) RETURNS uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tollgate.post(p_account_uuid, 'reversal', array_agg(e.ledger_account_id ORDER BY e.id),
                         array_agg(-e.amount ORDER BY e.id), p_reverses => p_posting_id)
    FROM tollgate.ledger_entries e WHERE e.posting_id = p_posting_id
$$;

-- ---------------------------------------------------------------------------------------------
-- Verification
-- ---------------------------------------------------------------------------------------------

-- Every way the ledger could disagree with itself; no rows means it is consistent:
--   balance   - a ledger account's balance or version is not what its entries add up to
--   chain     - an entry's balance_before is not the previous entry's balance_after
--   posting   - a posting's entries do not sum to zero in a currency
--   currency  - all balances in a currency do not sum to zero
CREATE OR REPLACE FUNCTION tollgate.ledger_discrepancies()
RETURNS TABLE (kind text, subject text, detail text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'balance', la.id::text,
           format('balance %s version %s; entries sum to %s over %s, last balance_after %s',
                  la.balance, la.version, coalesce(e.total, 0), coalesce(e.n, 0), e.last_after)
    FROM tollgate.ledger_accounts la
    LEFT JOIN LATERAL (
        SELECT sum(x.amount) AS total, count(*) AS n,
               (array_agg(x.balance_after ORDER BY x.account_version DESC))[1] AS last_after
        FROM tollgate.ledger_entries x WHERE x.ledger_account_id = la.id
    ) e ON true
    WHERE la.balance <> coalesce(e.total, 0) OR la.version <> coalesce(e.n, 0)
       OR (e.n > 0 AND e.last_after <> la.balance)
    UNION ALL
    SELECT 'chain', c.id::text, format('balance_before %s, previous balance_after %s', c.balance_before, c.prev)
    FROM (
        SELECT x.id, x.balance_before, x.account_version,
               lag(x.balance_after, 1, 0::bigint) OVER w AS prev,
               lag(x.account_version, 1, 0::bigint) OVER w AS prev_version
        FROM tollgate.ledger_entries x
        WINDOW w AS (PARTITION BY x.ledger_account_id ORDER BY x.account_version)
    ) c
    WHERE c.balance_before <> c.prev OR c.account_version <> c.prev_version + 1
    UNION ALL
    SELECT 'posting', x.posting_id::text, format('%s %s left over', sum(x.amount), x.currency)
    FROM tollgate.ledger_entries x GROUP BY x.posting_id, x.currency HAVING sum(x.amount) <> 0
    UNION ALL
    SELECT 'currency', la.currency, format('balances sum to %s', sum(la.balance))
    FROM tollgate.ledger_accounts la GROUP BY la.currency HAVING sum(la.balance) <> 0
$$;

-- ---------------------------------------------------------------------------------------------
-- api: transfers and balances
-- ---------------------------------------------------------------------------------------------

-- Move p_amount (a decimal, e.g. 12.50) of p_currency from one account's main balance to
-- another's, in one statement. The sender is the key's own account (any account for an admin
-- key); the receiver any account. Idempotent on (sender, p_idempotency_key): the same request
-- again answers replayed = true with the first posting; another request with that key is
-- refused (TG020). The sender's side is checked before the receiver is looked up, so a refusal
-- says no more about the receiver than a success would: funds (the balance less credits held
-- for authorized work, plus the overdraft limit; 23514 ledger_accounts_balance_non_negative),
-- then the sender's spend caps (23514 spend_cap; a transfer is spending, whoever's key asks:
-- the trigger ledger_entries_30_spend counts and enforces it on the posting itself), then the
-- receiver (TG003).
CREATE OR REPLACE FUNCTION api.transfer_v1(
    p_api_key text, p_from_account text, p_to_account text, p_amount numeric, p_currency text,
    p_idempotency_key text
) RETURNS TABLE (replayed boolean, posting_id uuid, from_account text, to_account text,
                 amount text, currency text, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k        tollgate.api_keys := tollgate.authenticate(p_api_key);
    sender   tollgate.accounts := tollgate.account_for(k, p_from_account);
    receiver tollgate.accounts;
    minor    bigint := tollgate.to_minor(p_amount, p_currency);
    wallet   uuid;
    avail    bigint;
    req_hash bytea;
    posting  tollgate.ledger_postings;
BEGIN
    IF p_to_account = sender.external_id THEN
        RAISE EXCEPTION 'a transfer needs two different accounts'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfer_distinct_accounts';
    END IF;
    -- A transfer already made with this key answers as it did, whatever the wallet holds now.
    SELECT * INTO posting FROM tollgate.ledger_postings lp
    WHERE lp.account_uuid = sender.id AND lp.idempotency_key = p_idempotency_key;
    IF posting.id IS NULL THEN
        SELECT la.id INTO wallet FROM tollgate.ledger_accounts la
        WHERE la.account_uuid = sender.id AND la.name = 'main' AND la.currency = p_currency;
        avail := CASE WHEN wallet IS NULL THEN 0 ELSE tollgate.available_credits(wallet) END;
        IF avail < minor AND avail + (SELECT coalesce(sum(h.amount), 0) FROM tollgate.holds h
                                      WHERE h.ledger_account_id = wallet AND h.status = 'active'
                                        AND h.expires_at > now()) >= minor THEN
            RAISE EXCEPTION 'the balance would no longer cover the credits held for authorized work'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
        ELSIF avail < minor THEN
            RAISE EXCEPTION '% % cannot leave the balance of %: % % available',
                    tollgate.format_minor(minor, p_currency), p_currency, sender.external_id,
                    tollgate.format_minor(greatest(avail, 0), p_currency), p_currency
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
        END IF;
        PERFORM tollgate.check_spend_cap(sender.id, '', p_currency, minor);
    END IF;
    SELECT * INTO receiver FROM tollgate.accounts a
    WHERE a.external_id = p_to_account AND a.id <> '00000000-0000-0000-0000-000000000000';
    IF NOT FOUND AND posting.id IS NOT NULL THEN
        RAISE EXCEPTION 'idempotency key % was used with a different transfer', p_idempotency_key
            USING ERRCODE = 'TG020', CONSTRAINT = 'idempotency_key_same_request';
    ELSIF NOT FOUND THEN
        RAISE EXCEPTION 'account % not found', p_to_account
            USING ERRCODE = 'TG003', CONSTRAINT = 'account_visible';
    END IF;
    IF receiver.id = sender.id THEN
        RAISE EXCEPTION 'a transfer needs two different accounts'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfer_distinct_accounts';
    END IF;
    req_hash := sha256(convert_to(concat_ws(':', sender.id, receiver.id, minor, p_currency), 'UTF8'));
    IF posting.id IS NULL THEN
        posting.id := tollgate.post(
            sender.id, 'transfer',
            ARRAY[tollgate.ledger_account(sender.id, 'main', p_currency),
                  tollgate.ledger_account(receiver.id, 'main', p_currency)],
            ARRAY[-minor, minor],
            p_idempotency_key, req_hash);
        IF posting.id IS NOT NULL THEN
            -- Credits held for authorized work are not the sender's to transfer.
            PERFORM tollgate.check_holds_covered(tollgate.ledger_account(sender.id, 'main', p_currency));
            RETURN QUERY SELECT false, posting.id, sender.external_id, receiver.external_id,
                                tollgate.format_minor(minor, p_currency), p_currency, now();
            RETURN;
        END IF;
        -- A concurrent request with the same key committed first.
        SELECT * INTO STRICT posting FROM tollgate.ledger_postings lp
        WHERE lp.account_uuid = sender.id AND lp.idempotency_key = p_idempotency_key;
    END IF;
    IF posting.request_hash <> req_hash THEN
        RAISE EXCEPTION 'idempotency key % was used with a different transfer', p_idempotency_key
            USING ERRCODE = 'TG020', CONSTRAINT = 'idempotency_key_same_request';
    END IF;
    RETURN QUERY SELECT true, posting.id, sender.external_id, receiver.external_id,
                        tollgate.format_minor(minor, p_currency), p_currency, posting.created_at;
END
$$;

-- An account's balances, one row per ledger account.
CREATE OR REPLACE FUNCTION api.balances_v1(p_api_key text, p_account text)
RETURNS TABLE (account_id text, name text, currency text, balance text, balance_minor bigint,
               version bigint, allow_negative boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k    tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct tollgate.accounts := tollgate.account_for(k, p_account);
BEGIN
    RETURN QUERY
    SELECT acct.external_id, la.name, la.currency, tollgate.format_minor(la.balance, la.currency),
           la.balance, la.version, la.allow_negative
    FROM tollgate.ledger_accounts la WHERE la.account_uuid = acct.id
    ORDER BY la.currency, la.name;
END
$$;

-- Set how far an account's main balance in a currency may go below zero (minor units, 0 to
-- 999999999999), for the admin key k. Refused (overdraft_in_use) when the balance less the
-- credits held for authorized work is already below the new limit's floor.
CREATE OR REPLACE FUNCTION tollgate.set_overdraft(
    k tollgate.api_keys, p_account text, p_currency text, p_limit bigint
) RETURNS TABLE (account_id text, currency text, overdraft_limit bigint, allow_negative boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct tollgate.accounts;
    la   uuid;
    used bigint;
BEGIN
    IF NOT k.is_admin THEN
        RAISE EXCEPTION 'only an admin key may change overdraft rules'
            USING ERRCODE = 'TG002', CONSTRAINT = 'admin_key';
    END IF;
    acct := tollgate.account_for(k, p_account);
    PERFORM tollgate.to_minor(1, p_currency);  -- the currency must exist
    IF p_limit IS NULL OR p_limit NOT BETWEEN 0 AND 999999999999 THEN
        RAISE EXCEPTION 'an overdraft limit is 0 to 999999999999 minor units, not %', p_limit
            USING ERRCODE = 'check_violation', CONSTRAINT = 'overdraft_limit_range';
    END IF;
    la := tollgate.ledger_account(acct.id, 'main', p_currency);
    PERFORM FROM tollgate.ledger_accounts x WHERE x.id = la FOR UPDATE;
    -- What is drawn already: below zero, counting the holds on it.
    used := -(tollgate.available_credits(la) - (SELECT x.overdraft_limit FROM tollgate.ledger_accounts x WHERE x.id = la));
    IF used > p_limit THEN
        RAISE EXCEPTION 'the % balance of % is % below zero, counting holds: more than an overdraft of %',
                p_currency, p_account, tollgate.format_minor(used, p_currency), tollgate.format_minor(p_limit, p_currency)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'overdraft_in_use';
    END IF;
    UPDATE tollgate.ledger_accounts x SET overdraft_limit = p_limit, allow_negative = p_limit > 0 WHERE x.id = la;
    RETURN QUERY SELECT acct.external_id, p_currency, p_limit, p_limit > 0;
END
$$;

-- Admin keys only: let an account's main balance in a currency go negative (overdraft), or
-- forbid it again (refused while it is negative). Allowing sets the largest overdraft limit,
-- 999999999999 minor units; api.set_overdraft_limit_v1 sets another.
CREATE OR REPLACE FUNCTION api.set_allow_negative_v1(
    p_api_key text, p_account text, p_currency text, p_allow boolean
) RETURNS TABLE (account_id text, currency text, allow_negative boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT o.account_id, o.currency, o.allow_negative
    FROM tollgate.set_overdraft(tollgate.authenticate(p_api_key), p_account, p_currency,
                                CASE WHEN p_allow THEN 999999999999 ELSE 0 END) o;
END
$$;

-- Admin keys only: how far below zero an account's main balance in a currency may go, a
-- decimal in the currency's units (0: none; at most 9999999999.99 USD, 999999999999 minor
-- units). Refused (overdraft_in_use) below what is already drawn.
CREATE OR REPLACE FUNCTION api.set_overdraft_limit_v1(
    p_api_key text, p_account text, p_currency text, p_limit numeric
) RETURNS TABLE (account_id text, currency text, overdraft_limit text, overdraft_limit_minor bigint,
                 allow_negative boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k      tollgate.api_keys := tollgate.authenticate(p_api_key);
    scaled numeric;
BEGIN
    IF NOT k.is_admin THEN
        RAISE EXCEPTION 'only an admin key may change overdraft rules'
            USING ERRCODE = 'TG002', CONSTRAINT = 'admin_key';
    END IF;
    PERFORM tollgate.to_minor(1, p_currency);  -- the currency must exist
    scaled := p_limit * 10::numeric ^ (SELECT c.exponent FROM tollgate.currencies c WHERE c.code = p_currency);
    IF scaled IS NULL OR scaled < 0 OR scaled > 999999999999 THEN
        RAISE EXCEPTION 'an overdraft limit is 0 to 999999999999 minor units, not % %', p_limit, p_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'overdraft_limit_range';
    END IF;
    IF scaled <> trunc(scaled) THEN
        RAISE EXCEPTION '% amounts have at most % decimals: % has more', p_currency,
                (SELECT c.exponent FROM tollgate.currencies c WHERE c.code = p_currency), p_limit
            USING ERRCODE = 'check_violation', CONSTRAINT = 'amount_decimals';
    END IF;
    RETURN QUERY
    SELECT o.account_id, o.currency, tollgate.format_minor(o.overdraft_limit, o.currency), o.overdraft_limit,
           o.allow_negative
    FROM tollgate.set_overdraft(k, p_account, p_currency, scaled::bigint) o;
END
$$;

-- Where captured credits and metered usage go: Tollgate's revenue, per currency.
CREATE OR REPLACE FUNCTION tollgate.revenue_account(p_currency text) RETURNS uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT tollgate.ledger_account('00000000-0000-0000-0000-000000000000', 'revenue', p_currency, false)
$$;

-- An account's wallets (its main ledger account per currency), by currency: the balance, what
-- active holds reserve of it (held), and what can still be held or spent (available: the
-- balance plus the overdraft limit, less held; tollgate.available_credits), with the wallet's
-- settings. A page of at most p_limit (1-500) after the currency p_after (the last of the
-- previous page).
CREATE OR REPLACE FUNCTION api.list_wallets_v1(p_api_key text, p_account text, p_limit integer, p_after text)
RETURNS TABLE (account_id text, currency text, balance text, balance_minor bigint, held text,
               held_minor bigint, available text, available_minor bigint, overdraft_limit text,
               overdraft_limit_minor bigint, allow_negative boolean, low_balance text,
               low_balance_minor bigint, version bigint, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acct tollgate.accounts := tollgate.account_for(tollgate.authenticate(p_api_key), p_account);
BEGIN
    PERFORM tollgate.check_page_limit(p_limit);
    RETURN QUERY
    SELECT acct.external_id, w.currency, tollgate.format_minor(w.balance, w.currency), w.balance,
           tollgate.format_minor(w.held, w.currency), w.held,
           tollgate.format_minor(w.available, w.currency), w.available,
           tollgate.format_minor(w.overdraft_limit, w.currency), w.overdraft_limit, w.allow_negative,
           tollgate.format_minor(w.low_balance, w.currency), w.low_balance, w.version, w.created_at
    FROM (SELECT la.*, tollgate.available_credits(la.id) AS available,
                 (SELECT coalesce(sum(h.amount), 0)::bigint FROM tollgate.holds h
                  WHERE h.ledger_account_id = la.id AND h.status = 'active' AND h.expires_at > now()) AS held
          FROM tollgate.ledger_accounts la
          WHERE la.account_uuid = acct.id AND la.name = 'main'
            AND (p_after IS NULL OR la.currency > p_after)
          ORDER BY la.currency
          LIMIT p_limit) w
    ORDER BY w.currency;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.ledger_accounts ---

CREATE OR REPLACE TRIGGER ledger_accounts_20_guard
    BEFORE INSERT OR UPDATE ON tollgate.ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION tollgate.ledger_accounts_guard();

CREATE OR REPLACE TRIGGER ledger_accounts_30_debt_not_positive
    BEFORE UPDATE ON tollgate.ledger_accounts
    FOR EACH ROW WHEN (NEW.name = 'debt' AND NEW.balance > 0)
    EXECUTE FUNCTION tollgate.debt_not_positive();

CREATE OR REPLACE TRIGGER ledger_accounts_no_delete
    BEFORE DELETE ON tollgate.ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER ledger_accounts_no_truncate
    BEFORE TRUNCATE ON tollgate.ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.ledger_entries ---

CREATE OR REPLACE TRIGGER ledger_entries_10_balances
    BEFORE INSERT ON tollgate.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate.ledger_entries_before_insert();

CREATE OR REPLACE TRIGGER ledger_entries_20_move_account
    AFTER INSERT ON tollgate.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate.ledger_entries_after_insert();

CREATE OR REPLACE TRIGGER ledger_entries_30_spend
    AFTER INSERT ON tollgate.ledger_entries
    FOR EACH ROW WHEN (NEW.amount < 0) EXECUTE FUNCTION tollgate.ledger_entries_spend();

CREATE OR REPLACE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON tollgate.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

DROP TRIGGER IF EXISTS ledger_entries_balanced ON tollgate.ledger_entries;

CREATE CONSTRAINT TRIGGER ledger_entries_balanced
    AFTER INSERT ON tollgate.ledger_entries DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tollgate.check_posting_balanced();

CREATE OR REPLACE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON tollgate.ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.ledger_postings ---

CREATE OR REPLACE TRIGGER ledger_postings_10_stamp
    BEFORE INSERT ON tollgate.ledger_postings
    FOR EACH ROW EXECUTE FUNCTION tollgate.ledger_postings_before_insert();

CREATE OR REPLACE TRIGGER ledger_postings_50_audit
    AFTER INSERT ON tollgate.ledger_postings
    FOR EACH ROW EXECUTE FUNCTION tollgate.ledger_postings_audit();

CREATE OR REPLACE TRIGGER ledger_postings_append_only
    BEFORE UPDATE OR DELETE ON tollgate.ledger_postings
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

DROP TRIGGER IF EXISTS ledger_postings_balanced ON tollgate.ledger_postings;

CREATE CONSTRAINT TRIGGER ledger_postings_balanced
    AFTER INSERT ON tollgate.ledger_postings DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION tollgate.check_posting_balanced();

CREATE OR REPLACE TRIGGER ledger_postings_no_truncate
    BEFORE TRUNCATE ON tollgate.ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();
