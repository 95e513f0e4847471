-- The audit trail: append-only for every role, one hash chain per account, and a check that
-- finds a superuser's edits, deletions and insertions.
BEGIN;
SELECT plan(26);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('amy', 'amy-key', false, NULL)) IS NOT NULL, 'amy');
SELECT is((SELECT status FROM api.create_transaction_v1('amy-key', NULL, 'a-1', 10, 'USD', NULL)), 'pending', 'a transaction');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'amy', 'a-1', 'settled')), 'settled', 'settled');
SELECT ok((SELECT NOT replayed FROM api.transfer_v1('amy-key', 'amy', 'ops', 2, 'USD', 'tr-1')), 'a transfer');

CREATE FUNCTION pg_temp.amy() RETURNS uuid LANGUAGE sql AS $$ SELECT id FROM tollgate.accounts WHERE external_id = 'amy' $$;
CREATE FUNCTION pg_temp.problems() RETURNS TABLE (problem text, seq bigint)
LANGUAGE sql AS $$ SELECT problem, seq FROM tollgate.verify_audit_chain() ORDER BY seq, problem $$;

-- What was recorded, and by whom
SELECT results_eq($$SELECT entity, action, old_value, new_value FROM tollgate.audit_log
                    WHERE account_id = pg_temp.amy() AND entity IN ('api_key', 'transaction') ORDER BY seq$$,
                  $$VALUES ('api_key', 'created', NULL, 'account'), ('transaction', 'created', NULL, 'pending'),
                           ('transaction', 'status_changed', 'pending', 'settled')$$,
                  'key, transaction and its status change are on the record');
SELECT ok((SELECT bool_and(actor LIKE 'key:%') FROM tollgate.audit_log
           WHERE account_id = pg_temp.amy() AND entity = 'transaction'),
          'changes made through the API name the key that made them');
SELECT ok((SELECT count(*) >= 2 FROM tollgate.audit_log WHERE account_id = pg_temp.amy() AND entity = 'ledger_posting'),
          'ledger postings are on the record (settlement and transfer)');
SELECT results_eq($$SELECT array_agg(seq ORDER BY seq) = array_agg(n ORDER BY seq)
                    FROM (SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM tollgate.audit_log
                          WHERE account_id = pg_temp.amy()) s$$,
                  ARRAY[true], 'each account''s entries are numbered 1, 2, 3, ...');
SELECT results_eq($$SELECT rows, last_hash FROM tollgate.audit_heads WHERE account_id = pg_temp.amy()$$,
                  $$SELECT seq, row_hash FROM tollgate.audit_log WHERE account_id = pg_temp.amy() ORDER BY seq DESC LIMIT 1$$,
                  'the head records the last entry');
SELECT is_empty($$SELECT * FROM pg_temp.problems()$$, 'the chain verifies');

-- Append-only, for every role
SELECT throws_ok($$UPDATE tollgate.audit_log SET new_value = 'failed' WHERE account_id = pg_temp.amy()$$, 'TG012', NULL,
                 'a superuser''s UPDATE is refused by the trigger');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, 'TG012', NULL, 'so is DELETE');
SELECT throws_ok($$TRUNCATE tollgate.audit_log$$, 'TG012', NULL, 'and TRUNCATE');
SELECT throws_ok($$INSERT INTO tollgate.audit_log (account_id, entity, entity_id, action, actor)
                   VALUES (pg_temp.amy(), 'transaction', 'x', 'created', 'me')$$, 'TG012', NULL,
                 'entries are written by triggers, not by hand');
SET LOCAL ROLE tollgate_owner;
SELECT throws_ok($$UPDATE tollgate.audit_log SET note = 'x'$$, '42501', NULL, 'the owner role has no UPDATE');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, '42501', NULL, 'nor DELETE');
SELECT throws_ok($$DELETE FROM tollgate.audit_heads$$, '42501', NULL, 'nor DELETE on the heads');
RESET ROLE;
SET LOCAL ROLE tollgate_app;
SELECT throws_ok($$SELECT * FROM tollgate.audit_log$$, '42501', NULL, 'the service role cannot touch the table at all');
RESET ROLE;

-- A superuser going around the triggers is caught.
ALTER TABLE tollgate.audit_log DISABLE TRIGGER USER;
UPDATE tollgate.audit_log SET new_value = 'failed'
WHERE account_id = pg_temp.amy() AND entity = 'transaction' AND action = 'status_changed';
SELECT results_eq($$SELECT problem FROM pg_temp.problems()$$, ARRAY['altered'], 'an edited entry shows as altered');
SELECT is((SELECT seq FROM pg_temp.problems()),
          (SELECT seq FROM tollgate.audit_log WHERE account_id = pg_temp.amy() AND new_value = 'failed'), 'at its seq');
UPDATE tollgate.audit_log SET new_value = 'settled' WHERE account_id = pg_temp.amy() AND new_value = 'failed';
SELECT is_empty($$SELECT * FROM pg_temp.problems()$$, 'put back as it was, it verifies again');

DELETE FROM tollgate.audit_log WHERE account_id = pg_temp.amy() AND seq = 2;
SELECT results_eq($$SELECT problem, seq FROM pg_temp.problems()$$, $$VALUES ('broken_link', 3::bigint), ('gap', 3::bigint)$$,
                  'a deleted entry breaks the next one''s link and leaves a gap');

-- A forged entry with the right shape but computed without the head: the head disagrees.
INSERT INTO tollgate.audit_log (account_id, seq, entity, entity_id, action, actor, db_role, at, prev_hash, row_hash)
SELECT account_id, seq + 1, 'transaction', 'forged', 'created', 'me', 'postgres', now(), row_hash,
       sha256(row_hash)
FROM tollgate.audit_log WHERE account_id = pg_temp.amy() ORDER BY seq DESC LIMIT 1;
SELECT ok((SELECT array_agg(problem) @> ARRAY['altered', 'head'] FROM pg_temp.problems()),
          'an entry added around the trigger is altered and past the head');

-- The view analysts read says the same.
SELECT ok((SELECT count(*) > 0 FROM reporting.audit_chain_problems WHERE account_id = 'amy'), 'reporting.audit_chain_problems shows it');
SELECT is_empty($$SELECT * FROM reporting.audit_chain_problems WHERE account_id = 'ops'$$, 'other chains are unaffected');

SELECT * FROM finish();
ROLLBACK;
