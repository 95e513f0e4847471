-- Postings are written set-based (db/sql/50-ledger.sql): a posting and all its entries by one
-- statement, checked and applied by statement-level triggers instead of triggers per entry and
-- balance checks deferred to COMMIT. Audit rows take their transaction from a default, so the
-- stamping trigger runs only for a row that says otherwise (db/sql/85-audit.sql).
-- depends: 0031.transfer-batches

SET LOCAL ROLE tollgate_owner;

ALTER TABLE tollgate.audit_log ALTER COLUMN xact SET DEFAULT pg_current_xact_id()::text::bigint;

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
