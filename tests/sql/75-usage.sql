-- Usage metering: idempotent events, per-event answers, credits debited with the events.
BEGIN;
SELECT plan(28);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('uma', 'uma-key', false, NULL)) IS NOT NULL, 'uma');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('vic', 'vic-key', false, NULL)) IS NOT NULL, 'vic');
SELECT results_eq($$SELECT metric, unit_price FROM api.set_metric_price_v1('ops-key', 'tokens', 0.0001, 'USD')$$,
                  $$VALUES ('tokens', 0.0001)$$, 'a token costs 0.0001 USD (0.01 cent)');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'uma', 'credits', 1.00, 'USD', NULL)), 'pending', 'uma''s credits');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'uma', 'credits', 'settled')), 'settled', 'arrive: 1.00 USD');

-- An event that happened now, with no agent; a batch of them, answered.
CREATE FUNCTION pg_temp.ev(p_id text, p_metric text, p_quantity numeric, p_account text DEFAULT NULL)
RETURNS api.usage_event_v1
LANGUAGE sql AS $$ SELECT ROW(p_id, p_account, NULL, p_metric, p_quantity, now())::api.usage_event_v1 $$;
CREATE FUNCTION pg_temp.usage(p_key text, p_events api.usage_event_v1[])
RETURNS TABLE (id text, outcome text, reason text, cost text)
LANGUAGE sql AS $$ SELECT id, outcome, reason, cost FROM api.record_usage_v2(p_key, p_events) $$;

SELECT results_eq(
    $$SELECT id, outcome, reason, cost FROM pg_temp.usage('uma-key', ARRAY[
        pg_temp.ev('e1', 'tokens', 2500), pg_temp.ev('e2', 'calls', 1), pg_temp.ev('e1', 'tokens', 2500),
        pg_temp.ev('e3', 'Tokens', 1), pg_temp.ev('e4', 'tokens', 0), pg_temp.ev('e5', 'tokens', 2000)])$$,
    $$VALUES ('e1', 'accepted', NULL, '0.25'), ('e2', 'accepted', NULL, NULL), ('e1', 'duplicate', NULL, NULL),
             ('e3', 'rejected', 'invalid_metric', NULL), ('e4', 'rejected', 'invalid_quantity', NULL),
             ('e5', 'accepted', NULL, '0.20')$$,
    'each event gets its own answer; priced ones are charged');
SELECT results_eq($$SELECT balance FROM api.balances_v1('uma-key', NULL)$$, ARRAY['0.55'], '0.45 was debited');
SELECT results_eq($$SELECT id, outcome FROM pg_temp.usage('uma-key', ARRAY[pg_temp.ev('e1', 'tokens', 2500), pg_temp.ev('e6', 'tokens', 2500)])$$,
                  $$VALUES ('e1', 'duplicate'), ('e6', 'accepted')$$, 'a retried batch charges only what is new');
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY[pg_temp.ev('e7', 'tokens', 5000), pg_temp.ev('e8', 'tokens', 100)])$$,
                  $$VALUES ('e7', 'rejected', 'insufficient_credits'), ('e8', 'accepted', NULL)$$,
                  'an event the credits cannot cover is rejected; smaller ones after it still fit');
SELECT results_eq($$SELECT balance FROM api.balances_v1('uma-key', NULL)$$, ARRAY['0.29'], 'never below zero');
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY[pg_temp.ev('x1', 'calls', 1, 'vic')])$$,
                  $$VALUES ('x1', 'rejected', 'unknown_account')$$, 'a key records usage only for its own account');
SELECT throws_ok($$SELECT * FROM pg_temp.usage('uma-key', array_fill(pg_temp.ev('x', 'calls', 1), ARRAY[1001]))$$,
                 '23514', NULL, 'a batch holds at most 1000 events');
SELECT results_eq($$SELECT metric, events::int, quantity_sum, cost FROM api.usage_v1('uma-key', NULL, NULL, 'day', NULL, NULL) ORDER BY metric$$,
                  $$VALUES ('calls', 1, 1::numeric, NULL), ('tokens', 4, 7100::numeric, '0.71')$$, 'usage aggregates per metric and day');
SELECT throws_ok($$UPDATE tollgate.usage_events SET quantity = 1$$, 'TG012', NULL, 'usage events are append-only');

-- Many small events cost what they add up to: 250 events of 200 tokens at 0.000002 USD
-- (0.04 cent each, so 0 cents each if rounded one by one) cost 0.10.
SELECT results_eq($$SELECT metric, unit_price FROM api.set_metric_price_v1('ops-key', 'small.tokens', 0.000002, 'USD')$$,
                  $$VALUES ('small.tokens', 0.000002)$$, 'a tiny unit price');
SELECT results_eq($$SELECT count(*)::int FROM pg_temp.usage('uma-key',
                    ARRAY(SELECT pg_temp.ev('s' || g, 'small.tokens', 200) FROM generate_series(1, 250) g)) WHERE outcome = 'accepted'$$,
                  ARRAY[250], 'all accepted');
SELECT results_eq($$SELECT balance FROM api.balances_v1('uma-key', NULL)$$, ARRAY['0.19'], 'and together they cost 0.10');

-- One bad event is rejected on its own; a repeat answers like its first occurrence.
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY[pg_temp.ev('big', 'tokens', 1e20),
                    pg_temp.ev('r1', 'tokens', 10000), pg_temp.ev('r1', 'tokens', 10000), pg_temp.ev('ok1', 'calls', 1)])$$,
                  $$VALUES ('big', 'rejected', 'invalid_quantity'), ('r1', 'rejected', 'insufficient_credits'),
                           ('r1', 'rejected', 'repeated_in_batch'), ('ok1', 'accepted', NULL)$$,
                  'a huge quantity, and a repeat of a rejected event, are rejected alone');

-- Crossing a cap's soft threshold with usage is announced once, and the hard cap holds.
SELECT results_eq($$SELECT hard_limit FROM api.set_spend_cap_v1('ops-key', 'uma', NULL, 'day', 'USD', 1.00, 80)$$,
                  ARRAY['1.00'], 'uma may spend 1.00 a day');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'uma', 'more', 5.00, 'USD', NULL)), 'pending', 'more credits');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'uma', 'more', 'settled')), 'settled', 'arrive');
SELECT results_eq($$SELECT id, outcome, reason FROM pg_temp.usage('uma-key', ARRAY[pg_temp.ev('c1', 'tokens', 1500), pg_temp.ev('c2', 'tokens', 2000)])$$,
                  $$VALUES ('c1', 'accepted', NULL), ('c2', 'rejected', 'spend_cap_exceeded')$$,
                  'usage past the hard cap is rejected');
SELECT is((SELECT count(*)::int FROM tollgate.outbox WHERE topic = 'spend.threshold_reached'), 1,
          'the soft threshold was announced, from usage');
SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'the ledger adds up');

-- api.record_usage_v1 (parallel arrays, kept for deployed callers) answers as v2 does: each is
-- run from the same state and undone (pg_temp.answer_undone).
CREATE FUNCTION pg_temp.answer_undone(p_query text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    answer jsonb;
BEGIN
    EXECUTE format('SELECT jsonb_agg(to_jsonb(x)) FROM (%s) x', p_query) INTO answer;
    RAISE SQLSTATE 'TGZZZ';
EXCEPTION WHEN SQLSTATE 'TGZZZ' THEN
    RETURN answer;
END
$$;
SELECT is(
    pg_temp.answer_undone($$SELECT * FROM api.record_usage_v1('ops-key',
        ARRAY['e1', 'v1', 'v1', 'v2', 'v3', 'v4', 'v5'], ARRAY['uma', 'uma', 'uma', 'uma', 'uma', 'nobody', NULL],
        ARRAY['a-1', 'a-1', 'a-1', NULL, 'a-2', NULL, NULL], ARRAY['tokens', 'tokens', 'tokens', 'Bad', 'tokens', 'calls', 'calls'],
        ARRAY[2500, 100, 100, 1, 1e6, 1, 1]::numeric[], array_fill(now(), ARRAY[7]))$$),
    pg_temp.answer_undone($$SELECT * FROM api.record_usage_v2('ops-key', ARRAY[
        ('e1', 'uma', 'a-1', 'tokens', 2500, now()), ('v1', 'uma', 'a-1', 'tokens', 100, now()),
        ('v1', 'uma', 'a-1', 'tokens', 100, now()), ('v2', 'uma', NULL, 'Bad', 1, now()),
        ('v3', 'uma', 'a-2', 'tokens', 1e6, now()), ('v4', 'nobody', NULL, 'calls', 1, now()),
        ('v5', NULL, NULL, 'calls', 1, now())]::api.usage_event_v1[])$$),
    'v1 answers a batch as v2 does');
SELECT results_eq(
    $$SELECT x.id, x.outcome, x.reason, x.cost FROM jsonb_to_recordset(pg_temp.answer_undone($q$
        SELECT * FROM api.record_usage_v2('ops-key', ARRAY[
            ('e1', 'uma', 'a-1', 'tokens', 2500, now()), ('v1', 'uma', 'a-1', 'tokens', 100, now()),
            ('v1', 'uma', 'a-1', 'tokens', 100, now()), ('v2', 'uma', NULL, 'Bad', 1, now()),
            ('v3', 'uma', 'a-2', 'tokens', 1e6, now()), ('v4', 'nobody', NULL, 'calls', 1, now()),
            ('v5', NULL, NULL, 'calls', 1, now())]::api.usage_event_v1[])$q$))
        AS x (ord int, id text, outcome text, reason text, cost text) ORDER BY x.ord$$,
    $$VALUES ('e1', 'duplicate', NULL, NULL), ('v1', 'accepted', NULL, '0.01'), ('v1', 'duplicate', NULL, NULL),
             ('v2', 'rejected', 'invalid_metric', NULL), ('v3', 'rejected', 'insufficient_credits', NULL),
             ('v4', 'rejected', 'unknown_account', NULL), ('v5', 'accepted', NULL, NULL)$$,
    'the batch compared covers every kind of answer');
SELECT throws_ok($$SELECT * FROM api.record_usage_v1('uma-key', ARRAY['m1', 'm2'], NULL, NULL, ARRAY['calls'],
                                                      ARRAY[1, 1]::numeric[], ARRAY[now(), now()])$$,
                 '23514', NULL, 'v1 still refuses arrays of different lengths');

SELECT * FROM finish();
ROLLBACK;
