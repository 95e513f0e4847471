-- One name for one thing: a table's column for the account it belongs to is account_uuid (the
-- key of tollgate.accounts), and account_id is only ever the account's external id, the one
-- callers know (accounts.external_id), as every API result and reporting view already names it.
-- Constraints and indexes named after the column follow it; so do the parameters of the
-- internal functions that take the uuid (dropped here, re-created from db/sql after the
-- migrations).
-- depends: 0027.batch-input-types

SET LOCAL ROLE tollgate_owner;

ALTER TABLE tollgate.api_keys RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.audit_heads RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.audit_log RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.audit_seals RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.disputes RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.holds RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.idempotency_keys RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.ledger_accounts RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.ledger_entries RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.ledger_postings RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.outbox RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.outbox_deliveries RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.payment_entitlements RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.payment_events RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.payment_intents RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.payment_takebacks RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.reconciliation_lines RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.refunds RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.reviews RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.risk_rules RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.spend_caps RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.spend_daily RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.spend_notices RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.subscriptions RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.transactions RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.usage_carry RENAME COLUMN account_id TO account_uuid;
ALTER TABLE tollgate.usage_events RENAME COLUMN account_id TO account_uuid;

ALTER TABLE tollgate.api_keys RENAME CONSTRAINT api_keys_account_id_fkey TO api_keys_account_uuid_fkey;
ALTER TABLE tollgate.audit_heads RENAME CONSTRAINT audit_heads_account_id_fkey TO audit_heads_account_uuid_fkey;
ALTER TABLE tollgate.audit_log RENAME CONSTRAINT audit_log_account_id_fkey TO audit_log_account_uuid_fkey;
ALTER TABLE tollgate.disputes RENAME CONSTRAINT disputes_account_id_fkey TO disputes_account_uuid_fkey;
ALTER TABLE tollgate.holds RENAME CONSTRAINT holds_account_id_fkey TO holds_account_uuid_fkey;
ALTER TABLE tollgate.idempotency_keys RENAME CONSTRAINT idempotency_keys_account_id_fkey TO idempotency_keys_account_uuid_fkey;
ALTER TABLE tollgate.ledger_accounts RENAME CONSTRAINT ledger_accounts_account_id_fkey TO ledger_accounts_account_uuid_fkey;
ALTER TABLE tollgate.ledger_entries RENAME CONSTRAINT ledger_entries_account_id_fkey TO ledger_entries_account_uuid_fkey;
ALTER TABLE tollgate.ledger_postings RENAME CONSTRAINT ledger_postings_account_id_fkey TO ledger_postings_account_uuid_fkey;
ALTER TABLE tollgate.outbox RENAME CONSTRAINT outbox_account_id_fkey TO outbox_account_uuid_fkey;
ALTER TABLE tollgate.outbox_deliveries RENAME CONSTRAINT outbox_deliveries_account_id_fkey TO outbox_deliveries_account_uuid_fkey;
ALTER TABLE tollgate.payment_entitlements RENAME CONSTRAINT payment_entitlements_account_id_fkey TO payment_entitlements_account_uuid_fkey;
ALTER TABLE tollgate.payment_events RENAME CONSTRAINT payment_events_account_id_fkey TO payment_events_account_uuid_fkey;
ALTER TABLE tollgate.payment_intents RENAME CONSTRAINT payment_intents_account_id_fkey TO payment_intents_account_uuid_fkey;
ALTER TABLE tollgate.payment_takebacks RENAME CONSTRAINT payment_takebacks_account_id_fkey TO payment_takebacks_account_uuid_fkey;
ALTER TABLE tollgate.reconciliation_lines RENAME CONSTRAINT reconciliation_lines_account_id_fkey TO reconciliation_lines_account_uuid_fkey;
ALTER TABLE tollgate.refunds RENAME CONSTRAINT refunds_account_id_fkey TO refunds_account_uuid_fkey;
ALTER TABLE tollgate.reviews RENAME CONSTRAINT reviews_account_id_fkey TO reviews_account_uuid_fkey;
ALTER TABLE tollgate.risk_rules RENAME CONSTRAINT risk_rules_account_id_fkey TO risk_rules_account_uuid_fkey;
ALTER TABLE tollgate.spend_caps RENAME CONSTRAINT spend_caps_account_id_fkey TO spend_caps_account_uuid_fkey;
ALTER TABLE tollgate.spend_daily RENAME CONSTRAINT spend_daily_account_id_fkey TO spend_daily_account_uuid_fkey;
ALTER TABLE tollgate.spend_notices RENAME CONSTRAINT spend_notices_account_id_fkey TO spend_notices_account_uuid_fkey;
ALTER TABLE tollgate.subscriptions RENAME CONSTRAINT subscriptions_account_id_fkey TO subscriptions_account_uuid_fkey;
ALTER TABLE tollgate.transactions RENAME CONSTRAINT transactions_account_id_fkey TO transactions_account_uuid_fkey;
ALTER TABLE tollgate.usage_carry RENAME CONSTRAINT usage_carry_account_id_fkey TO usage_carry_account_uuid_fkey;
ALTER TABLE tollgate.usage_events RENAME CONSTRAINT usage_events_account_id_fkey TO usage_events_account_uuid_fkey;

ALTER INDEX tollgate.api_keys_account_id_idx RENAME TO api_keys_account_uuid_idx;
ALTER INDEX tollgate.audit_log_account_id_idx RENAME TO audit_log_account_uuid_idx;
ALTER INDEX tollgate.ledger_entries_account_id_idx RENAME TO ledger_entries_account_uuid_idx;
ALTER INDEX tollgate.outbox_account_id_idx RENAME TO outbox_account_uuid_idx;

-- PostgreSQL 18 names NOT NULL constraints after their column (earlier versions keep none).
DO $not_null$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT k.conrelid::regclass AS tbl, k.conname, r.relname
             FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid
             WHERE k.connamespace = 'tollgate'::regnamespace
               AND k.conname = r.relname || '_account_id_not_null'
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', c.tbl, c.conname,
                       c.relname || '_account_uuid_not_null');
    END LOOP;
END
$not_null$;

DROP FUNCTION IF EXISTS tollgate.add_spend(uuid,text,text,date,numeric);
DROP FUNCTION IF EXISTS tollgate.audit(uuid,text,text,text,text,text,text);
DROP FUNCTION IF EXISTS tollgate.audit_genesis(uuid);
DROP FUNCTION IF EXISTS tollgate.cap_exceeded(uuid,text,text,numeric);
DROP FUNCTION IF EXISTS tollgate.check_spend_cap(uuid,text,text,numeric);
DROP FUNCTION IF EXISTS tollgate.create_transaction(uuid,text,bigint,text,uuid);
DROP FUNCTION IF EXISTS tollgate.emit(uuid,text,jsonb);
DROP FUNCTION IF EXISTS tollgate.ledger_account(uuid,text,text,boolean);
DROP FUNCTION IF EXISTS tollgate.locked_wallet(uuid,text);
DROP FUNCTION IF EXISTS tollgate.post(uuid,tollgate.posting_kind,uuid[],bigint[],text,bytea,uuid);
DROP FUNCTION IF EXISTS tollgate.repay_debt(uuid,text,bigint);
DROP FUNCTION IF EXISTS tollgate.reverse_posting(uuid,uuid);
DROP FUNCTION IF EXISTS tollgate.risk_flags(uuid,text,bigint,text);
DROP FUNCTION IF EXISTS tollgate.spent_since(uuid,text,text,date);

-- tollgate.verify_audit_chain() names the uuid account_uuid now; the view reading it goes
-- with it (both re-created from db/sql).
DROP VIEW IF EXISTS reporting.audit_chain_problems;
DROP FUNCTION IF EXISTS tollgate.verify_audit_chain();
