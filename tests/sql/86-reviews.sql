-- Risk reviews: rules flag transactions and payments; a flagged transaction cannot settle and a
-- flagged payment's entitlement cannot be used until a reviewer approves; decisions are final
-- and on the record.
BEGIN;
SELECT plan(71);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('rex', 'rex-key', false, NULL)) IS NOT NULL, 'rex');
SELECT throws_ok($$SELECT * FROM api.set_risk_rule_v1('rex-key', 'rex', 'USD', 1, NULL, NULL, NULL)$$, 'TG002', NULL,
                 'only an admin sets risk rules');
SELECT results_eq($$SELECT account_id, max_amount, velocity_count FROM api.set_risk_rule_v1('ops-key', NULL, 'USD', 100, 3, 3600, NULL)$$,
                  $$VALUES (NULL::text, '100.00', 3)$$, 'everyone: review USD above 100.00, or more than 3 an hour');
SELECT results_eq($$SELECT account_id, max_amount FROM api.set_risk_rule_v1('ops-key', 'rex', 'USD', 20, NULL, NULL, NULL)$$,
                  $$VALUES ('rex', '20.00')$$, 'rex: above 20.00');

CREATE FUNCTION pg_temp.txn(p_reference text, p_amount numeric, p_key text DEFAULT 'rex-key', p_payment text DEFAULT NULL)
RETURNS text LANGUAGE sql AS $$ SELECT status FROM api.create_transaction_v1(p_key, NULL, p_reference, p_amount, 'USD', p_payment) $$;
CREATE FUNCTION pg_temp.review(p_ref text) RETURNS uuid
LANGUAGE sql AS $$ SELECT id FROM tollgate.review_v1 WHERE subject_ref = p_ref $$;
CREATE FUNCTION pg_temp.decide(p_ref text, p_decision text, p_note text DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$ SELECT status FROM api.decide_review_v1('ops-key', pg_temp.review(p_ref), p_decision, p_note) $$;

-- The amount rule, per account
SELECT is(pg_temp.txn('small', 20), 'pending', '20.00: not above the threshold');
SELECT is(pg_temp.review('small'), NULL, 'no review');
SELECT is(pg_temp.txn('big', 20.01), 'pending', '20.01 is recorded');
SELECT results_eq($$SELECT subject, rules, status FROM tollgate.review_v1 WHERE subject_ref = 'big'$$,
                  $$VALUES ('transaction', ARRAY['amount_above_threshold'], 'open')$$, 'and flagged for review');
SELECT results_eq($$SELECT account_id, held_for_review FROM reporting.transactions WHERE reference = 'big'$$,
                  $$VALUES ('rex', true)$$, 'held, as analysts see it');
SELECT ok(EXISTS (SELECT FROM reporting.open_reviews WHERE subject_ref = 'big'), 'listed in reporting.open_reviews');

-- The gate
SELECT throws_ok($$SELECT * FROM api.move_transaction_v1('ops-key', 'rex', 'big', 'settled')$$, 'TG050', NULL,
                 'a flagged transaction cannot settle');
SELECT throws_ok($$UPDATE tollgate.transactions SET status = 'settled' WHERE reference = 'big'$$, 'TG050', NULL,
                 'not even by a direct UPDATE');
SELECT throws_ok($$SELECT * FROM api.decide_review_v1('rex-key', pg_temp.review('big'), 'approved', NULL)$$, 'TG002', NULL,
                 'only an admin decides');
SELECT is(pg_temp.decide('big', 'approved', 'known customer, invoice checked'), 'approved', 'approved');
SELECT results_eq($$SELECT old_value, new_value, note, actor LIKE 'key:%' FROM tollgate.audit_log
                    WHERE entity = 'review' AND action = 'decided'$$,
                  $$VALUES ('open', 'approved', 'known customer, invoice checked', true)$$,
                  'the decision, its note and the deciding key are in the audit trail');
SELECT is(pg_temp.decide('big', 'approved'), 'approved', 'the same decision again answers the same');
SELECT throws_ok($$SELECT pg_temp.decide('big', 'rejected')$$, 'TG011', NULL, 'a decision is final');
SELECT throws_ok($$UPDATE tollgate.reviews SET note = 'edited' WHERE id = pg_temp.review('big')$$, 'TG011', NULL,
                 'its note cannot be edited');
SELECT throws_ok($$DELETE FROM tollgate.reviews$$, 'TG012', NULL, 'reviews are never deleted');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'rex', 'big', 'settled')), 'settled', 'approved: it settles');

SELECT is(pg_temp.txn('bigger', 50), 'pending', 'another large one');
SELECT is(pg_temp.decide('bigger', 'rejected', 'card testing pattern'), 'rejected', 'rejected');
SELECT is((SELECT status FROM api.get_transaction_v1('rex-key', NULL, 'bigger')), 'failed', 'a rejected transaction fails');

-- Velocity: more than 3 an hour (the global rule; rex's own rule has no velocity, ops uses the global one)
SELECT is(pg_temp.txn('o-1', 1, 'ops-key'), 'pending', 'ops: 1');
SELECT is(pg_temp.txn('o-2', 1, 'ops-key'), 'pending', 'ops: 2');
SELECT is(pg_temp.txn('o-3', 1, 'ops-key'), 'pending', 'ops: 3');
SELECT is(pg_temp.review('o-3'), NULL, 'three in an hour: fine');
SELECT is(pg_temp.txn('o-4', 1, 'ops-key'), 'pending', 'ops: 4');
SELECT is((SELECT rules FROM tollgate.review_v1 WHERE subject_ref = 'o-4'), ARRAY['velocity'], 'the fourth is flagged for velocity');

-- First payment of a new account above X
SELECT results_eq($$SELECT first_amount_max FROM api.set_risk_rule_v1('ops-key', NULL, 'EUR', NULL, NULL, NULL, 5)$$,
                  ARRAY['5.00'], 'EUR: a new account''s first above 5.00 is reviewed');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('newbie', 'new-key', false, NULL)) IS NOT NULL, 'a new account');
SELECT is((SELECT status FROM api.create_transaction_v1('new-key', NULL, 'n-1', 6, 'EUR', NULL)), 'pending', 'its first: 6.00');
SELECT is((SELECT status FROM api.create_transaction_v1('new-key', NULL, 'n-2', 6, 'EUR', NULL)), 'pending', 'its second: 6.00');
SELECT results_eq($$SELECT subject_ref, rules FROM tollgate.review_v1 WHERE account_id = 'newbie'$$,
                  $$VALUES ('n-1', ARRAY['first_amount_above_threshold'])$$, 'only the first is flagged');

-- Flagged payments: a sale's transaction waits for the reviewer even after Stripe says
-- succeeded, and a paid action's entitlement cannot be used.
CREATE FUNCTION pg_temp.pay(p_stripe_id text, p_purpose text) RETURNS text
LANGUAGE sql AS $$
    SELECT api.finish_payment_v1('rex-key',
        (SELECT payment_id FROM api.begin_payment_v1('rex-key', p_stripe_id, NULL, 2500, 'USD', p_purpose, NULL, NULL)),
        p_stripe_id, 'requires_payment_method', NULL) ->> 'stripe_id'
$$;
CREATE FUNCTION pg_temp.succeeded(p_stripe_id text) RETURNS text
LANGUAGE sql AS $$
    SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_' || p_stripe_id, 'type', 'payment_intent.succeeded',
        'created', extract(epoch FROM now())::bigint,
        'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', p_stripe_id, 'status', 'succeeded'))))
$$;
SELECT results_eq($$SELECT price FROM api.set_action_price_v1('ops-key', 'report.generate', 25, 'USD', NULL)$$, ARRAY['25.00'],
                  'a report costs 25.00');
SELECT is(pg_temp.pay('pi_sale', NULL) || ' ' || pg_temp.pay('pi_report', 'report.generate'), 'pi_sale pi_report',
          'two payments of 25.00: a sale and a report');
SELECT is(pg_temp.txn('sale', 25, 'rex-key', 'pi_sale'), 'pending', 'a transaction linked to the sale');
SELECT is((SELECT count(*)::int FROM tollgate.review_v1 WHERE subject_ref IN ('pi_sale', 'pi_report', 'sale')), 3,
          'all three are flagged');
SELECT is(pg_temp.succeeded('pi_sale') || ' ' || pg_temp.succeeded('pi_report'), 'applied applied', 'Stripe: both succeeded');
SELECT results_eq($$SELECT (SELECT status FROM api.get_transaction_v1('rex-key', NULL, 'sale')),
                           (SELECT allowed FROM api.authorize_v1('rex-key', NULL, 'report.generate', NULL, NULL, NULL, NULL))$$,
                  $$VALUES ('pending', false)$$, 'the transaction stays pending and the report payment entitles nothing yet');
SELECT throws_ok($$UPDATE tollgate.payment_entitlements SET uses_left = 0, used_at = now()$$, 'TG050', NULL,
                 'not even by a direct UPDATE');
SELECT is(pg_temp.decide('pi_report', 'approved') || ' ' || pg_temp.decide('sale', 'approved'), 'approved approved',
          'the report payment and the sale approved');
SELECT is((SELECT status FROM api.get_transaction_v1('rex-key', NULL, 'sale')), 'pending',
          'the sale still waits for its payment''s review');
SELECT is(pg_temp.decide('pi_sale', 'approved'), 'approved', 'the sale''s payment approved');
SELECT results_eq($$SELECT (SELECT status FROM api.get_transaction_v1('rex-key', NULL, 'sale')),
                           (SELECT via FROM api.authorize_v1('rex-key', NULL, 'report.generate', NULL, NULL, NULL, NULL))$$,
                  $$VALUES ('settled', 'payment')$$, 'approval settles the transaction and frees the entitlement');

-- Linked after the payment already succeeded: recorded, and held like any other.
SELECT is(pg_temp.pay('pi_late', NULL), 'pi_late', 'another sale of 25.00');
SELECT is(pg_temp.succeeded('pi_late'), 'applied', 'it succeeds before its transaction is recorded');
SELECT is(pg_temp.txn('late', 25, 'rex-key', 'pi_late'), 'pending', 'the flagged transaction is recorded, pending');
SELECT is(pg_temp.decide('pi_late', 'approved') || ' ' || pg_temp.decide('late', 'approved'), 'approved approved',
          'its payment and it approved');
SELECT is((SELECT status FROM api.get_transaction_v1('rex-key', NULL, 'late')), 'settled', 'and settled by the approval');

-- A flagged credits payment: the credits it buys are held with it, even when its transaction
-- itself breaks no rule (here the payment is the account's first above 5.00 EUR, the
-- transaction is not its first).
CREATE FUNCTION pg_temp.top_up(p_key text, p_stripe_id text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM api.finish_payment_v1(p_key,
        (SELECT payment_id FROM api.begin_payment_v1(p_key, p_stripe_id, NULL, 600, 'EUR', 'credits', NULL, NULL)),
        p_stripe_id, 'requires_payment_method', NULL);
    RETURN pg_temp.succeeded(p_stripe_id);
END
$$;
CREATE FUNCTION pg_temp.credits(p_key text) RETURNS text
LANGUAGE sql AS $$ SELECT coalesce((SELECT balance FROM api.balances_v1(p_key, NULL) WHERE currency = 'EUR'), 'none') $$;
SELECT ok((SELECT key_id FROM api.create_api_key_v1('cara', 'cara-key', false, NULL)) IS NOT NULL
          AND (SELECT key_id FROM api.create_api_key_v1('dora', 'dora-key', false, NULL)) IS NOT NULL, 'cara and dora');
SELECT is((SELECT status FROM api.create_transaction_v1('cara-key', NULL, 'c-0', 1, 'EUR', NULL)) || ' '
          || (SELECT status FROM api.create_transaction_v1('dora-key', NULL, 'd-0', 1, 'EUR', NULL)), 'pending pending',
          'each has a first, small transaction');
SELECT is(pg_temp.top_up('cara-key', 'pi_cara') || ' ' || pg_temp.top_up('dora-key', 'pi_dora'), 'applied applied',
          'each buys 6.00 EUR of credits, and Stripe says succeeded');
SELECT results_eq($$SELECT subject_ref FROM tollgate.review_v1 WHERE account_id IN ('cara', 'dora') ORDER BY 1$$,
                  $$VALUES ('pi_cara'), ('pi_dora')$$, 'only the payments are flagged');
SELECT results_eq($$SELECT (SELECT status FROM api.get_transaction_v1('cara-key', NULL, 'credits-pi_cara')), pg_temp.credits('cara-key')$$,
                  $$VALUES ('pending', 'none')$$, 'the credits wait for the payment''s review: nothing to spend');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('cara-key', NULL, 'credits')$$,
                  $$VALUES (false, 'under_review')$$, 'can-continue agrees: the payment is held');
SELECT is((SELECT held_for_review FROM reporting.transactions WHERE reference = 'credits-pi_cara'), true,
          'held, as analysts see it');
SELECT throws_ok($$UPDATE tollgate.transactions SET status = 'settled' WHERE reference = 'credits-pi_cara'$$, 'TG050', NULL,
                 'not even a direct UPDATE settles them');
SELECT is(pg_temp.decide('pi_cara', 'rejected', 'stolen card'), 'rejected', 'cara''s payment rejected');
SELECT results_eq($$SELECT (SELECT status FROM api.get_transaction_v1('cara-key', NULL, 'credits-pi_cara')), pg_temp.credits('cara-key')$$,
                  $$VALUES ('failed', 'none')$$, 'rejected: the credits are never granted');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('cara-key', NULL, 'credits')$$,
                  $$VALUES (false, 'under_review')$$, 'and can-continue still refuses');
SELECT is(pg_temp.decide('pi_dora', 'approved'), 'approved', 'dora''s payment approved');
SELECT results_eq($$SELECT (SELECT status FROM api.get_transaction_v1('dora-key', NULL, 'credits-pi_dora')), pg_temp.credits('dora-key')$$,
                  $$VALUES ('settled', '6.00')$$, 'approved: the credits are settled');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('dora-key', NULL, 'credits')$$,
                  $$VALUES (true, 'succeeded')$$, 'and can-continue allows');

-- Credits settled before their payment's review could hold them (as before this rule): a
-- rejection is announced for the operator to refund them.
SELECT ok((SELECT key_id FROM api.create_api_key_v1('eve', 'eve-key', false, NULL)) IS NOT NULL, 'eve');
SELECT is((SELECT status FROM api.create_transaction_v1('eve-key', NULL, 'e-0', 1, 'EUR', NULL)), 'pending', 'eve''s first');
SELECT is(pg_temp.top_up('eve-key', 'pi_eve'), 'applied', 'eve buys 6.00 EUR of credits');
ALTER TABLE tollgate.transactions DISABLE TRIGGER transactions_25_review_gate;
UPDATE tollgate.transactions SET status = 'settled' WHERE reference = 'credits-pi_eve';
ALTER TABLE tollgate.transactions ENABLE TRIGGER transactions_25_review_gate;
SELECT is(pg_temp.credits('eve-key'), '6.00', 'settled the old way: 6.00 to spend');
SELECT is(pg_temp.decide('pi_eve', 'rejected'), 'rejected', 'eve''s payment rejected');
SELECT results_eq($$SELECT topic, payload ->> 'reference' FROM tollgate.outbox WHERE topic = 'transaction.review_rejected'$$,
                  $$VALUES ('transaction.review_rejected', 'credits-pi_eve')$$,
                  'the operator is told to refund it (a refund takes the credits back)');

SELECT * FROM finish();
ROLLBACK;
