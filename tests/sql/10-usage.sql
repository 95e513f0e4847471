-- Usage metering: idempotent events, per-event answers, credits debited with the events.
BEGIN;
SELECT plan(25);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('uma', 'uma-key', false, NULL)) IS NOT NULL, 'uma');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('vic', 'vic-key', false, NULL)) IS NOT NULL, 'vic');
SELECT results_eq($$SELECT metric, unit_price FROM api.set_metric_price_v1('ops-key', 'tokens', 0.0001, 'USD')$$,
                  $$VALUES ('tokens', 0.0001)$$, 'a token costs 0.0001 USD (0.01 cent)');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'uma', 'credits', 1.00, 'USD', NULL)), 'pending', 'uma''s credits');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'uma', 'credits', 'settled')), 'settled', 'arrive: 1.00 USD');

CREATE FUNCTION pg_temp.usage(p_key text, p_ids text[], p_metrics text[], p_quantities numeric[], p_accounts text[] DEFAULT NULL)
RETURNS TABLE (id text, outcome text, reason text, cost text)
LANGUAGE sql AS $$
    SELECT id, outcome, reason, cost FROM api.record_usage_v1(p_key, p_ids,
        coalesce(p_accounts, array_fill(NULL::text, ARRAY[cardinality(p_ids)])),
        array_fill(NULL::text, ARRAY[cardinality(p_ids)]), p_metrics, p_quantities,
        array_fill(now(), ARRAY[cardinality(p_ids)]))
$$;

SELECT results_eq(
    $$SELECT id, outcome, reason, cost FROM pg_temp.usage('uma-key', ARRAY['e1', 'e2', 'e1', 'e3', 'e4', 'e5'],
        ARRAY['tokens', 'calls', 'tokens', 'Tokens', 'tokens', 'tokens'], ARRAY[2500, 1, 2500, 1, 0, 2000]::numeric[])$$,
    $$VALUES ('e1', 'accepted', NULL, '0.25'), ('e2', 'accepted', NULL, NULL), ('e1', 'duplicate', NULL, NULL),
             ('e3', 'rejected', 'invalid_metric', NULL), ('e4', 'rejected', 'invalid_quantity', NULL),
             ('e5', 'accepted', NULL, '0.20')$$,
    'each event gets its own answer; priced ones are charged');
SELECT results_eq($$SELECT balance FROM api.balances_v1('uma-key', NULL)$$, ARRAY['0.55'], '0.45 was debited');
SELECT results_eq($$SELECT id, outcome FROM pg_temp.usage('uma-key', ARRAY['e1', 'e6'], ARRAY['tokens', 'tokens'], ARRAY[2500, 2500]::numeric[])$$,
                  $$VALUES ('e1', 'duplicate'), ('e6', 'accepted')$$, 'a retried batch charges only what is new');
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY['e7', 'e8'], ARRAY['tokens', 'tokens'], ARRAY[5000, 100]::numeric[])$$,
                  $$VALUES ('e7', 'rejected', 'insufficient_credits'), ('e8', 'accepted', NULL)$$,
                  'an event the credits cannot cover is rejected; smaller ones after it still fit');
SELECT results_eq($$SELECT balance FROM api.balances_v1('uma-key', NULL)$$, ARRAY['0.29'], 'never below zero');
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY['x1'], ARRAY['calls'], ARRAY[1]::numeric[], ARRAY['vic'])$$,
                  $$VALUES ('x1', 'rejected', 'unknown_account')$$, 'a key records usage only for its own account');
SELECT throws_ok($$SELECT * FROM pg_temp.usage('uma-key', array_fill('x'::text, ARRAY[1001]), array_fill('calls'::text, ARRAY[1001]), array_fill(1::numeric, ARRAY[1001]))$$,
                 '23514', NULL, 'a batch holds at most 1000 events');
SELECT results_eq($$SELECT metric, events::int, quantity_sum, cost FROM api.usage_v1('uma-key', NULL, NULL, 'day', NULL, NULL) ORDER BY metric$$,
                  $$VALUES ('calls', 1, 1::numeric, NULL), ('tokens', 4, 7100::numeric, '0.71')$$, 'usage aggregates per metric and day');
SELECT throws_ok($$UPDATE tollgate.usage_events SET quantity = 1$$, 'TG012', NULL, 'usage events are append-only');

-- Many small events cost what they add up to: 250 events of 200 tokens at 0.000002 USD
-- (0.04 cent each, so 0 cents each if rounded one by one) cost 0.10.
SELECT results_eq($$SELECT metric, unit_price FROM api.set_metric_price_v1('ops-key', 'small.tokens', 0.000002, 'USD')$$,
                  $$VALUES ('small.tokens', 0.000002)$$, 'a tiny unit price');
SELECT results_eq($$SELECT count(*)::int FROM pg_temp.usage('uma-key', ARRAY(SELECT 's' || g FROM generate_series(1, 250) g),
                    array_fill('small.tokens'::text, ARRAY[250]), array_fill(200::numeric, ARRAY[250])) WHERE outcome = 'accepted'$$,
                  ARRAY[250], 'all accepted');
SELECT results_eq($$SELECT balance FROM api.balances_v1('uma-key', NULL)$$, ARRAY['0.19'], 'and together they cost 0.10');

-- One bad event is rejected on its own; a repeat answers like its first occurrence.
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY['big', 'r1', 'r1', 'ok1'],
                    ARRAY['tokens', 'tokens', 'tokens', 'calls'], ARRAY[1e20, 10000, 10000, 1]::numeric[])$$,
                  $$VALUES ('big', 'rejected', 'invalid_quantity'), ('r1', 'rejected', 'insufficient_credits'),
                           ('r1', 'rejected', 'repeated_in_batch'), ('ok1', 'accepted', NULL)$$,
                  'a huge quantity, and a repeat of a rejected event, are rejected alone');

-- Crossing a cap's soft threshold with usage is announced once, and the hard cap holds.
SELECT results_eq($$SELECT hard_limit FROM api.set_spend_cap_v1('ops-key', 'uma', NULL, 'day', 'USD', 1.00, 80)$$,
                  ARRAY['1.00'], 'uma may spend 1.00 a day');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'uma', 'more', 5.00, 'USD', NULL)), 'pending', 'more credits');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'uma', 'more', 'settled')), 'settled', 'arrive');
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY['c1', 'c2'], ARRAY['tokens', 'tokens'],
                    ARRAY[1500, 2000]::numeric[])$$,
                  $$VALUES ('c1', 'accepted', NULL), ('c2', 'rejected', 'spend_cap_exceeded')$$,
                  'usage past the hard cap is rejected');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'), 1,
          'the soft threshold was announced, from usage');
SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'the ledger adds up');

SELECT * FROM finish();
ROLLBACK;
