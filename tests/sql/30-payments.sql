-- The status machine: allowed moves pass, every other move throws TG010, even from psql.
BEGIN;
SELECT plan(78);

INSERT INTO tollgate.accounts (id, external_id)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'transitions_account');

SELECT is((SELECT count(*)::int FROM tollgate.payment_transitions), 27, '27 allowed transitions');

-- One payment per ordered pair of distinct statuses, brought to the pair's first status by
-- allowed moves (a payment is always recorded in an initial status).
CREATE TEMP TABLE pair AS
SELECT f.status AS from_status, t.status AS to_status,
       EXISTS (SELECT FROM tollgate.payment_transitions x
               WHERE x.from_status = f.status AND x.to_status = t.status) AS allowed,
       'pi_tr_' || f.status || '_' || t.status AS stripe_id
FROM tollgate.payment_statuses f CROSS JOIN tollgate.payment_statuses t
WHERE f.status <> t.status;

INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status)
SELECT '00000000-0000-0000-0000-0000000000b1', p.stripe_id, 1000, 'USD', 'requires_payment_method' FROM pair p;
UPDATE tollgate.payment_intents pi SET status = 'succeeded'
FROM pair p WHERE p.stripe_id = pi.stripe_id AND p.from_status = 'refunded';
UPDATE tollgate.payment_intents pi SET status = p.from_status
FROM pair p WHERE p.stripe_id = pi.stripe_id AND p.from_status <> 'requires_payment_method';

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

-- A payment starts as Stripe creates it.
SELECT throws_ok(
    $$INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status)
      VALUES ('00000000-0000-0000-0000-0000000000b1', 'pi_born_paid', 1000, 'USD', 'succeeded')$$,
    'TG010', NULL, 'a payment cannot be recorded as succeeded');
INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status, created_at, last_event_at)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'pi_backdated', 1000, 'USD', 'requires_confirmation',
        now() + interval '10 years', 'infinity');
SELECT results_eq($$SELECT created_at = now(), last_event_at IS NULL FROM tollgate.payment_intents WHERE stripe_id = 'pi_backdated'$$,
                  $$VALUES (true, true)$$, 'created_at and the event clock are set by the database on insert');
SELECT throws_ok($$UPDATE tollgate.payment_intents SET last_event_at = 'infinity' WHERE stripe_id = 'pi_backdated'$$,
                 'TG011', NULL, 'the event clock cannot be pushed into the future');
UPDATE tollgate.payment_intents SET last_event_at = now() WHERE stripe_id = 'pi_backdated';
SELECT throws_ok($$UPDATE tollgate.payment_intents SET last_event_at = now() - interval '1 day' WHERE stripe_id = 'pi_backdated'$$,
                 'TG011', NULL, 'nor moved back');

SELECT throws_ok($$INSERT INTO tollgate.payment_transitions VALUES ('refunded', 'succeeded')$$,
                 'TG012', NULL, 'the transition table is reference data');
SELECT throws_ok($$UPDATE tollgate.payment_statuses SET is_initial = true$$, 'TG012', NULL, 'so are the statuses');
SELECT throws_ok($$DELETE FROM tollgate.currencies WHERE code = 'USD'$$, 'TG012', NULL, 'and the currencies');
-- A migration changes reference data after tollgate.allow_reference_data_change() (never by
-- disabling the triggers, which do not exist yet when a fresh database is migrated).
SELECT tollgate.allow_reference_data_change();
SELECT lives_ok($$UPDATE tollgate.payment_statuses SET progress = progress WHERE status = 'succeeded'$$,
                'a migration may change reference data once it called allow_reference_data_change()');
SELECT throws_ok($$INSERT INTO tollgate.payment_transitions VALUES ('refunded', 'succeeded')$$,
                 '23514', NULL, 'even a migration cannot add a transition out of a terminal state');
SELECT set_config('tollgate.reference_data_change', '', true);
SELECT throws_ok($$UPDATE tollgate.payment_statuses SET is_initial = true$$, 'TG012', NULL,
                 'without that setting reference data is refused again');

SELECT throws_ok($$UPDATE tollgate.payment_intents SET amount = 1 WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                 'TG011', NULL, 'the amount of a payment never changes');
SELECT throws_ok($$UPDATE tollgate.payment_intents SET account_uuid = gen_random_uuid() WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                 'TG011', NULL, 'nor its account');
SELECT throws_ok($$UPDATE tollgate.payment_intents SET purpose = 'report.generate' WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                 'TG011', format('tollgate.payment_intents.purpose cannot change once set (row %s)',
                                 (SELECT id FROM tollgate.payment_intents WHERE stripe_id = 'pi_tr_processing_succeeded')),
                 'nor its purpose, even from none');
SELECT lives_ok($$UPDATE tollgate.payment_intents SET status = 'succeeded', amount = 1000 WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                'an update that leaves the status and the kept columns as they are passes');
SELECT lives_ok($$UPDATE tollgate.payment_intents SET status = 'canceled' WHERE stripe_id = 'pi_tr_canceled_refunded'$$,
                'even in a terminal status');
SELECT throws_ok($$DELETE FROM tollgate.payment_intents WHERE stripe_id = 'pi_tr_processing_succeeded'$$,
                 'TG012', NULL, 'payments are never deleted');
SELECT throws_ok($$TRUNCATE tollgate.payment_intents CASCADE$$, 'TG012', NULL, 'nor truncated');

-- Each status change left an audit row naming the database role that made it.
SELECT is((SELECT count(*)::int FROM tollgate.audit_log
           WHERE entity = 'payment_intent' AND action = 'status_changed' AND actor = 'db:' || session_user
             AND db_role = session_user
             AND entity_id IN (SELECT id::text FROM tollgate.payment_intents p JOIN pair USING (stripe_id) WHERE pair.allowed)),
          48, 'every status change (27 tested, 21 to set up) is audited with its actor and login role');
SELECT throws_ok($$UPDATE tollgate.audit_log SET actor = 'someone else'$$, 'TG012', NULL, 'the audit trail cannot be edited');
SELECT throws_ok($$DELETE FROM tollgate.audit_log$$, 'TG012', NULL, 'nor emptied');
SELECT throws_ok($$INSERT INTO tollgate.audit_log (account_uuid, entity, entity_id, action, actor)
                   VALUES ('00000000-0000-0000-0000-0000000000b1', 'payment_intent', 'x', 'forged', 'me')$$,
                 'TG012', NULL, 'nor written to directly');

SELECT * FROM finish();
ROLLBACK;
