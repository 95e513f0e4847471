-- Reconciliation: lines from outside (a bank statement, a payout report) matched to
-- transactions by reference, amount and currency; settled transactions no line accounts for
-- show as missing on their side (view reporting.reconciliation_mismatches).

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TYPE tollgate.reconciliation_status AS ENUM (
    'matched',          -- a settled transaction with this reference, amount and currency
    'missing_ours',     -- no transaction with this reference
    'amount_mismatch',  -- the transaction's amount or currency differs
    'status_mismatch'   -- the transaction exists but is not settled (pending, failed, reversed)
);

-- One import: a file or an API call. Operator-wide (lines from a bank span accounts).
CREATE TABLE tollgate.reconciliation_batches (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    source       text        NOT NULL CONSTRAINT reconciliation_batches_source_format CHECK (source ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    imported_by  text        NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tollgate.reconciliation_lines (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        uuid        NOT NULL CONSTRAINT reconciliation_lines_batch_id_fkey REFERENCES tollgate.reconciliation_batches,
    line_no         integer     NOT NULL,
    -- The line's account: the matched transaction's, else the one the line named (else NULL).
    account_uuid      uuid        CONSTRAINT reconciliation_lines_account_uuid_fkey REFERENCES tollgate.accounts,
    reference       text        NOT NULL CONSTRAINT reconciliation_lines_reference_length CHECK (length(reference) BETWEEN 1 AND 200),
    amount          tollgate.amount_minor NOT NULL,
    currency        text        NOT NULL CONSTRAINT reconciliation_lines_currency_fkey REFERENCES tollgate.currencies,
    happened_on     date        NOT NULL,
    status          tollgate.reconciliation_status NOT NULL,
    transaction_id  uuid        CONSTRAINT reconciliation_lines_transaction_id_fkey REFERENCES tollgate.transactions,
    note            text,
    CONSTRAINT reconciliation_lines_batch_line_key UNIQUE (batch_id, line_no)
);

CREATE INDEX reconciliation_lines_transaction_idx ON tollgate.reconciliation_lines (transaction_id);
CREATE INDEX reconciliation_lines_reference_idx ON tollgate.reconciliation_lines (reference);

-- A line of a settlement file or bank statement, as api.import_reconciliation_v2 takes it. Part
-- of the API: a new shape is a new type (_v2) beside this one, never an ALTER of it.
CREATE TYPE api.reconciliation_line_v1 AS (
    reference   text,         -- the transaction's reference
    amount      numeric,      -- in the currency's units (12.50), not minor units
    currency    text,
    happened_on date,
    account     text          -- the account's external id; NULL: the reference alone decides
);
COMMENT ON TYPE api.reconciliation_line_v1 IS
    'One reconciliation line for api.import_reconciliation_v2 and tollgate.import_reconciliation.';

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Import one batch of lines (api.reconciliation_line_v1, migrations/0027; a line's account may
-- be named, else the reference alone decides). Every line is stored with what it
-- matched: matched, missing_ours (no such reference, or several accounts have it),
-- amount_mismatch, status_mismatch (the transaction is not settled); a line the source sent
-- before is answered 'duplicate' and not stored. A line Tollgate cannot read (amount,
-- currency, a blank reference, a date before 2000 or in the future, an unknown account)
-- refuses the whole batch, naming the line.
-- Before 0027 this took parallel arrays; that form is gone (only Tollgate's own code called it).
DROP FUNCTION IF EXISTS tollgate.import_reconciliation(text, text, text[], numeric[], text[], date[], text[]);

CREATE OR REPLACE FUNCTION tollgate.import_reconciliation(
    p_source text, p_imported_by text, p_lines api.reconciliation_line_v1[]
) RETURNS TABLE (batch_id uuid, line_no integer, reference text, status text, transaction_id uuid, note text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n      integer := coalesce(cardinality(p_lines), 0);
    line   api.reconciliation_line_v1;
    i      integer := 0;
    batch  uuid;
    minor  bigint;
    found  integer;
    txn    tollgate.transactions;
    result tollgate.reconciliation_status;
    why    text;
BEGIN
    IF n = 0 OR n > 100000 THEN
        RAISE EXCEPTION 'a batch has 1 to 100000 lines, each with reference, amount, currency and date'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'reconciliation_line';
    END IF;
    INSERT INTO tollgate.reconciliation_batches (source, imported_by) VALUES (p_source, p_imported_by)
    RETURNING id INTO batch;
    -- FOREACH, not p_lines[i]: finding an element of an array of composites walks it from the start.
    FOREACH line IN ARRAY p_lines LOOP
        i := i + 1;
        BEGIN
            minor := tollgate.to_minor(line.amount, line.currency);
            IF coalesce(btrim(line.reference), '') = '' OR length(line.reference) > 200 THEN
                RAISE EXCEPTION 'a reference of 1 to 200 characters is required';
            ELSIF line.happened_on IS NULL OR line.happened_on < date '2000-01-01'
                  OR line.happened_on > current_date + 1 THEN
                RAISE EXCEPTION 'the date % is not between 2000-01-01 and today',
                    coalesce(line.happened_on::text, '(none)');
            ELSIF line.account IS NOT NULL
                  AND NOT EXISTS (SELECT FROM tollgate.accounts a WHERE a.external_id = line.account) THEN
                RAISE EXCEPTION 'no account %', left(line.account, 200);
            END IF;
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'line %: %', i, SQLERRM
                USING ERRCODE = 'check_violation', CONSTRAINT = 'reconciliation_line';
        END;
        -- A line this source sent before (an overlapping statement): reported, not stored again.
        SELECT format('already imported: batch %s line %s', l.batch_id, l.line_no) INTO why
        FROM tollgate.reconciliation_lines l JOIN tollgate.reconciliation_batches b ON b.id = l.batch_id
        WHERE l.reference = line.reference AND b.source = p_source AND l.amount = minor
          AND l.currency = line.currency AND l.happened_on = line.happened_on
        LIMIT 1;
        IF why IS NOT NULL THEN
            RETURN QUERY SELECT batch, i, line.reference, 'duplicate'::text, NULL::uuid, why;
            CONTINUE;
        END IF;
        SELECT count(*) INTO found FROM tollgate.transactions t JOIN tollgate.accounts a ON a.id = t.account_uuid
        WHERE t.reference = line.reference AND (line.account IS NULL OR a.external_id = line.account);
        txn := NULL;
        why := NULL;
        IF found = 1 THEN
            SELECT t.* INTO txn FROM tollgate.transactions t JOIN tollgate.accounts a ON a.id = t.account_uuid
            WHERE t.reference = line.reference AND (line.account IS NULL OR a.external_id = line.account);
            IF (txn.amount, txn.currency) IS DISTINCT FROM (minor, line.currency) THEN
                result := 'amount_mismatch';
                why := format('ours: %s %s', tollgate.format_minor(txn.amount, txn.currency), txn.currency);
            ELSIF txn.status <> 'settled' THEN
                result := 'status_mismatch';
                why := format('ours is %s', txn.status);
            ELSE
                result := 'matched';
            END IF;
        ELSE
            result := 'missing_ours';
            why := CASE WHEN found > 1 THEN format('%s accounts have this reference: name the account', found) END;
        END IF;
        INSERT INTO tollgate.reconciliation_lines
            (batch_id, line_no, account_uuid, reference, amount, currency, happened_on, status, transaction_id, note)
        VALUES (batch, i,
                coalesce(txn.account_uuid, (SELECT a.id FROM tollgate.accounts a WHERE a.external_id = line.account)),
                line.reference, minor, line.currency, line.happened_on, result, txn.id, why);
        RETURN QUERY SELECT batch, i, line.reference, result::text, txn.id, why;
    END LOOP;
END
$$;

-- Import a batch of lines with an admin key (the matching: tollgate.import_reconciliation).
CREATE OR REPLACE FUNCTION api.import_reconciliation_v2(
    p_api_key text, p_source text, p_lines api.reconciliation_line_v1[]
) RETURNS TABLE (batch_id uuid, line_no integer, reference text, status text, transaction_id uuid, note text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k tollgate.api_keys := tollgate.require_admin(p_api_key);
BEGIN
    RETURN QUERY SELECT * FROM tollgate.import_reconciliation(p_source, 'key:' || k.id, p_lines);
END
$$;

-- The same, given as parallel arrays (one element per line): the form before 0027, kept for
-- deployed callers. Drop it (and its grant) once no deployed service calls it, that is one
-- release after every service runs queries.sql's import_reconciliation on
-- api.import_reconciliation_v2.
CREATE OR REPLACE FUNCTION api.import_reconciliation_v1(
    p_api_key text, p_source text, p_references text[], p_amounts numeric[], p_currencies text[],
    p_dates date[], p_accounts text[]
) RETURNS TABLE (batch_id uuid, line_no integer, reference text, status text, transaction_id uuid, note text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := coalesce(cardinality(p_references), 0);
BEGIN
    IF cardinality(p_amounts) <> n OR cardinality(p_currencies) <> n OR cardinality(p_dates) <> n
       OR cardinality(p_accounts) <> n THEN
        PERFORM tollgate.require_admin(p_api_key);   -- a bad key is answered first, as before
        RAISE EXCEPTION 'a batch has 1 to 100000 lines, each with reference, amount, currency and date'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'reconciliation_line';
    END IF;
    RETURN QUERY SELECT * FROM api.import_reconciliation_v2(p_api_key, p_source, ARRAY(
        SELECT ROW(x.reference, x.amount, x.currency, x.happened_on, x.account)::api.reconciliation_line_v1
        FROM unnest(p_references, p_amounts, p_currencies, p_dates, p_accounts)
             WITH ORDINALITY AS x (reference, amount, currency, happened_on, account, ord)
        ORDER BY x.ord));
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.reconciliation_lines ---

CREATE OR REPLACE TRIGGER reconciliation_lines_append_only
    BEFORE UPDATE OR DELETE ON tollgate.reconciliation_lines
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
