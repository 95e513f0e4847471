-- Usage metering: idempotent events, per-event answers, credits debited with the events.
BEGIN;
SELECT plan(16);

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
SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'the ledger adds up');

SELECT * FROM finish();
ROLLBACK;
