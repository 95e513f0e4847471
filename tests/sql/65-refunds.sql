-- Refunds, disputes, debts and subscription periods: what Stripe takes back is taken back from
-- what the payment granted, never silently below zero.
BEGIN;
SELECT plan(80);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('rae', 'rae-key', false, NULL)) IS NOT NULL, 'rae');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('sam', 'sam-key', false, NULL)) IS NOT NULL, 'sam');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('dee', 'dee-key', false, NULL)) IS NOT NULL, 'dee');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('run', 'run-key', false, NULL)) IS NOT NULL, 'run');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('subby', 'subby-key', false, NULL)) IS NOT NULL, 'subby');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('nosub', 'nosub-key', false, NULL)) IS NOT NULL, 'nosub');
SELECT is((SELECT price FROM api.set_action_price_v1('ops-key', 'report.generate', 0.50, 'USD', NULL)), '0.50',
          'report.generate costs 0.50 USD');

-- A payment of p_amount USD cents for p_purpose, succeeded at Stripe.
CREATE FUNCTION pg_temp.buy(p_key text, p_pi text, p_amount bigint, p_purpose text DEFAULT 'credits') RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM api.finish_payment_v1(p_key,
        (SELECT payment_id FROM api.begin_payment_v1(p_key, p_pi, NULL, p_amount, 'USD', p_purpose, NULL, NULL)),
        p_pi, 'requires_payment_method', NULL);
    RETURN (SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_ok_' || p_pi,
        'type', 'payment_intent.succeeded', 'created', extract(epoch FROM now())::bigint - 100,
        'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', p_pi,
                                                                'status', 'succeeded')))));
END
$$;
CREATE FUNCTION pg_temp.ev(p_id text, p_type text, p_object jsonb, p_ago integer DEFAULT 0) RETURNS text
LANGUAGE sql AS $$
    SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', p_id, 'type', p_type,
        'created', extract(epoch FROM now())::bigint - p_ago, 'data', jsonb_build_object('object', p_object)))
$$;
-- The Stripe charge of a payment of p_amount cents, p_refunded of them refunded.
CREATE FUNCTION pg_temp.charge(p_pi text, p_amount bigint, p_refunded bigint) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('object', 'charge', 'id', 'ch_' || p_pi, 'payment_intent', p_pi, 'currency', 'usd',
                              'amount', p_amount, 'amount_refunded', p_refunded, 'refunded', p_refunded = p_amount)
$$;
CREATE FUNCTION pg_temp.dispute(p_id text, p_pi text, p_amount bigint, p_status text) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('object', 'dispute', 'id', p_id, 'payment_intent', p_pi, 'charge', 'ch_' || p_pi,
                              'currency', 'usd', 'amount', p_amount, 'status', p_status)
$$;
CREATE FUNCTION pg_temp.bal(p_account text, p_name text DEFAULT 'main') RETURNS bigint
LANGUAGE sql AS $$
    SELECT la.balance FROM tollgate.ledger_accounts la JOIN tollgate.accounts a ON a.id = la.account_uuid
    WHERE a.external_id = p_account AND la.name = p_name AND la.currency = 'USD'
$$;
CREATE FUNCTION pg_temp.txn(p_pi text) RETURNS text
LANGUAGE sql AS $$ SELECT status::text FROM tollgate.transactions WHERE reference = 'credits-' || p_pi $$;
CREATE FUNCTION pg_temp.authorize(p_key text) RETURNS TABLE (allowed boolean, via text, code text)
LANGUAGE sql AS $$ SELECT allowed, via, code FROM api.authorize_v1(p_key, NULL, 'report.generate', NULL, NULL, NULL, NULL) $$;

-- ---------------------------------------------------------------------------------------------
-- A partial refund takes back the refunded amount of credits
-- ---------------------------------------------------------------------------------------------
SELECT is(pg_temp.buy('rae-key', 'pi_rae', 1000), 'applied', 'rae buys 10.00 USD of credits');
SELECT is(pg_temp.bal('rae'), 1000::bigint, 'rae has 10.00');
SELECT is(pg_temp.ev('evt_rae_r1', 'charge.refunded', pg_temp.charge('pi_rae', 1000, 300)), 'applied',
          'Stripe refunds 3.00 of it: the event is applied');
SELECT is(pg_temp.bal('rae'), 700::bigint, 'the 3.00 of credits are taken back');
SELECT results_eq($$SELECT status::text, amount_refunded FROM tollgate.payment_intents WHERE stripe_id = 'pi_rae'$$,
                  $$VALUES ('succeeded', 300::bigint)$$, 'the payment stays succeeded, 3.00 refunded');
SELECT is(pg_temp.txn('pi_rae'), 'settled', 'its transaction stays settled');
SELECT is(pg_temp.ev('evt_rae_r1b', 'charge.refunded', pg_temp.charge('pi_rae', 1000, 300)), 'stale',
          'the same refunded amount again (another event) is counted once');
SELECT is(pg_temp.bal('rae'), 700::bigint, '... and takes nothing more');
SELECT is(pg_temp.ev('evt_rae_bad', 'charge.refunded', pg_temp.charge('pi_rae', 1000, 300) || '{"amount_refunded": 1200}'),
          'rejected', 'more refunded than the payment is rejected');
SELECT throws_ok($$UPDATE tollgate.payment_intents SET amount_refunded = 100 WHERE stripe_id = 'pi_rae'$$, 'TG011', NULL,
                 'what Stripe refunded never goes back down, not even by a direct UPDATE');

-- ---------------------------------------------------------------------------------------------
-- A full refund of spent credits: what is left, then a recorded debt; no silent negative balance
-- ---------------------------------------------------------------------------------------------
SELECT is((SELECT amount FROM api.transfer_v1('rae-key', NULL, 'sam', 6.00, 'USD', 'spend-1')), '6.00',
          'rae spends 6.00 (a transfer to sam)');
SELECT is(pg_temp.ev('evt_rae_r2', 'charge.refunded', pg_temp.charge('pi_rae', 1000, 1000), -1), 'applied',
          'then Stripe refunds the whole payment');
SELECT is(pg_temp.bal('rae'), 0::bigint, 'the wallet gives what it has left, and stays at zero');
SELECT is(pg_temp.bal('rae', 'debt'), -600::bigint, 'the 6.00 already spent is rae''s recorded debt');
SELECT results_eq($$SELECT tb.reason, tb.amount::bigint, tb.from_wallet, tb.as_debt FROM tollgate.payment_takebacks tb
                    JOIN tollgate.payment_intents p ON p.id = tb.payment_intent_id WHERE p.stripe_id = 'pi_rae' ORDER BY tb.id$$,
                  $$VALUES ('refund', 300::bigint, 300::bigint, 0::bigint), ('refund', 700::bigint, 100::bigint, 600::bigint)$$,
                  'each taking back is recorded: from the wallet, and as debt');
SELECT is(pg_temp.txn('pi_rae'), 'reversed', 'taken back in full, the transaction is reversed');
SELECT ok(EXISTS (SELECT FROM tollgate.outbox WHERE topic = 'debt.recorded' AND (payload ->> 'amount')::bigint = 600),
          'the debt is announced');
SELECT ok(NOT EXISTS (SELECT FROM tollgate.outbox WHERE topic = 'transaction.reversal_refused'),
          'no refund is refused any more');
SELECT is_empty($$SELECT la.id FROM tollgate.ledger_accounts la WHERE la.name <> 'debt' AND la.balance < 0
                  AND la.account_uuid <> '00000000-0000-0000-0000-000000000000'$$,
                'no account balance went negative but the recorded debt');
SELECT is(pg_temp.buy('rae-key', 'pi_rae2', 500), 'applied', 'rae tops up 5.00');
SELECT results_eq($$SELECT pg_temp.bal('rae'), pg_temp.bal('rae', 'debt')$$, $$VALUES (0::bigint, -100::bigint)$$,
                  'the top-up pays the debt first');
SELECT is(pg_temp.buy('rae-key', 'pi_rae3', 1000), 'applied', 'and 10.00 more');
SELECT results_eq($$SELECT pg_temp.bal('rae'), pg_temp.bal('rae', 'debt')$$, $$VALUES (900::bigint, 0::bigint)$$,
                  'the debt is paid, the rest is credits');
SELECT ok(EXISTS (SELECT FROM tollgate.outbox WHERE topic = 'debt.repaid'), 'repayments are announced');

-- ---------------------------------------------------------------------------------------------
-- Refunds asked through Tollgate (admin keys; claimed before Stripe is called)
-- ---------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('rae-key', 'pi_rae3', 'r-1', NULL, NULL)$$, 'TG002', NULL,
                 'only an admin key refunds');
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('ops-key', 'pi_rae3', 'r-1', 10.01, NULL)$$, '23514', NULL,
                 'not more than the payment');
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('ops-key', 'pi_rae3', 'r-1', 1, 100)$$, '23514', NULL,
                 'amount or amount_minor, not both');
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('ops-key', 'pi_rae', 'r-1', NULL, NULL)$$, '23514', NULL,
                 'a payment refunded in full cannot be refunded');
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('ops-key', 'pi_nobody', 'r-1', NULL, NULL)$$, 'TG003', NULL,
                 'an unknown payment is not found');
SELECT results_eq($$SELECT replayed, amount, stripe_amount FROM api.begin_refund_v1('ops-key', 'pi_rae3', 'r-1', 2.50, NULL)$$,
                  $$VALUES (false, 250::bigint, 250::bigint)$$, 'a refund of 2.50 is claimed, 250 in Stripe''s units');
SELECT is(api.finish_refund_v1('ops-key', (SELECT id FROM tollgate.refunds WHERE idempotency_key = 'r-1'), 're_one', 'succeeded')
              - 'created_at' - 'updated_at' - 'id' - 'payment_id',
          jsonb_build_object('account_id', 'rae', 'amount', '2.50', 'amount_minor', 250, 'currency', 'USD',
                             'payment_stripe_id', 'pi_rae3', 'status', 'succeeded', 'stripe_id', 're_one'),
          'and recorded with Stripe''s refund');
SELECT results_eq($$SELECT replayed, response ->> 'amount' FROM api.begin_refund_v1('ops-key', 'pi_rae3', 'r-1', NULL, 250)$$,
                  $$VALUES (true, '2.50')$$, 'the same key and body (in minor units) replays it');
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('ops-key', 'pi_rae3', 'r-1', 3, NULL)$$, 'TG020', NULL,
                 'the same key with another amount is refused');
SELECT is(pg_temp.bal('rae'), 650::bigint, 'Stripe answered succeeded: its 2.50 of credits are taken back at once');
SELECT is(pg_temp.ev('evt_re_one', 'refund.updated', jsonb_build_object('object', 'refund', 'id', 're_one',
              'payment_intent', 'pi_rae3', 'charge', 'ch_pi_rae3', 'currency', 'usd', 'amount', 250, 'status', 'succeeded')),
          'applied', 'Stripe says the refund succeeded');
SELECT is(pg_temp.bal('rae'), 650::bigint, 'and takes nothing more');
SELECT is(pg_temp.ev('evt_re_one_c', 'charge.refunded', pg_temp.charge('pi_rae3', 1000, 250)), 'stale',
          'charge.refunded for the same 2.50 counts it once');
SELECT results_eq($$SELECT replayed, amount FROM api.begin_refund_v1('ops-key', 'pi_rae3', 'r-2', NULL, NULL)$$,
                  $$VALUES (false, 750::bigint)$$, 'no amount: the rest not yet refunded');
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('ops-key', 'pi_rae3', 'r-3', NULL, 1)$$, '23514', NULL,
                 'nothing is left to refund once the rest is asked for');

-- ---------------------------------------------------------------------------------------------
-- Disputes freeze, release, take back
-- ---------------------------------------------------------------------------------------------
SELECT is(pg_temp.buy('dee-key', 'pi_dee', 2000), 'applied', 'dee buys 20.00 of credits');
SELECT is(pg_temp.ev('evt_dp1_a', 'charge.dispute.created', pg_temp.dispute('dp_one', 'pi_dee', 2000, 'needs_response'), 10),
          'applied', 'the payment is disputed');
SELECT results_eq($$SELECT pg_temp.bal('dee'), pg_temp.bal('dee', 'disputed')$$, $$VALUES (0::bigint, 2000::bigint)$$,
                  'its credits are frozen');
SELECT results_eq($$SELECT allowed, code FROM pg_temp.authorize('dee-key')$$, $$VALUES (false, 'payment_required')$$,
                  'frozen credits cannot be spent');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('dee-key', NULL, 'credits')$$,
                  $$VALUES (false, 'disputed')$$, 'can-continue agrees: a disputed payment entitles nothing');
SELECT throws_ok($$SELECT * FROM api.begin_refund_v1('ops-key', 'pi_dee', 'r-dee', NULL, NULL)$$, '23514', NULL,
                 'a disputed payment is not refunded by hand');
SELECT is(pg_temp.ev('evt_dp1_b', 'charge.dispute.closed', pg_temp.dispute('dp_one', 'pi_dee', 2000, 'won')), 'applied',
          'the dispute is won');
SELECT results_eq($$SELECT allowed, status FROM api.can_continue_v1('dee-key', NULL, 'credits')$$,
                  $$VALUES (true, 'succeeded')$$, 'won: it entitles again');
SELECT results_eq($$SELECT pg_temp.bal('dee'), pg_temp.bal('dee', 'disputed')$$, $$VALUES (2000::bigint, 0::bigint)$$,
                  'the credits are released');
SELECT is(pg_temp.ev('evt_dp1_c', 'charge.dispute.updated', pg_temp.dispute('dp_one', 'pi_dee', 2000, 'under_review'), 5),
          'stale', 'an older event of it changes nothing');
SELECT is(pg_temp.buy('dee-key', 'pi_dee2', 1000), 'applied', 'dee buys 10.00 more');
SELECT is(pg_temp.ev('evt_dp2_a', 'charge.dispute.created', pg_temp.dispute('dp_two', 'pi_dee2', 1000, 'needs_response'), 10),
          'applied', 'that payment is disputed');
SELECT results_eq($$SELECT pg_temp.bal('dee'), pg_temp.bal('dee', 'disputed')$$, $$VALUES (2000::bigint, 1000::bigint)$$,
                  'only what it granted is frozen');
SELECT is(pg_temp.ev('evt_dp2_b', 'charge.dispute.closed', pg_temp.dispute('dp_two', 'pi_dee2', 1000, 'lost')), 'applied',
          'and lost');
SELECT results_eq($$SELECT pg_temp.bal('dee'), pg_temp.bal('dee', 'disputed'), pg_temp.txn('pi_dee2')$$,
                  $$VALUES (2000::bigint, 0::bigint, 'reversed')$$, 'the frozen credits are taken back like a refund');
SELECT is(pg_temp.ev('evt_dp2_c', 'charge.dispute.updated', pg_temp.dispute('dp_two', 'pi_dee2', 1000, 'needs_response'), -5),
          'rejected', 'a lost dispute is final');

-- A paid run: frozen while disputed, taken back once a refund leaves less than the price paid
SELECT is(pg_temp.buy('run-key', 'pi_run', 50, 'report.generate'), 'applied', 'run pays for one report');
SELECT is(pg_temp.ev('evt_dp3_a', 'charge.dispute.created', pg_temp.dispute('dp_three', 'pi_run', 50, 'needs_response'), 10),
          'applied', 'the payment is disputed');
SELECT results_eq($$SELECT allowed, code FROM pg_temp.authorize('run-key')$$, $$VALUES (false, 'payment_required')$$,
                  'its run is frozen');
SELECT throws_ok($$UPDATE tollgate.payment_entitlements SET uses_left = 0, used_at = now()
                   WHERE payment_intent_id = (SELECT id FROM tollgate.payment_intents WHERE stripe_id = 'pi_run')$$,
                 '23514', NULL, 'not even usable by a direct UPDATE');
SELECT is(pg_temp.ev('evt_dp3_b', 'charge.dispute.closed', pg_temp.dispute('dp_three', 'pi_run', 50, 'won')), 'applied', 'won');
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize('run-key')$$, $$VALUES (true, 'payment')$$,
                  'the run is usable again');
SELECT is(pg_temp.buy('run-key', 'pi_run2', 80, 'report.generate'), 'applied', 'run pays 0.80 for another report');
SELECT is(pg_temp.ev('evt_run2_a', 'charge.refunded', pg_temp.charge('pi_run2', 80, 20)), 'applied', '0.20 refunded');
SELECT is((SELECT uses_left FROM tollgate.payment_entitlements e JOIN tollgate.payment_intents p ON p.id = e.payment_intent_id
           WHERE p.stripe_id = 'pi_run2'), 1, '0.60 still pays the 0.50 price: the run stays');
SELECT is(pg_temp.ev('evt_run2_b', 'charge.refunded', pg_temp.charge('pi_run2', 80, 40)), 'applied', '0.40 refunded');
SELECT is((SELECT uses_left FROM tollgate.payment_entitlements e JOIN tollgate.payment_intents p ON p.id = e.payment_intent_id
           WHERE p.stripe_id = 'pi_run2'), 0, '0.40 no longer does: the unused run is taken back');

-- ---------------------------------------------------------------------------------------------
-- Subscriptions: the period end, on the subscription or on its items; none entitles nothing
-- ---------------------------------------------------------------------------------------------
SELECT is(pg_temp.ev('evt_sub_1', 'customer.subscription.created', jsonb_build_object('object', 'subscription',
              'id', 'sub_items', 'status', 'active', 'metadata', jsonb_build_object('tollgate_account', 'subby'),
              'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object('object', 'subscription_item',
                  'current_period_end', extract(epoch FROM now())::bigint + 3600))))), 'applied',
          'a subscription whose period end is on its items (newer Stripe API versions)');
SELECT is((SELECT current_period_end FROM tollgate.subscriptions WHERE stripe_id = 'sub_items'),
          to_timestamp(extract(epoch FROM now())::bigint + 3600), 'the period end is read from the items');
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize('subby-key')$$, $$VALUES (true, 'subscription')$$,
                  'it entitles');
SELECT is(pg_temp.ev('evt_sub_2', 'customer.subscription.created', jsonb_build_object('object', 'subscription',
              'id', 'sub_noend', 'status', 'active', 'metadata', jsonb_build_object('tollgate_account', 'nosub'))),
          'applied', 'a subscription without any period end');
SELECT results_eq($$SELECT allowed, code FROM pg_temp.authorize('nosub-key')$$, $$VALUES (false, 'payment_required')$$,
                  'is not entitled forever: not entitled');

SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'the ledger adds up');

SELECT * FROM finish();
ROLLBACK;
