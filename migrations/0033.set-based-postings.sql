-- Postings are written set-based (db/sql/50-ledger.sql): a posting and all its entries by one
-- statement, checked and applied by statement-level triggers instead of triggers per entry and
-- balance checks deferred to COMMIT. Audit rows take their transaction from a default, so the
-- stamping trigger runs only for a row that says otherwise (db/sql/85-audit.sql). Two CHECKs
-- that every posting meets say the same in a form that is cheaper to match.
-- depends: 0031.transfer-batches

SET LOCAL ROLE tollgate_owner;

ALTER TABLE tollgate.audit_log ALTER COLUMN xact SET DEFAULT pg_current_xact_id()::text::bigint;

-- A bounded repetition ({0,39}, {1,255}) makes the regular expression matcher build hundreds of
-- states again for every row it checks: the lengths are checked on their own.
ALTER TABLE tollgate.ledger_accounts
    DROP CONSTRAINT ledger_accounts_name_format,
    ADD CONSTRAINT ledger_accounts_name_format CHECK (name ~ '^[a-z][a-z0-9_]*$' AND length(name) <= 40);
ALTER TABLE tollgate.ledger_postings
    DROP CONSTRAINT ledger_postings_idempotency_key_format,
    ADD CONSTRAINT ledger_postings_idempotency_key_format
        CHECK (idempotency_key ~ '^[\x21-\x7e]+$' AND length(idempotency_key) <= 255);

-- The triggers that give way, and their functions; the statement-level triggers are created
-- from db/sql after the migrations, as every trigger is. The posting's audit trigger changes
-- from per row to per statement: it is created again there.
DROP TRIGGER IF EXISTS ledger_entries_20_move_account ON tollgate.ledger_entries;
DROP TRIGGER IF EXISTS ledger_entries_30_spend ON tollgate.ledger_entries;
DROP TRIGGER IF EXISTS ledger_entries_balanced ON tollgate.ledger_entries;
DROP TRIGGER IF EXISTS ledger_postings_balanced ON tollgate.ledger_postings;
DROP TRIGGER IF EXISTS ledger_postings_50_audit ON tollgate.ledger_postings;
DROP FUNCTION IF EXISTS tollgate.ledger_entries_after_insert();
DROP FUNCTION IF EXISTS tollgate.check_posting_balanced();
