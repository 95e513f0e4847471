-- The status machine: allowed moves pass, every other move throws TG010, even from psql.
BEGIN;
SELECT plan(65);

INSERT INTO tollgate.accounts (id, external_id)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'transitions_account');

SELECT is((SELECT count(*)::int FROM tollgate.payment_transitions), 27, '27 allowed transitions');

-- One payment per ordered pair of distinct statuses, created in the pair's first status.
CREATE TEMP TABLE pair AS
SELECT f.status AS from_status, t.status AS to_status,
       EXISTS (SELECT FROM tollgate.payment_transitions x
               WHERE x.from_status = f.status AND x.to_status = t.status) AS allowed,
       'pi_tr_' || f.status || '_' || t.status AS stripe_id
FROM tollgate.payment_statuses f CROSS JOIN tollgate.payment_statuses t
WHERE f.status <> t.status;

INSERT INTO tollgate.payment_intents (account_id, stripe_id, amount, currency, status)
SELECT '00000000-0000-0000-0000-0000000000b1', p.stripe_id, 1000, 'USD', p.from_status FROM pair p;

SELECT throws_ok(
    format('UPDATE tollgate.payment_intents SET status = %L WHERE stripe_id = %L', p.to_status, p.stripe_id),
    'TG010', format('payment %s cannot go from %s to %s',
                    (SELECT id FROM tollgate.payment_intents WHERE stripe_id = p.stripe_id), p.from_status, p.to_status),
    format('%s -> %s is refused', p.from_status, p.to_status))
FROM pair p WHERE NOT p.allowed ORDER BY p.from_status, p.to_status;

SELECT lives_ok(
    format('UPDATE tollgate.payment_intents SET status = %L WHERE stripe_id = %L', p.to_status, p.stripe_id),
    format('%s -> %s is allowed', p.from_status, p.to_status))
FROM pair p WHERE p.allowed ORDER BY p.from_status, p.to_status;

SELECT throws_ok($$INSERT INTO tollgate.payment_transitions VALUES ('refunded', 'succeeded')$$,
                 '23514', NULL, 'no transition may leave a terminal state');
SELECT throws_ok($$UPDATE tollgate.payment_intents SET amount = 1 WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                 'TG011', NULL, 'the amount of a payment never changes');
SELECT throws_ok($$UPDATE tollgate.payment_intents SET account_id = gen_random_uuid() WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                 'TG011', NULL, 'nor its account');
SELECT throws_ok($$DELETE FROM tollgate.payment_intents WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                 'TG012', NULL, 'payments are never deleted');
SELECT throws_ok($$TRUNCATE tollgate.payment_intents CASCADE$$, 'TG012', NULL, 'nor truncated');

-- Each status change left an audit row naming the database role that made it.
SELECT is((SELECT count(*)::int FROM tollgate.audit_log
           WHERE entity = 'payment_intent' AND action = 'status_changed' AND actor = 'db:' || session_user),
          27, 'every allowed change is in the audit trail, with its actor');
SELECT throws_ok($$UPDATE tollgate.audit_log SET actor = 'someone else'$$, 'TG012', NULL, 'the audit trail cannot be edited');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, 'TG012', NULL, 'nor emptied');

SELECT * FROM finish();
ROLLBACK;
