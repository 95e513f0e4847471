-- Agent gating: subscription, one-off payment, credits with holds, spend caps.
BEGIN;
SELECT plan(47);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ann', 'ann-key', false, NULL)) IS NOT NULL, 'ann');
SELECT results_eq($$SELECT price, currency FROM api.set_action_price_v1('ops-key', 'report.generate', 0.50, 'USD', NULL)$$,
                  $$VALUES ('0.50', 'USD')$$, 'a report costs 0.50 USD');
SELECT throws_ok($$SELECT * FROM api.set_action_price_v1('ann-key', 'report.generate', 0.01, 'USD', NULL)$$, 'TG002', NULL,
                 'only an admin sets prices');

CREATE FUNCTION pg_temp.authorize(p_key text DEFAULT 'ann-key', p_agent text DEFAULT NULL, p_cost numeric DEFAULT NULL,
                                   p_action text DEFAULT 'report.generate')
RETURNS TABLE (allowed boolean, via text, code text, remaining text, hold_id uuid)
LANGUAGE sql AS $$
    SELECT allowed, via, code, remaining, hold_id
    FROM api.authorize_v1(p_key, NULL, p_action, p_cost, CASE WHEN p_cost IS NOT NULL THEN 'USD' END, p_agent, NULL)
$$;

SELECT results_eq($$SELECT allowed, code, remaining FROM pg_temp.authorize()$$,
                  $$VALUES (false, 'payment_required', '0.00')$$, 'nothing entitles ann yet: payment required');
SELECT throws_ok($$SELECT * FROM api.authorize_v1('ann-key', NULL, 'unpriced.thing', NULL, NULL, NULL, NULL)$$, 'TG003', NULL,
                 'an action without a price or a cost is unknown');

-- A one-off payment for the action entitles one run.
CREATE FUNCTION pg_temp.paid(p_stripe_id text, p_purpose text, p_amount bigint DEFAULT 50) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM api.finish_payment_v1('ann-key',
        (SELECT payment_id FROM api.begin_payment_v1('ann-key', p_stripe_id, NULL, p_amount, 'USD', p_purpose, NULL, NULL)),
        p_stripe_id, 'requires_payment_method', NULL);
    RETURN (SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_' || p_stripe_id,
        'type', 'payment_intent.succeeded', 'created', extract(epoch FROM now())::bigint,
        'data', jsonb_build_object('object', jsonb_build_object('object', 'payment_intent', 'id', p_stripe_id, 'status', 'succeeded')))));
END
$$;
SELECT is(pg_temp.paid('pi_report_1', 'report.generate'), 'applied', 'ann pays for one report');
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize()$$, $$VALUES (true, 'payment')$$, 'the payment entitles it');
SELECT results_eq($$SELECT allowed, code FROM pg_temp.authorize()$$, $$VALUES (false, 'payment_required')$$,
                  'once: a second run needs another payment');
SELECT throws_ok($$UPDATE tollgate.payment_entitlements SET uses_left = 5$$, 'TG011', NULL, 'a used entitlement cannot be refilled');

-- Credits: a payment with purpose credits tops up the balance.
SELECT is(pg_temp.paid('pi_credits_1', 'credits', 200), 'applied', 'ann buys 2.00 USD of credits');
SELECT results_eq($$SELECT balance FROM api.balances_v1('ann-key', NULL)$$, ARRAY['2.00'], 'the credits are on her balance');
SELECT results_eq($$SELECT allowed, via, remaining FROM pg_temp.authorize()$$, $$VALUES (true, 'credits', '1.50')$$,
                  'a run holds 0.50 of them');
SELECT results_eq($$SELECT allowed, via, remaining FROM pg_temp.authorize()$$, $$VALUES (true, 'credits', '1.00')$$,
                  'holds add up');
CREATE TEMP TABLE h AS SELECT id, amount FROM tollgate.holds ORDER BY created_at;
SELECT results_eq($$SELECT status, captured_amount FROM api.capture_hold_v1('ann-key', (SELECT id FROM h LIMIT 1), 0.30)$$,
                  $$VALUES ('captured', '0.30')$$, 'capturing takes the actual cost');
SELECT results_eq($$SELECT balance FROM api.balances_v1('ann-key', NULL)$$, ARRAY['1.70'], 'only 0.30 left the balance');
SELECT results_eq($$SELECT status FROM api.capture_hold_v1('ann-key', (SELECT id FROM h LIMIT 1), 0.30)$$, ARRAY['captured'],
                  'capturing again with the same amount answers the same');
SELECT throws_ok($$SELECT * FROM api.capture_hold_v1('ann-key', (SELECT id FROM h LIMIT 1), 0.40)$$, 'TG010', NULL,
                 'but a finished hold cannot be captured anew');
SELECT throws_ok($$SELECT * FROM api.capture_hold_v1('ann-key', (SELECT id FROM h OFFSET 1 LIMIT 1), 0.51)$$, '23514', NULL,
                 'more than the hold is refused when the balance may not go negative');
SELECT results_eq($$SELECT status FROM api.release_hold_v1('ann-key', (SELECT id FROM h OFFSET 1 LIMIT 1))$$, ARRAY['released'],
                  'releasing frees the rest');
SELECT throws_ok($$SELECT * FROM api.release_hold_v1('ann-key', (SELECT id FROM h LIMIT 1))$$, 'TG010', NULL,
                 'a captured hold cannot be released');
SELECT results_eq($$SELECT allowed, remaining FROM pg_temp.authorize(p_cost => 0.01)$$, $$VALUES (true, '1.20')$$,
                  'an agent cannot declare less than the price: 0.50 held, not 0.01');
UPDATE tollgate.holds SET status = 'released' WHERE status = 'active' AND amount = 50 AND created_at = now()
  AND id = (SELECT id FROM tollgate.holds WHERE status = 'active' ORDER BY created_at DESC, id LIMIT 1);
SELECT results_eq($$SELECT allowed, remaining FROM pg_temp.authorize(p_cost => 1.70)$$, $$VALUES (true, '0.00')$$,
                  'but it may declare more: all 1.70 held');
SELECT results_eq($$SELECT allowed, code FROM pg_temp.authorize(p_cost => 0.01)$$, $$VALUES (false, 'payment_required')$$,
                  'held credits cannot be held twice');

-- Spend caps
SELECT results_eq($$SELECT hard_limit FROM api.set_spend_cap_v1('ops-key', 'ann', 'agent-1', 'day', 'USD', 1.00, 80)$$,
                  ARRAY['1.00'], 'agent-1 may spend 1.00 a day');
SELECT throws_ok($$SELECT * FROM api.set_spend_cap_v1('ann-key', 'ann', NULL, 'day', 'USD', 100, 80)$$, 'TG002', NULL,
                 'an agent cannot lift its own cap');
UPDATE tollgate.holds SET status = 'released' WHERE status = 'active';
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize('ann-key', 'agent-1', 0.50, 'work.metered')$$, $$VALUES (true, 'credits')$$, 'agent-1: 0.50');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'), 0, 'below 80%: no notice');
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize('ann-key', 'agent-1', 0.40, 'work.metered')$$, $$VALUES (true, 'credits')$$, 'agent-1: 0.90');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'), 1, 'past 80%: one notice');
SELECT results_eq($$SELECT allowed, code FROM pg_temp.authorize('ann-key', 'agent-1', 0.20, 'work.metered')$$,
                  $$VALUES (false, 'spend_cap_exceeded')$$, 'the hard cap refuses 1.10');
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize('ann-key', 'agent-2', 0.20, 'work.metered')$$, $$VALUES (true, 'credits')$$,
                  'another agent is not bound by agent-1''s cap');
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize('ann-key', 'agent-1', 0.10, 'work.metered')$$, $$VALUES (true, 'credits')$$,
                  'agent-1 may still reach its cap exactly');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'), 1, 'still one notice this period');

-- A payment entitles only if it paid the price, and then only the action.
SELECT results_eq($$SELECT price FROM api.set_action_price_v1('ops-key', 'report.big', 0.80, 'USD', NULL)$$,
                  $$VALUES ('0.80')$$, 'a big report costs 0.80 USD');
SELECT is(pg_temp.paid('pi_cheap', 'report.big', 50), 'applied', 'ann pays 0.50 for a 0.80 report');
SELECT is((SELECT count(*)::int FROM tollgate.payment_entitlements WHERE payment_intent_id =
          (SELECT id FROM tollgate.payment_intents WHERE stripe_id = 'pi_cheap')), 0, 'which entitles nothing');
SELECT throws_ok($$SELECT * FROM api.create_transaction_v1('ann-key', NULL, 'double', 0.50, 'USD', 'pi_cheap')$$, '23514', NULL,
                 'nor can an action''s payment become credits as well');

-- Held credits are not the account's to send away.
SELECT ok((SELECT key_id FROM api.create_api_key_v1('bob', 'bob-key', false, NULL)) IS NOT NULL, 'bob');
SELECT throws_ok(format($$SELECT * FROM api.transfer_v1('ann-key', NULL, 'bob', %s, 'USD', 'drain')$$,
                        (SELECT balance FROM api.balances_v1('ann-key', NULL))),
                 '23514', 'the balance would no longer cover the credits held for authorized work',
                 'a transfer that would eat into active holds is refused');

-- A subscription entitles every action.
SELECT is((SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', 'evt_sub_1', 'type', 'customer.subscription.created',
          'created', extract(epoch FROM now())::bigint, 'data', jsonb_build_object('object', jsonb_build_object(
          'object', 'subscription', 'id', 'sub_ann', 'status', 'active', 'metadata', jsonb_build_object('tollgate_account', 'ann'),
          'current_period_end', extract(epoch FROM now() + interval '30 days')::bigint, 'plan', jsonb_build_object('id', 'plan_pro')))))),
          'applied', 'ann subscribes');
SELECT results_eq($$SELECT allowed, via FROM pg_temp.authorize('ann-key', 'agent-1', 5.00)$$, $$VALUES (true, 'subscription')$$,
                  'the subscription covers it, whatever it costs');

-- Subscription events of one second, delivered out of order.
CREATE FUNCTION pg_temp.sub_event(p_id text, p_type text, p_status text, p_created bigint) RETURNS text
LANGUAGE sql AS $$
    SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', p_id, 'type', p_type, 'created', p_created,
        'data', jsonb_build_object('object', jsonb_build_object('object', 'subscription', 'id', 'sub_bob', 'status', p_status,
        'metadata', jsonb_build_object('tollgate_account', 'bob')))))
$$;
SELECT is(pg_temp.sub_event('evt_b2', 'customer.subscription.updated', 'active', 1000), 'applied', 'bob: active (sent second)');
SELECT is(pg_temp.sub_event('evt_b1', 'customer.subscription.created', 'incomplete', 1000), 'stale',
          'incomplete of the same second, sent first, arrives late: stale');
SELECT is(pg_temp.sub_event('evt_b3', 'customer.subscription.deleted', 'canceled', 1001), 'applied', 'bob cancels');
SELECT is(pg_temp.sub_event('evt_b4', 'customer.subscription.updated', 'active', 1001), 'rejected', 'canceled is final');
SELECT is((SELECT status::text FROM tollgate.subscriptions WHERE stripe_id = 'sub_bob'), 'canceled', 'bob''s subscription is over');

SELECT * FROM finish();
ROLLBACK;
