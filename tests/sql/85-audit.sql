-- The audit trail: append-only for every role, one hash chain per account, and a check that
-- finds a superuser's edits, deletions and insertions.
BEGIN;
SELECT plan(32);

-- Seals are written at COMMIT; this test never commits, so it seals at each statement's end.
SET CONSTRAINTS tollgate.audit_log_90_seal IMMEDIATE;

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
                    WHERE account_uuid = pg_temp.amy() AND entity IN ('api_key', 'transaction') ORDER BY id$$,
                  $$VALUES ('api_key', 'created', NULL, 'account'), ('transaction', 'created', NULL, 'pending'),
                           ('transaction', 'status_changed', 'pending', 'settled')$$,
                  'key, transaction and its status change are on the record');
SELECT ok((SELECT bool_and(actor LIKE 'key:%') FROM tollgate.audit_log
           WHERE account_uuid = pg_temp.amy() AND entity = 'transaction'),
          'changes made through the API name the key that made them');
SELECT ok((SELECT count(*) >= 2 FROM tollgate.audit_log WHERE account_uuid = pg_temp.amy() AND entity = 'ledger_posting'),
          'ledger postings are on the record (settlement and transfer)');
SELECT results_eq($$SELECT array_agg(s.seq ORDER BY l.id) = array_agg(s.n ORDER BY l.id)
                    FROM tollgate.audit_log l
                    JOIN (SELECT *, row_number() OVER (ORDER BY seq) AS n FROM tollgate.audit_seals
                          WHERE account_uuid = pg_temp.amy()) s ON s.audit_id = l.id
                    WHERE l.account_uuid = pg_temp.amy()$$,
                  ARRAY[true], 'each account''s entries are sealed 1, 2, 3, ... in the order written');
SELECT is((SELECT count(*)::int FROM tollgate.audit_log l
           WHERE NOT EXISTS (SELECT FROM tollgate.audit_seals s WHERE s.audit_id = l.id)), 0, 'every entry is sealed');
SELECT results_eq($$SELECT rows, last_hash FROM tollgate.audit_heads WHERE account_uuid = pg_temp.amy()$$,
                  $$SELECT seq, row_hash FROM tollgate.audit_seals WHERE account_uuid = pg_temp.amy() ORDER BY seq DESC LIMIT 1$$,
                  'the head records the last seal');
SELECT is_empty($$SELECT * FROM pg_temp.problems()$$, 'the chain verifies');

-- Append-only, for every role
SELECT throws_ok($$UPDATE tollgate.audit_log SET new_value = 'failed' WHERE account_uuid = pg_temp.amy()$$, 'TG012', NULL,
                 'a superuser''s UPDATE is refused by the trigger');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, 'TG012', NULL, 'so is DELETE');
SELECT throws_ok($$TRUNCATE tollgate.audit_log$$, 'TG012', NULL, 'and TRUNCATE');
SELECT throws_ok($$INSERT INTO tollgate.audit_log (account_uuid, entity, entity_id, action, actor)
                   VALUES (pg_temp.amy(), 'transaction', 'x', 'created', 'me')$$, 'TG012', NULL,
                 'entries are written by triggers, not by hand');
SET LOCAL ROLE tollgate_owner;
SELECT throws_ok($$UPDATE tollgate.audit_log SET note = 'x'$$, '42501', NULL, 'the owner role has no UPDATE');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, '42501', NULL, 'nor DELETE');
SELECT throws_ok($$DELETE FROM tollgate.audit_heads$$, '42501', NULL, 'nor DELETE on the heads');
SELECT throws_ok($$UPDATE tollgate.audit_seals SET seq = seq + 1$$, '42501', NULL, 'nor UPDATE on the seals');
SELECT throws_ok($$DELETE FROM tollgate.audit_seals$$, '42501', NULL, 'nor DELETE on the seals');
RESET ROLE;
SET LOCAL ROLE tollgate_app;
SELECT throws_ok($$SELECT * FROM tollgate.audit_log$$, '42501', NULL, 'the service role cannot touch the table at all');
RESET ROLE;

-- A superuser going around the triggers is caught.
CREATE FUNCTION pg_temp.seq_of(p_new_value text) RETURNS bigint
LANGUAGE sql AS $$ SELECT s.seq FROM tollgate.audit_log l JOIN tollgate.audit_seals s ON s.audit_id = l.id
                   WHERE l.account_uuid = pg_temp.amy() AND l.new_value = p_new_value AND l.entity = 'transaction' $$;
ALTER TABLE tollgate.audit_log DISABLE TRIGGER USER;
ALTER TABLE tollgate.audit_seals DISABLE TRIGGER USER;
UPDATE tollgate.audit_log SET new_value = 'failed'
WHERE account_uuid = pg_temp.amy() AND entity = 'transaction' AND action = 'status_changed';
SELECT results_eq($$SELECT problem, seq FROM pg_temp.problems()$$, $$SELECT 'altered', pg_temp.seq_of('failed')$$,
                  'an edited entry shows as altered, at its seq');
UPDATE tollgate.audit_log SET new_value = 'settled' WHERE account_uuid = pg_temp.amy() AND new_value = 'failed';
SELECT is_empty($$SELECT * FROM pg_temp.problems()$$, 'put back as it was, it verifies again');

CREATE TEMP TABLE second AS
SELECT l.*, s.seq FROM tollgate.audit_log l JOIN tollgate.audit_seals s ON s.audit_id = l.id
WHERE s.account_uuid = pg_temp.amy() AND s.seq = 2;
DELETE FROM tollgate.audit_log WHERE id = (SELECT id FROM second);
SELECT results_eq($$SELECT problem, seq FROM pg_temp.problems()$$, $$VALUES ('missing', 2::bigint)$$,
                  'a deleted entry leaves its seal without it');
DELETE FROM tollgate.audit_seals WHERE audit_id = (SELECT id FROM second);
SELECT results_eq($$SELECT problem, seq FROM pg_temp.problems()$$, $$VALUES ('broken_link', 3::bigint), ('gap', 3::bigint)$$,
                  'deleted with its seal, it breaks the next link and leaves a gap');

INSERT INTO tollgate.audit_log (account_uuid, entity, entity_id, action, actor, db_role, at)
VALUES (pg_temp.amy(), 'transaction', 'forged', 'created', 'me', 'postgres', now());
SELECT ok((SELECT array_agg(problem) @> ARRAY['unsealed'] FROM pg_temp.problems()),
          'an entry written around the triggers is unsealed');
INSERT INTO tollgate.audit_seals (account_uuid, seq, audit_id, prev_hash, row_hash)
SELECT pg_temp.amy(), h.rows + 1, (SELECT id FROM tollgate.audit_log WHERE entity_id = 'forged'), h.last_hash, sha256(h.last_hash)
FROM tollgate.audit_heads h WHERE h.account_uuid = pg_temp.amy();
SELECT ok((SELECT array_agg(problem) @> ARRAY['altered', 'head'] FROM pg_temp.problems()),
          'given a seal by hand, it is altered and past the head');

-- A deleted head: the cut shows, and the account's next change stops rather than start a new chain.
ALTER TABLE tollgate.audit_heads DISABLE TRIGGER USER;
DELETE FROM tollgate.audit_heads WHERE account_uuid = pg_temp.amy();
ALTER TABLE tollgate.audit_heads ENABLE TRIGGER USER;
ALTER TABLE tollgate.audit_log ENABLE TRIGGER USER;
ALTER TABLE tollgate.audit_seals ENABLE TRIGGER USER;
SELECT ok((SELECT array_agg(problem) @> ARRAY['head'] FROM pg_temp.problems()), 'a deleted head shows');
SELECT throws_ok($$SELECT api.create_transaction_v1('amy-key', NULL, 'a-9', 1, 'USD', NULL)$$, 'TG012', NULL,
                 'and the account''s chain does not restart');

-- The view analysts read says the same.
SELECT ok((SELECT count(*) > 0 FROM reporting.audit_chain_problems WHERE account_id = 'amy'), 'reporting.audit_chain_problems shows it');
SELECT is_empty($$SELECT * FROM reporting.audit_chain_problems WHERE account_id = 'ops'$$, 'other chains are unaffected');

SELECT * FROM finish();
ROLLBACK;
