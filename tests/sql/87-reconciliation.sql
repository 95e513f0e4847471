-- Reconciliation (db/sql/87-reconciliation.sql): lines given as api.reconciliation_line_v1[],
-- matched to transactions by reference, amount and currency; the batch is refused whole for a
-- line Tollgate cannot read; api.import_reconciliation_v1 (parallel arrays) answers the same.
BEGIN;
SELECT plan(12);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('shop', 'shop-key', false, NULL)) IS NOT NULL, 'shop');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'shop', 'inv-1', 10.00, 'USD', NULL)), 'pending', 'inv-1');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'shop', 'inv-1', 'settled')), 'settled', 'inv-1 settled');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'shop', 'inv-2', 20.00, 'USD', NULL)), 'pending', 'inv-2, not settled');

-- A line of the batch: (reference, amount in the currency's units, currency, date, account).
SELECT results_eq(
    $$SELECT line_no, reference, status, note FROM api.import_reconciliation_v2('ops-key', 'payouts', ARRAY[
        ('inv-1', 10.00, 'USD', current_date, NULL), ('inv-2', 20.00, 'USD', current_date, 'shop'),
        ('inv-1', 11.00, 'USD', current_date - 1, NULL), ('inv-9', 1.00, 'USD', current_date, NULL)
    ]::api.reconciliation_line_v1[])$$,
    $$VALUES (1, 'inv-1', 'matched', NULL), (2, 'inv-2', 'status_mismatch', 'ours is pending'),
             (3, 'inv-1', 'amount_mismatch', 'ours: 10.00 USD'), (4, 'inv-9', 'missing_ours', NULL)$$,
    'each line is matched on its own, in order');
SELECT results_eq(
    $$SELECT line_no, status FROM api.import_reconciliation_v2('ops-key', 'payouts', ARRAY[
        ('inv-1', 10.00, 'USD', current_date, NULL), ('inv-3', 3.00, 'USD', current_date, NULL)
    ]::api.reconciliation_line_v1[])$$,
    $$VALUES (1, 'duplicate'), (2, 'missing_ours')$$,
    'a line the source sent before is a duplicate');
SELECT is((SELECT count(*)::int FROM tollgate.reconciliation_lines), 5, 'duplicates are not stored again');

SELECT throws_ok(
    $$SELECT * FROM api.import_reconciliation_v2('ops-key', 'payouts', ARRAY[
        ('inv-5', 5.00, 'USD', current_date, NULL), ('inv-6', 6.00, 'USD', current_date, 'nobody')
    ]::api.reconciliation_line_v1[])$$,
    '23514', 'line 2: no account nobody', 'a line naming no account refuses the batch, naming the line');
SELECT throws_ok(
    $$SELECT * FROM api.import_reconciliation_v2('ops-key', 'payouts',
                                                  ARRAY[('inv-5', 5.00, 'USD', current_date, NULL), NULL]::api.reconciliation_line_v1[])$$,
    '23514', NULL, 'so does a NULL line');
SELECT throws_ok(
    $$SELECT * FROM api.import_reconciliation_v2('shop-key', 'payouts',
                                                  ARRAY[('inv-5', 5.00, 'USD', current_date, NULL)]::api.reconciliation_line_v1[])$$,
    'TG002', NULL, 'only an admin key imports');

-- api.import_reconciliation_v1 answers as v2 does: each run from the same state and undone
-- (every kind of answer: matched, status_mismatch, amount_mismatch, missing_ours, duplicate).
CREATE FUNCTION pg_temp.answer_undone(p_query text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    answer jsonb;
BEGIN
    -- The batch's id is new each time: a note naming it says "this batch".
    EXECUTE format($f$SELECT jsonb_agg(jsonb_build_array(x.line_no, x.reference, x.status, x.transaction_id,
                                                         replace(x.note, x.batch_id::text, 'this batch')))
                      FROM (%s) x$f$, p_query) INTO answer;
    RAISE SQLSTATE 'TGZZZ';
EXCEPTION WHEN SQLSTATE 'TGZZZ' THEN
    RETURN answer;
END
$$;
SELECT is(
    pg_temp.answer_undone($$SELECT * FROM api.import_reconciliation_v1('ops-key', 'bank',
        ARRAY['inv-1', 'inv-2', 'inv-1', 'inv-9', 'inv-9'], ARRAY[10.00, 20.00, 11.00, 1.00, 1.00],
        ARRAY['USD', 'USD', 'USD', 'USD', 'USD'], array_fill(current_date, ARRAY[5]),
        ARRAY[NULL, 'shop', NULL, NULL, NULL])$$),
    pg_temp.answer_undone($$SELECT * FROM api.import_reconciliation_v2('ops-key', 'bank', ARRAY[
        ('inv-1', 10.00, 'USD', current_date, NULL), ('inv-2', 20.00, 'USD', current_date, 'shop'),
        ('inv-1', 11.00, 'USD', current_date, NULL), ('inv-9', 1.00, 'USD', current_date, NULL),
        ('inv-9', 1.00, 'USD', current_date, NULL)]::api.reconciliation_line_v1[])$$),
    'v1 answers a batch as v2 does');

SELECT * FROM finish();
ROLLBACK;
