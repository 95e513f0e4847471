-- The double-entry ledger: ledger accounts with a running balance, postings, entries.
--
-- A posting and all its entries are written by one statement (tollgate.post), in one
-- transaction, and never changed after: at the end of that statement every posting must have
-- entries, and the entries of each posting must sum to zero per currency and be all the
-- posting has. Inserting entries is the only way to move a balance: every entry records the
-- balance of its ledger account before and after it and the account's version, so any past
-- balance can be recomputed and audited. The statement that writes entries computes those
-- from the locked accounts, set-based; its statement-level triggers then check that each
-- account's new entries continue its chain (from its current balance and version, without a
-- gap) and move each account once, to its newest entry, which the account's guard looks up.
-- Ledger accounts are locked in id order before any entry is written, so opposite postings
-- cannot deadlock.
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
    -- (A bounded repetition such as {0,39} in the pattern would make the matcher build its
    -- states again for every row: the length is checked on its own. The CHECK runs on every
    -- update, so for every posting.)
    name            text        NOT NULL CONSTRAINT ledger_accounts_name_format CHECK (name ~ '^[a-z][a-z0-9_]*$' AND length(name) <= 40),
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
    -- Caller-supplied key that makes a transfer idempotent, with the request it stood for: 1 to
    -- 255 printable ASCII characters (the length checked apart from the pattern, as for
    -- ledger_accounts.name).
    idempotency_key  text        CONSTRAINT ledger_postings_idempotency_key_format
                                 CHECK (idempotency_key ~ '^[\x21-\x7e]+$' AND length(idempotency_key) <= 255),
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

-- A transfer of a batch, as api.transfer_batch_v1 takes it. Part of the API: a new shape is a
-- new type (_v2) beside this one, never an ALTER of it.
CREATE TYPE api.transfer_item_v1 AS (
    from_account text,     -- the sender's external id; NULL: the key's own account
    to_account   text,     -- the receiver's external id
    amount       numeric,  -- in the currency's units (12.50); NULL when amount_minor is given
    amount_minor bigint,   -- in minor units (1250); NULL when amount is given
    currency     text
);
COMMENT ON TYPE api.transfer_item_v1 IS
    'One transfer for api.transfer_batch_v1; the rules are in its comment.';

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

-- A ledger account is born empty; afterwards its balance and version move only forward, to an
-- entry's: the guard looks for the entry that explains the new balance and version. Each
-- entry was checked to continue the account's chain when it was written (trigger
-- ledger_entries_30_accounts), and the statement that wrote it moved the account to its newest
-- entry, so no entry is newer than its account outside that statement: the one entry looked up
-- stands for every entry in between. Its owner, name and currency never change. Spelled out
-- rather than tollgate.keep_columns: this runs for every statement that posts.
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
       AND (NEW.version <= OLD.version OR NOT EXISTS (
                SELECT FROM tollgate.ledger_entries e
                WHERE e.ledger_account_id = NEW.id AND e.account_version = NEW.version
                  AND e.balance_after = NEW.balance)) THEN
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

-- Direct SQL may leave out what an entry derives from its ledger account (tollgate.post writes
-- it itself): the owner, the currency, and the balances and version that continue the
-- account's chain, after the account's current balance or the entry written before this one by
-- the same statement. Fires only when one of those columns is missing.
CREATE OR REPLACE FUNCTION tollgate.ledger_entries_before_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    la   tollgate.ledger_accounts;
    prev tollgate.ledger_entries;
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
    -- An entry newer than the account: written earlier by this statement, which moves the
    -- account at its end.
    SELECT * INTO prev FROM tollgate.ledger_entries e
    WHERE e.ledger_account_id = la.id AND e.account_version > la.version
    ORDER BY e.account_version DESC LIMIT 1;
    NEW.account_uuid := la.account_uuid;
    NEW.currency := la.currency;
    NEW.balance_before := coalesce(prev.balance_after, la.balance);
    NEW.balance_after := NEW.balance_before + NEW.amount;
    NEW.account_version := coalesce(prev.account_version, la.version) + 1;
    NEW.created_at := now();
    RETURN NEW;
END
$$;

-- After each statement that writes entries (REFERENCING NEW TABLE added): every posting it
-- wrote entries for got all its entries from this statement (none before: TG012
-- ledger_entries_posting_open), at least two, summing to zero per currency (TG040
-- ledger_postings_balanced). Together with ledger_postings_check_entries (a posting has
-- entries when the statement that wrote it ends), a posting and its entries are written by one
-- statement.
CREATE OR REPLACE FUNCTION tollgate.ledger_entries_check_postings() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad record;
BEGIN
    SELECT q.posting_id, q.entries, q.currency, q.total, w.written INTO bad
    FROM (SELECT c.posting_id, sum(c.n) AS entries,
                 (array_agg(c.currency) FILTER (WHERE c.total <> 0))[1] AS currency,
                 (array_agg(c.total) FILTER (WHERE c.total <> 0))[1] AS total
          FROM (SELECT a.posting_id, a.currency, sum(a.amount) AS total, count(*) AS n
                FROM added a GROUP BY a.posting_id, a.currency) c
          GROUP BY c.posting_id) q
    CROSS JOIN LATERAL (SELECT count(*) AS written FROM tollgate.ledger_entries e
                        WHERE e.posting_id = q.posting_id) w
    WHERE w.written <> q.entries OR q.total IS NOT NULL OR q.entries < 2
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    ELSIF bad.written <> bad.entries THEN
        RAISE EXCEPTION 'posting % was written by an earlier statement: it takes no more entries', bad.posting_id
            USING ERRCODE = 'TG012', CONSTRAINT = 'ledger_entries_posting_open',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    ELSIF bad.total IS NOT NULL THEN
        RAISE EXCEPTION 'posting % does not balance: % % left over', bad.posting_id, bad.total, bad.currency
            USING ERRCODE = 'TG040', CONSTRAINT = 'ledger_postings_balanced';
    END IF;
    RAISE EXCEPTION 'posting % has fewer than two entries', bad.posting_id
        USING ERRCODE = 'TG040', CONSTRAINT = 'ledger_postings_balanced';
END
$$;

-- After each statement that writes entries: lock their ledger accounts in id order, check
-- that each account's new entries continue its chain (the first starts at the account's
-- balance and next version, each next one where the one before ended; the entry's owner is
-- the account's; TG012 ledger_entries_chain) and that no balance along the way passes the
-- account's bounds (as the CHECKs on ledger_accounts would, and a debt never above zero), then
-- move each account once, to its newest entry. A balance that falls below its low_balance
-- announces credits.low (once per crossing).
CREATE OR REPLACE FUNCTION tollgate.ledger_entries_move_accounts() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    watched boolean;
    bad     record;
BEGIN
    SELECT bool_or(x.low_balance IS NOT NULL) INTO watched
    FROM (SELECT la.low_balance FROM tollgate.ledger_accounts la
          WHERE la.id IN (SELECT a.ledger_account_id FROM added a) ORDER BY la.id FOR UPDATE) x;
    SELECT e.id, e.ledger_account_id AS account, e.balance_after, la.overdraft_limit, la.name,
           e.balance_before IS DISTINCT FROM coalesce(e.prev_after, la.balance)
           OR e.account_version IS DISTINCT FROM coalesce(e.prev_version, la.version) + 1
           OR e.account_uuid IS DISTINCT FROM la.account_uuid OR e.created_at IS DISTINCT FROM now() AS forged
    INTO bad
    FROM (SELECT a.*, lag(a.balance_after) OVER w AS prev_after, lag(a.account_version) OVER w AS prev_version
          FROM added a WINDOW w AS (PARTITION BY a.ledger_account_id ORDER BY a.account_version)) e
    JOIN tollgate.ledger_accounts la ON la.id = e.ledger_account_id
    WHERE e.balance_before IS DISTINCT FROM coalesce(e.prev_after, la.balance)
       OR e.account_version IS DISTINCT FROM coalesce(e.prev_version, la.version) + 1
       OR e.account_uuid IS DISTINCT FROM la.account_uuid OR e.created_at IS DISTINCT FROM now()
       OR e.balance_after < -la.overdraft_limit
       OR e.balance_after NOT BETWEEN -999999999999999999 AND 999999999999999999
       OR (la.name = 'debt' AND e.balance_after > 0)
    ORDER BY forged DESC, e.id LIMIT 1;
    IF NOT FOUND THEN
        NULL;
    ELSIF bad.forged THEN
        RAISE EXCEPTION 'ledger entry % does not continue the chain of ledger account %', bad.id, bad.account
            USING ERRCODE = 'TG012', CONSTRAINT = 'ledger_entries_chain',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    ELSIF bad.balance_after NOT BETWEEN -999999999999999999 AND 999999999999999999 THEN
        RAISE EXCEPTION 'ledger account %: a balance stays within 10^18 minor units', bad.account
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_range';
    ELSIF bad.balance_after < -bad.overdraft_limit THEN
        RAISE EXCEPTION 'ledger account %: the balance would go % below zero, past its overdraft limit of %',
                bad.account, -bad.balance_after, bad.overdraft_limit
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
    ELSE
        RAISE EXCEPTION 'ledger account %: a debt is paid back to zero, never beyond', bad.account
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_debt_not_positive';
    END IF;
    UPDATE tollgate.ledger_accounts la SET balance = n.balance_after, version = n.account_version
    FROM (SELECT DISTINCT ON (a.ledger_account_id) a.ledger_account_id, a.balance_after, a.account_version
          FROM added a ORDER BY a.ledger_account_id, a.account_version DESC) n
    WHERE la.id = n.ledger_account_id;
    IF watched THEN
        PERFORM tollgate.emit(a.account_uuid, 'credits.low',
                    jsonb_build_object('currency', a.currency, 'balance', a.balance_after,
                                       'low_balance', la.low_balance, 'ledger_account_id', a.ledger_account_id))
        FROM added a JOIN tollgate.ledger_accounts la ON la.id = a.ledger_account_id
        WHERE a.balance_before >= la.low_balance AND a.balance_after < la.low_balance
        ORDER BY a.id;
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

-- After each statement that writes postings (REFERENCING NEW TABLE added): every posting has
-- entries, written by the same statement (ledger_entries_check_postings checks they balance
-- and are all the posting has). TG040 ledger_postings_balanced.
CREATE OR REPLACE FUNCTION tollgate.ledger_postings_check_entries() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bare uuid;
BEGIN
    SELECT a.id INTO bare FROM added a
    WHERE NOT EXISTS (SELECT FROM tollgate.ledger_entries e WHERE e.posting_id = a.id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting % has no entries: a posting is written with its entries, in one statement', bare
            USING ERRCODE = 'TG040', CONSTRAINT = 'ledger_postings_balanced';
    END IF;
    RETURN NULL;
END
$$;

-- Write a posting and its entries, one entry per (ledger account, amount), in one statement:
-- its ledger accounts locked in id order first (so opposite postings cannot deadlock), each
-- entry's balances and version computed from them, set-based (an account twice in a posting
-- runs on from its first entry). Returns the posting id, or NULL when p_idempotency_key was
-- used before by the account (the caller looks that posting up). Generic plans, as for
-- api.transfer_v1.
CREATE OR REPLACE FUNCTION tollgate.post(
    p_account_uuid uuid, p_kind tollgate.posting_kind, p_ledger_accounts uuid[], p_amounts bigint[],
    p_idempotency_key text DEFAULT NULL, p_request_hash bytea DEFAULT NULL, p_reverses uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    posting uuid;
    locked  boolean;  -- every ledger account named exists (and is locked now)
    odd     bigint;   -- an amount out of range
BEGIN
    -- One statement: the ledger accounts locked in id order, and the amounts checked before the
    -- balances below are summed (the CHECK on the entries says the same).
    SELECT (SELECT count(*) FROM (SELECT FROM tollgate.ledger_accounts la WHERE la.id = ANY (p_ledger_accounts)
                                  ORDER BY la.id FOR UPDATE) l) = (SELECT count(DISTINCT x) FROM unnest(p_ledger_accounts) x),
           (SELECT a FROM unnest(p_amounts) a WHERE a NOT BETWEEN -999999999999999 AND 999999999999999 LIMIT 1)
    INTO locked, odd;
    IF odd IS NOT NULL THEN
        RAISE EXCEPTION 'a ledger entry moves less than 10^15 minor units, not %', odd
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entries_amount_range';
    END IF;
    IF NOT locked THEN
        RAISE EXCEPTION 'ledger account % does not exist', (
                SELECT x FROM unnest(p_ledger_accounts) x
                WHERE NOT EXISTS (SELECT FROM tollgate.ledger_accounts la WHERE la.id = x) LIMIT 1)
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'ledger_entries_ledger_account_fkey';
    END IF;
    WITH p AS (
        INSERT INTO tollgate.ledger_postings (account_uuid, kind, idempotency_key, request_hash, reverses)
        VALUES (p_account_uuid, p_kind, p_idempotency_key, p_request_hash, p_reverses)
        ON CONFLICT ON CONSTRAINT ledger_postings_idempotency_key DO NOTHING
        RETURNING id
    ), moved AS (
        INSERT INTO tollgate.ledger_entries (posting_id, account_uuid, ledger_account_id, currency, amount,
                                             balance_before, balance_after, account_version)
        SELECT p.id, la.account_uuid, la.id, la.currency, t.amount,
               la.balance + t.upto - t.amount, la.balance + t.upto, la.version + t.n
        FROM p
        CROSS JOIN (SELECT x.account, x.amount, x.ord, (sum(x.amount) OVER w)::bigint AS upto, row_number() OVER w AS n
                    FROM unnest(p_ledger_accounts, p_amounts) WITH ORDINALITY AS x (account, amount, ord)
                    WINDOW w AS (PARTITION BY x.account ORDER BY x.ord)) t
        JOIN tollgate.ledger_accounts la ON la.id = t.account
        ORDER BY t.ord
    )
    SELECT p.id INTO posting FROM p;
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
-- the trigger ledger_entries_40_spend counts and enforces it on the posting itself), then the
-- receiver (TG003). What tollgate.available_credits and tollgate.check_holds_covered compute is
-- spelled out here: this runs for every transfer. Its statements, and those of the triggers
-- and functions it runs, take generic plans (their plans do not depend on the keys and ids
-- they are given, and planning them again for every call cost more than running them).
CREATE OR REPLACE FUNCTION api.transfer_v1(
    p_api_key text, p_from_account text, p_to_account text, p_amount numeric, p_currency text,
    p_idempotency_key text
) RETURNS TABLE (replayed boolean, posting_id uuid, from_account text, to_account text,
                 amount text, currency text, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    k        tollgate.api_keys := tollgate.authenticate(p_api_key);
    sender   tollgate.accounts := tollgate.account_for(k, p_from_account);
    receiver tollgate.accounts;
    minor    bigint := tollgate.to_minor(p_amount, p_currency);
    wallet   uuid;    -- the sender's main ledger account in p_currency
    avail    bigint;  -- what it can give: balance plus overdraft limit, less held
    held     bigint;  -- what active holds reserve of it
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
        SELECT la.id, la.balance + la.overdraft_limit - h.held, h.held INTO wallet, avail, held
        FROM tollgate.ledger_accounts la
        CROSS JOIN LATERAL (SELECT coalesce(sum(x.amount), 0)::bigint AS held FROM tollgate.holds x
                            WHERE x.ledger_account_id = la.id AND x.status = 'active' AND x.expires_at > now()) h
        WHERE la.account_uuid = sender.id AND la.name = 'main' AND la.currency = p_currency;
        IF wallet IS NOT NULL AND avail < minor AND avail + held >= minor THEN
            RAISE EXCEPTION 'the balance would no longer cover the credits held for authorized work'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
        ELSIF wallet IS NULL OR avail < minor THEN
            RAISE EXCEPTION '% % cannot leave the balance of %: % % available',
                    tollgate.format_minor(minor, p_currency), p_currency, sender.external_id,
                    tollgate.format_minor(greatest(coalesce(avail, 0), 0), p_currency), p_currency
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
        END IF;
        IF EXISTS (SELECT FROM tollgate.spend_caps c
                   WHERE c.account_uuid = sender.id AND c.agent_id = '' AND c.currency = p_currency) THEN
            PERFORM tollgate.check_spend_cap(sender.id, '', p_currency, minor);
        END IF;
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
        posting.id := tollgate.post(sender.id, 'transfer',
            ARRAY[wallet, coalesce((SELECT la.id FROM tollgate.ledger_accounts la
                                    WHERE la.account_uuid = receiver.id AND la.name = 'main' AND la.currency = p_currency),
                                   tollgate.ledger_account(receiver.id, 'main', p_currency))],
            ARRAY[-minor, minor], p_idempotency_key, req_hash);
        -- Credits held for authorized work are not the sender's to transfer.
        IF posting.id IS NOT NULL AND (SELECT la.balance + la.overdraft_limit FROM tollgate.ledger_accounts la WHERE la.id = wallet)
               < (SELECT coalesce(sum(x.amount), 0) FROM tollgate.holds x
                  WHERE x.ledger_account_id = wallet AND x.status = 'active' AND x.expires_at > now()) THEN
            RAISE EXCEPTION 'the balance would no longer cover the credits held for authorized work'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
        ELSIF posting.id IS NOT NULL THEN
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

-- ---------------------------------------------------------------------------------------------
-- api: batches of transfers, all or none
-- ---------------------------------------------------------------------------------------------

-- Refuse a batch for its transfer at position p_at (1-based): the refusal p_msg, with its
-- SQLSTATE and rule, prefixed "transfer N: " (db/errors.py keeps the prefix on a message it
-- replaces).
CREATE OR REPLACE FUNCTION tollgate.refuse_batch_transfer(p_at integer, p_state text, p_msg text, p_rule text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(p_rule, '') = '' THEN
        RAISE EXCEPTION 'transfer %: %', p_at, p_msg USING ERRCODE = p_state;
    END IF;
    RAISE EXCEPTION 'transfer %: %', p_at, p_msg USING ERRCODE = p_state, CONSTRAINT = p_rule;
END
$$;

-- Step 1 of api.transfer_batch_v1: every transfer's sender side resolved in one statement, by
-- position: the sender (an account the key may act for: its own, any for an admin key), the
-- receiver (NULL: no such account), the amount in minor units (amount or amount_minor, exactly
-- one) and the currency. bad is the first position whose sender side is refused (NULL: none):
-- tollgate.explain_batch_transfer says why.
CREATE OR REPLACE FUNCTION tollgate.resolve_batch_transfers(
    p_key tollgate.api_keys, p_transfers api.transfer_item_v1[],
    OUT sender uuid[], OUT from_ext text[], OUT receiver uuid[], OUT to_ext text[],
    OUT minor bigint[], OUT currency text[], OUT bad integer
)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_agg(s.id ORDER BY t.ord), array_agg(s.external_id ORDER BY t.ord),
           array_agg(r.id ORDER BY t.ord), array_agg(t.to_account ORDER BY t.ord),
           array_agg(CASE WHEN v.ok THEN x.scaled::bigint END ORDER BY t.ord),
           array_agg(t.currency ORDER BY t.ord),
           (min(t.ord) FILTER (WHERE NOT v.ok))::integer
    FROM unnest(p_transfers) WITH ORDINALITY AS t (from_account, to_account, amount, amount_minor, currency, ord)
    CROSS JOIN (SELECT a.external_id AS own FROM tollgate.accounts a WHERE a.id = p_key.account_uuid) o
    LEFT JOIN tollgate.accounts s
           ON s.external_id = coalesce(t.from_account, o.own) AND (p_key.is_admin OR s.id = p_key.account_uuid)
    LEFT JOIN tollgate.accounts r
           ON r.external_id = t.to_account AND r.id <> '00000000-0000-0000-0000-000000000000'
    LEFT JOIN tollgate.currencies c ON c.code = t.currency
    CROSS JOIN LATERAL (
        SELECT CASE WHEN t.amount_minor IS NULL THEN t.amount * 10::numeric ^ c.exponent
                    WHEN t.amount IS NULL THEN t.amount_minor END AS scaled
    ) x
    CROSS JOIN LATERAL (
        SELECT coalesce(s.id IS NOT NULL AND c.code IS NOT NULL AND x.scaled = trunc(x.scaled)
                        AND x.scaled BETWEEN 1 AND 999999999999
                        AND t.to_account IS DISTINCT FROM s.external_id, false) AS ok
    ) v
$$;

-- Why the transfer p_item at position p_at was refused by step 1: the error api.transfer_v1
-- would raise for it (account_visible, the amount's rules, transfer_distinct_accounts),
-- naming the position.
CREATE OR REPLACE FUNCTION tollgate.explain_batch_transfer(
    p_key tollgate.api_keys, p_item api.transfer_item_v1, p_at integer
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sender tollgate.accounts;
    state  text;
    msg    text;
    rule   text;
BEGIN
    sender := tollgate.account_for(p_key, p_item.from_account);
    IF (p_item.amount IS NULL) = (p_item.amount_minor IS NULL) THEN
        RAISE EXCEPTION 'a transfer gives amount or amount_minor: one of them'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfer_amount_one';
    END IF;
    PERFORM tollgate.to_minor(coalesce(p_item.amount, p_item.amount_minor / 10::numeric ^ coalesce(
        (SELECT c.exponent FROM tollgate.currencies c WHERE c.code = p_item.currency), 0)), p_item.currency);
    IF p_item.to_account = sender.external_id THEN
        RAISE EXCEPTION 'a transfer needs two different accounts'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfer_distinct_accounts';
    END IF;
    RAISE EXCEPTION 'no refusal found for this transfer';  -- step 1 and this step disagree
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, rule = CONSTRAINT_NAME;
    PERFORM tollgate.refuse_batch_transfer(p_at, state, msg, rule);
END
$$;

-- Step 2 of api.transfer_batch_v1: a batch made before with p_key answers as it did. Each
-- transfer of a batch is a posting of its own, whose idempotency key is the batch's, "/" and
-- its position, and whose request hash covers the batch's size; the batch is found by its
-- first transfer's sender (an advisory lock on that sender and key serialises retries).
-- Returns the postings by position, or NULL when the key is new; another batch under the key
-- is refused (TG020), naming the first transfer that differs.
CREATE OR REPLACE FUNCTION tollgate.replay_batch_transfers(
    p_key text, p_sender uuid[], p_receiver uuid[], p_minor bigint[], p_currency text[]
) RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found record;
BEGIN
    IF p_key IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('tollgate:transfer_batch:' || p_sender[1] || ':' || p_key, 0));
    SELECT array_agg(lp.id ORDER BY t.ord) AS ids, count(lp.id) AS n,
           min(t.ord) FILTER (WHERE lp.id IS NULL OR lp.request_hash <> tollgate.batch_transfer_hash(
               t.s, t.r, t.m, t.c, cardinality(p_sender))) AS differs
    INTO found
    FROM unnest(p_sender, p_receiver, p_minor, p_currency) WITH ORDINALITY AS t (s, r, m, c, ord)
    LEFT JOIN tollgate.ledger_postings lp ON lp.account_uuid = t.s AND lp.idempotency_key = p_key || '/' || t.ord;
    IF found.n = 0 THEN
        RETURN NULL;
    ELSIF found.differs IS NOT NULL THEN
        RAISE EXCEPTION 'transfer %: idempotency key % was used with a different batch', found.differs, p_key
            USING ERRCODE = 'TG020', CONSTRAINT = 'idempotency_key_same_request';
    END IF;
    RETURN found.ids;
END
$$;

-- What a transfer of a batch of p_size stood for, for its idempotency key (spelled out again in
-- tollgate.post_batch_transfers, which hashes a whole batch in one statement).
CREATE OR REPLACE FUNCTION tollgate.batch_transfer_hash(
    p_sender uuid, p_receiver uuid, p_minor bigint, p_currency text, p_size integer
) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(convert_to(concat_ws(':', p_sender, coalesce(p_receiver::text, '-'), p_minor, p_currency,
                                       'batch', p_size), 'UTF8'))
$$;

-- Step 3 of api.transfer_batch_v1: the senders' funds, then their spend caps, in batch order
-- (each transfer sees the earlier ones' debits, and their credits: an admin key may pass money
-- along a chain). Before any receiver is refused: for a key that is not an admin key every
-- sender is its own account and no receiver is, so this says nothing about the receivers.
-- Refused as api.transfer_v1 refuses: ledger_accounts_balance_non_negative (funds, or credits
-- held for authorized work), spend_cap (the transfers so far, together, pass a cap).
CREATE OR REPLACE FUNCTION tollgate.check_batch_funds(
    p_sender uuid[], p_from text[], p_receiver uuid[], p_minor bigint[], p_currency text[]
) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r     record;
    state text;
    msg   text;
    rule  text;
BEGIN
    SELECT m.* INTO r FROM (
        SELECT mv.ord, mv.m, mv.c, mv.f, mv.d, w.id AS wallet,
               (w.avail + sum(mv.d) OVER (PARTITION BY mv.a, mv.c ORDER BY mv.ord))::bigint AS left_after
        FROM (SELECT t.ord, t.s AS a, t.c, -t.m AS d, t.f, t.m
              FROM unnest(p_sender, p_from, p_minor, p_currency) WITH ORDINALITY AS t (s, f, m, c, ord)
              UNION ALL
              SELECT t.ord, t.r, t.c, t.m, NULL, t.m
              FROM unnest(p_receiver, p_minor, p_currency) WITH ORDINALITY AS t (r, m, c, ord)
              WHERE t.r IS NOT NULL) mv
        JOIN (SELECT x.a, x.c, la.id,  -- avail: tollgate.available_credits, for every wallet at once
                     coalesce(la.balance + la.overdraft_limit - (
                         SELECT coalesce(sum(h.amount), 0) FROM tollgate.holds h
                         WHERE h.ledger_account_id = la.id AND h.status = 'active' AND h.expires_at > now()), 0) AS avail
              FROM (SELECT DISTINCT y.a, y.c FROM unnest(p_sender || p_receiver, p_currency || p_currency) AS y (a, c)) x
              LEFT JOIN tollgate.ledger_accounts la ON la.account_uuid = x.a AND la.name = 'main' AND la.currency = x.c
             ) w ON w.a = mv.a AND w.c = mv.c
    ) m
    WHERE m.d < 0 AND m.left_after < 0 ORDER BY m.ord LIMIT 1;
    IF FOUND AND r.left_after + (SELECT coalesce(sum(h.amount), 0) FROM tollgate.holds h
                                 WHERE h.ledger_account_id = r.wallet AND h.status = 'active'
                                   AND h.expires_at > now()) >= 0 THEN
        RAISE EXCEPTION 'transfer %: the balance would no longer cover the credits held for authorized work', r.ord
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'transfer %: % % cannot leave the balance of %: % % available', r.ord,
                tollgate.format_minor(r.m, r.c), r.c, r.f, tollgate.format_minor(greatest(r.left_after + r.m, 0), r.c), r.c
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_accounts_balance_non_negative';
    END IF;
    SELECT x.* INTO r FROM (
        SELECT t.ord, t.s, t.c, sum(t.m) OVER (PARTITION BY t.s, t.c ORDER BY t.ord) AS spent
        FROM unnest(p_sender, p_minor, p_currency) WITH ORDINALITY AS t (s, m, c, ord)
        WHERE EXISTS (SELECT FROM tollgate.spend_caps sc WHERE sc.account_uuid = t.s AND sc.currency = t.c)
    ) x
    WHERE EXISTS (SELECT FROM tollgate.cap_exceeded(x.s, '', x.c, x.spent)) ORDER BY x.ord LIMIT 1;
    IF FOUND THEN
        BEGIN
            PERFORM tollgate.check_spend_cap(r.s, '', r.c, r.spent);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, rule = CONSTRAINT_NAME;
            PERFORM tollgate.refuse_batch_transfer(r.ord::integer, state, msg, rule);
        END;
    END IF;
END
$$;

-- Step 4 of api.transfer_batch_v1: the batch posted. The main ledger accounts of every sender
-- and receiver, created where missing, are locked once, in id order (so opposite batches, and
-- batches and single transfers, cannot deadlock); then one statement writes a posting per
-- transfer with its two entries, their balances computed set-based in batch order; then every
-- sender's wallet must still cover the credits held on it. Every rule the entries' triggers and
-- constraints enforce (balances within overdraft limits, spend caps, the audit chain) holds
-- per transfer; a refusal names the transfer (tollgate.post_batch_in_order finds it). Returns
-- the postings by position.
CREATE OR REPLACE FUNCTION tollgate.post_batch_transfers(
    p_key text, p_sender uuid[], p_receiver uuid[], p_minor bigint[], p_currency text[]
) RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n     integer := cardinality(p_sender);
    sw    uuid[];  -- the senders' wallets, by position
    rw    uuid[];  -- the receivers' wallets
    ids   uuid[] := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, n));
    at    integer;
BEGIN
    INSERT INTO tollgate.ledger_accounts (account_uuid, name, currency, allow_negative, overdraft_limit)
    SELECT DISTINCT y.a, 'main', y.c, false, 0::bigint
    FROM unnest(p_sender || p_receiver, p_currency || p_currency) AS y (a, c)
    WHERE NOT EXISTS (SELECT FROM tollgate.ledger_accounts la
                      WHERE la.account_uuid = y.a AND la.name = 'main' AND la.currency = y.c)
    ORDER BY 1, 3
    ON CONFLICT ON CONSTRAINT ledger_accounts_account_name_currency_key DO NOTHING;
    SELECT array_agg(s.id ORDER BY t.ord), array_agg(r.id ORDER BY t.ord) INTO sw, rw
    FROM unnest(p_sender, p_receiver, p_currency) WITH ORDINALITY AS t (s, r, c, ord)
    JOIN tollgate.ledger_accounts s ON s.account_uuid = t.s AND s.name = 'main' AND s.currency = t.c
    JOIN tollgate.ledger_accounts r ON r.account_uuid = t.r AND r.name = 'main' AND r.currency = t.c;
    PERFORM FROM tollgate.ledger_accounts la WHERE la.id = ANY (sw || rw) ORDER BY la.id FOR UPDATE;
    BEGIN
        WITH p AS (
            INSERT INTO tollgate.ledger_postings (id, account_uuid, kind, idempotency_key, request_hash)
            SELECT t.id, t.s, 'transfer', p_key || '/' || t.ord,  -- tollgate.batch_transfer_hash, spelled out
                   CASE WHEN p_key IS NOT NULL THEN sha256(convert_to(concat_ws(':', t.s, coalesce(t.r::text, '-'), t.m,
                                                                                t.c, 'batch', n), 'UTF8')) END
            FROM unnest(ids, p_sender, p_receiver, p_minor, p_currency) WITH ORDINALITY AS t (id, s, r, m, c, ord)
            ORDER BY t.ord
        )
        INSERT INTO tollgate.ledger_entries (posting_id, account_uuid, ledger_account_id, currency, amount,
                                             balance_before, balance_after, account_version)
        SELECT mv.id, la.account_uuid, la.id, la.currency, mv.amount,
               la.balance + mv.upto - mv.amount, la.balance + mv.upto, la.version + mv.k
        FROM (SELECT x.*, (sum(x.amount) OVER w)::bigint AS upto, row_number() OVER w AS k
              FROM (SELECT t.id, t.w AS account, -t.m AS amount, t.ord, 1 AS side
                    FROM unnest(ids, sw, p_minor) WITH ORDINALITY AS t (id, w, m, ord)
                    UNION ALL
                    SELECT t.id, t.w, t.m, t.ord, 2 FROM unnest(ids, rw, p_minor) WITH ORDINALITY AS t (id, w, m, ord)) x
              WINDOW w AS (PARTITION BY x.account ORDER BY x.ord, x.side)) mv
        JOIN tollgate.ledger_accounts la ON la.id = mv.account
        ORDER BY mv.ord, mv.side;
    EXCEPTION WHEN OTHERS THEN
        ids := tollgate.post_batch_in_order(p_key, p_sender, p_receiver, p_minor, p_currency, sw, rw);
    END;
    -- Credits held for authorized work are not the senders' to transfer: the last transfer
    -- from a wallet that no longer covers its holds (tollgate.available_credits below zero,
    -- for all the wallets at once) is refused.
    SELECT max(t.ord) INTO at
    FROM unnest(sw) WITH ORDINALITY AS t (w, ord)
    JOIN (SELECT la.id FROM tollgate.ledger_accounts la
          LEFT JOIN tollgate.holds h ON h.ledger_account_id = la.id AND h.status = 'active' AND h.expires_at > now()
          WHERE la.id = ANY (sw)
          GROUP BY la.id HAVING la.balance + la.overdraft_limit < coalesce(sum(h.amount), 0)) short ON short.id = t.w
    GROUP BY t.w ORDER BY 1 LIMIT 1;
    IF at > 0 THEN
        PERFORM tollgate.refuse_batch_transfer(at, '23514',
            'the balance would no longer cover the credits held for authorized work', 'ledger_accounts_balance_non_negative');
    END IF;
    RETURN ids;
END
$$;

-- The batch of tollgate.post_batch_transfers posted one transfer at a time, in order, after the
-- statement that posts it at once was refused (its ledger accounts are locked already): the
-- first transfer refused names the refusal ("transfer N: "), as api.transfer_v1 would raise
-- it. Returns the postings by position when none is refused (a refusal that came from a
-- concurrent change, gone since).
CREATE OR REPLACE FUNCTION tollgate.post_batch_in_order(
    p_key text, p_sender uuid[], p_receiver uuid[], p_minor bigint[], p_currency text[],
    p_sender_wallets uuid[], p_receiver_wallets uuid[]
) RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n     integer := cardinality(p_sender);
    ids   uuid[] := '{}';
    id    uuid;
    at    integer := 0;
    state text;
    msg   text;
    rule  text;
BEGIN
    FOR i IN 1 .. n LOOP
        at := i;
        id := tollgate.post(p_sender[i], 'transfer', ARRAY[p_sender_wallets[i], p_receiver_wallets[i]],
                            ARRAY[-p_minor[i], p_minor[i]], p_key || '/' || i,
                            CASE WHEN p_key IS NOT NULL THEN tollgate.batch_transfer_hash(
                                p_sender[i], p_receiver[i], p_minor[i], p_currency[i], n) END);
        IF id IS NULL THEN  -- a key of this batch's postings is taken: another request used it
            RAISE EXCEPTION 'idempotency key % was used with a different transfer', p_key || '/' || i
                USING ERRCODE = 'TG020', CONSTRAINT = 'idempotency_key_same_request';
        END IF;
        ids := ids || id;
    END LOOP;
    RETURN ids;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, rule = CONSTRAINT_NAME;
    PERFORM tollgate.refuse_batch_transfer(at, state, msg, rule);
    RETURN NULL;  -- not reached: refuse_batch_transfer raises
END
$$;

-- Up to 1000 transfers (api.transfer_item_v1, migrations/0031) in one call, all or none: each
-- is checked as api.transfer_v1 checks one (the sender an account the key may act for, the
-- amount, funds less holds within the overdraft limit, spend caps, then the receiver) and
-- posted as a posting of its own; one refused transfer refuses the batch, with the error
-- api.transfer_v1 would raise, its message prefixed "transfer N: " (N from 1). The transfers
-- are taken in order: each sees the earlier ones' debits and credits. Idempotent on
-- p_idempotency_key (NULL: not idempotent): the same batch again answers replayed = true with
-- its first postings; another batch with that key is refused (TG020). Every sender side is
-- checked before any receiver is looked up, so a refusal says no more about a receiver than a
-- success would. Generic plans, as for api.transfer_v1.
CREATE OR REPLACE FUNCTION api.transfer_batch_v1(
    p_api_key text, p_transfers api.transfer_item_v1[], p_idempotency_key text
) RETURNS TABLE (ord integer, replayed boolean, posting_id uuid, from_account text, to_account text,
                 amount text, amount_minor bigint, currency text, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    k    tollgate.api_keys := tollgate.authenticate(p_api_key);
    n    integer := coalesce(cardinality(p_transfers), 0);
    b    record;   -- the batch resolved, one array per field (tollgate.resolve_batch_transfers)
    ids  uuid[];   -- the postings, by position
    again boolean;
    miss record;
BEGIN
    IF n NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'a batch holds 1 to 1000 transfers, not %', n
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfer_batch_size';
    END IF;
    IF length(p_idempotency_key) > 250 THEN  -- each posting's key adds "/" and a position
        RAISE EXCEPTION 'a batch''s idempotency key has at most 250 characters'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'transfer_batch_key_length';
    END IF;
    -- 1. Every sender side: accounts the key may act for, amounts, currencies.
    SELECT * INTO b FROM tollgate.resolve_batch_transfers(k, p_transfers);
    IF b.bad IS NOT NULL THEN
        PERFORM tollgate.explain_batch_transfer(k, p_transfers[b.bad], b.bad);
    END IF;
    -- 2. A batch made with this key answers as it did, whatever the wallets hold now.
    ids := tollgate.replay_batch_transfers(p_idempotency_key, b.sender, b.receiver, b.minor, b.currency);
    again := ids IS NOT NULL;
    IF NOT again THEN
        -- 3. Funds and caps, then the receivers, then the postings.
        PERFORM tollgate.check_batch_funds(b.sender, b.from_ext, b.receiver, b.minor, b.currency);
        SELECT t.ord, t.x INTO miss FROM unnest(b.receiver, b.to_ext) WITH ORDINALITY AS t (r, x, ord)
        WHERE t.r IS NULL ORDER BY t.ord LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'transfer %: account % not found', miss.ord, miss.x
                USING ERRCODE = 'TG003', CONSTRAINT = 'account_visible';
        END IF;
        ids := tollgate.post_batch_transfers(p_idempotency_key, b.sender, b.receiver, b.minor, b.currency);
    END IF;
    RETURN QUERY  -- amounts as tollgate.format_minor writes them
    SELECT t.ord::integer, again, t.id, t.f, t.x, round(t.m::numeric / 10::numeric ^ cu.exponent, cu.exponent)::text,
           t.m, t.c, lp.created_at
    FROM unnest(ids, b.from_ext, b.to_ext, b.minor, b.currency) WITH ORDINALITY AS t (id, f, x, m, c, ord)
    JOIN tollgate.ledger_postings lp ON lp.id = t.id
    JOIN tollgate.currencies cu ON cu.code = t.c
    ORDER BY t.ord;
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

-- Only for direct SQL that leaves the derived columns out: tollgate.post writes them.
CREATE OR REPLACE TRIGGER ledger_entries_10_balances
    BEFORE INSERT ON tollgate.ledger_entries
    FOR EACH ROW
    WHEN (NEW.account_uuid IS NULL OR NEW.currency IS NULL OR NEW.balance_before IS NULL
          OR NEW.balance_after IS NULL OR NEW.account_version IS NULL)
    EXECUTE FUNCTION tollgate.ledger_entries_before_insert();

-- Per entry until migration 0033; the statement-level triggers below do their work.
DROP TRIGGER IF EXISTS ledger_entries_20_move_account ON tollgate.ledger_entries;

DROP TRIGGER IF EXISTS ledger_entries_30_spend ON tollgate.ledger_entries;

DROP TRIGGER IF EXISTS ledger_entries_balanced ON tollgate.ledger_entries;

CREATE OR REPLACE TRIGGER ledger_entries_20_postings
    AFTER INSERT ON tollgate.ledger_entries REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.ledger_entries_check_postings();

CREATE OR REPLACE TRIGGER ledger_entries_30_accounts
    AFTER INSERT ON tollgate.ledger_entries REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.ledger_entries_move_accounts();

CREATE OR REPLACE TRIGGER ledger_entries_40_spend
    AFTER INSERT ON tollgate.ledger_entries REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.ledger_entries_spend();

CREATE OR REPLACE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON tollgate.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON tollgate.ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();

-- --- tollgate.ledger_postings ---

-- The defaults stamp every posting; the function runs only for a row that says otherwise.
CREATE OR REPLACE TRIGGER ledger_postings_10_stamp
    BEFORE INSERT ON tollgate.ledger_postings
    FOR EACH ROW
    WHEN (NEW.created_xid IS DISTINCT FROM pg_current_xact_id() OR NEW.created_at IS DISTINCT FROM now())
    EXECUTE FUNCTION tollgate.ledger_postings_before_insert();

DROP TRIGGER IF EXISTS ledger_postings_balanced ON tollgate.ledger_postings;

CREATE OR REPLACE TRIGGER ledger_postings_20_entries
    AFTER INSERT ON tollgate.ledger_postings REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.ledger_postings_check_entries();

CREATE OR REPLACE TRIGGER ledger_postings_50_audit
    AFTER INSERT ON tollgate.ledger_postings REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.ledger_postings_audit();

CREATE OR REPLACE TRIGGER ledger_postings_append_only
    BEFORE UPDATE OR DELETE ON tollgate.ledger_postings
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();

CREATE OR REPLACE TRIGGER ledger_postings_no_truncate
    BEFORE TRUNCATE ON tollgate.ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate.refuse_change();
