-- Transactions: the lifecycle, its postings, and following a Stripe payment.
BEGIN;
SELECT plan(41);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('tia', 'tia-key', false, NULL)) IS NOT NULL, 'tia');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('tom', 'tom-key', false, NULL)) IS NOT NULL, 'tom');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'boss-key', true, NULL)) IS NOT NULL, 'the settling service''s admin key');

SELECT results_eq($$SELECT reference, amount, amount_minor, currency, status
                    FROM api.create_transaction_v1('tia-key', NULL, 'order-1', '1250.50', 'USD', NULL)$$,
                  $$VALUES ('order-1', '1250.50', 125050::bigint, 'USD', 'pending')$$, 'a pending transaction');
SELECT throws_ok($$SELECT * FROM api.create_transaction_v1('tia-key', NULL, 'order-1', 1, 'USD', NULL)$$, '23505', NULL,
                 'a reference is unique per account');
SELECT is((SELECT status FROM api.create_transaction_v1('tom-key', NULL, 'order-1', 1, 'USD', NULL)), 'pending',
          'another account may use the same reference');
SELECT throws_ok($$SELECT * FROM api.create_transaction_v1('tia-key', NULL, 'order 2', 1, 'USD', NULL)$$, '23514', NULL,
                 'references are URL-safe words');

-- The lifecycle, whoever moves it
CREATE FUNCTION pg_temp.txn(p_reference text, p_status text DEFAULT 'pending', p_currency text DEFAULT 'EUR') RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM api.create_transaction_v1('tia-key', NULL, p_reference, 10, p_currency, NULL);
    IF p_status IN ('settled', 'failed', 'reversed') THEN
        PERFORM api.move_transaction_v1('boss-key', 'tia', p_reference, CASE p_status WHEN 'reversed' THEN 'settled' ELSE p_status END);
    END IF;
    IF p_status = 'reversed' THEN
        PERFORM api.move_transaction_v1('boss-key', 'tia', p_reference, 'reversed');
    END IF;
    RETURN p_reference;
END
$$;
CREATE TEMP TABLE move (from_status text, to_status text);
INSERT INTO move VALUES ('pending', 'reversed'), ('settled', 'pending'), ('settled', 'failed'), ('failed', 'settled'),
                        ('failed', 'pending'), ('reversed', 'settled'), ('reversed', 'pending');
SELECT throws_ok(
    format('UPDATE tollgate.transactions SET status = %L WHERE reference = %L', m.to_status,
           pg_temp.txn('bad-' || m.from_status || '-' || m.to_status, m.from_status, 'CHF')),
    'TG010', NULL, format('%s -> %s is refused', m.from_status, m.to_status))
FROM move m;

SELECT throws_ok($$INSERT INTO tollgate.transactions (account_uuid, reference, amount, currency, status)
                   SELECT id, 'born-settled', 100, 'USD', 'settled' FROM tollgate.accounts WHERE external_id = 'tia'$$,
                 'TG010', NULL, 'a transaction starts pending');

-- A direct UPDATE in psql posts to the ledger like the api does.
SELECT is(pg_temp.txn('direct'), 'direct', 'a pending EUR 10.00');
UPDATE tollgate.transactions SET status = 'settled' WHERE reference = 'direct';
SELECT results_eq($$SELECT balance FROM api.balances_v1('tia-key', NULL) WHERE currency = 'EUR'$$, ARRAY['10.00'],
                  'settling from psql credited the balance');
SELECT throws_ok($$UPDATE tollgate.transactions SET settlement_posting_id = NULL WHERE reference = 'direct'$$,
                 'TG011', NULL, 'the posting of a settled transaction cannot be detached');
SELECT throws_ok($$UPDATE tollgate.transactions SET amount = 1 WHERE reference = 'direct'$$, 'TG011', NULL,
                 'nor its amount changed');
SELECT is((SELECT status FROM api.move_transaction_v1('boss-key', 'tia', 'direct', 'reversed')), 'reversed',
          'reversing it ...');
SELECT results_eq($$SELECT balance FROM api.balances_v1('tia-key', NULL) WHERE currency = 'EUR'$$, ARRAY['0.00'],
                  '... takes the money back with a compensating posting');
SELECT results_eq($$SELECT p.kind::text, count(e.*)::int FROM tollgate.transactions t
                      JOIN tollgate.ledger_postings p ON p.id IN (t.settlement_posting_id, t.reversal_posting_id)
                      JOIN tollgate.ledger_entries e ON e.posting_id = p.id
                    WHERE t.reference = 'direct' GROUP BY p.kind ORDER BY 1$$,
                  $$VALUES ('reversal', 2), ('settlement', 2)$$, 'the original posting stays; the reversal mirrors it');
SELECT throws_ok($$SELECT tollgate.reverse_posting(settlement_posting_id, account_uuid) FROM tollgate.transactions WHERE reference = 'direct'$$,
                 '23505', NULL, 'a posting is reversed at most once');
SELECT results_eq($$SELECT topic FROM tollgate.outbox WHERE payload ->> 'reference' = 'direct' ORDER BY id$$,
                  ARRAY['transaction.settled', 'transaction.reversed'], 'each move is announced');

-- A reversal the wallet cannot absorb
SELECT is(pg_temp.txn('spent', 'settled', 'GBP'), 'spent', 'tia has 10.00 GBP');
SELECT ok((SELECT NOT replayed FROM api.transfer_v1('tia-key', NULL, 'tom', 8, 'GBP', 'spend')), 'and spends 8.00');
SELECT throws_ok($$SELECT * FROM api.move_transaction_v1('boss-key', 'tia', 'spent', 'reversed')$$, '23514', NULL,
                 'reversing the deposit would overdraw the wallet: refused');

-- Following a Stripe payment
CREATE FUNCTION pg_temp.pay(p_stripe_id text) RETURNS text
LANGUAGE sql AS $$
    SELECT api.finish_payment_v1('tia-key',
        (SELECT payment_id FROM api.begin_payment_v1('tia-key', p_stripe_id, NULL, 2500, 'USD', NULL, NULL, NULL)),
        p_stripe_id, 'requires_payment_method', NULL) ->> 'stripe_id'
$$;
CREATE FUNCTION pg_temp.stripe(p_id text, p_type text, p_object jsonb) RETURNS text
LANGUAGE sql AS $$
    SELECT outcome FROM api.ingest_stripe_event_v1(jsonb_build_object('id', p_id, 'type', p_type,
        'created', extract(epoch FROM now())::bigint, 'data', jsonb_build_object('object', p_object)))
$$;
SELECT is(pg_temp.pay('pi_sale'), 'pi_sale', 'a payment of 25.00 USD');
SELECT throws_ok($$SELECT * FROM api.create_transaction_v1('tia-key', NULL, 'sale-x', 25.01, 'USD', 'pi_sale')$$, '23514', NULL,
                 'a linked transaction must match the payment''s amount');
SELECT is((SELECT status FROM api.create_transaction_v1('tia-key', NULL, 'sale', 25, 'USD', 'pi_sale')), 'pending',
          'a transaction linked to it');
SELECT throws_ok($$SELECT * FROM api.create_transaction_v1('tia-key', NULL, 'sale-again', 25, 'USD', 'pi_sale')$$, '23505', NULL,
                 'a payment backs one transaction only');
SELECT throws_ok($$SELECT * FROM api.move_transaction_v1('boss-key', 'tia', 'sale', 'settled')$$, 'TG010', NULL,
                 'a linked transaction moves only with its payment');
SELECT is(pg_temp.stripe('evt_sale_ok', 'payment_intent.succeeded', '{"object": "payment_intent", "id": "pi_sale", "status": "succeeded"}'),
          'applied', 'the payment succeeds');
SELECT is((SELECT status FROM api.get_transaction_v1('tia-key', NULL, 'sale')), 'settled', 'and the transaction settled with it');
SELECT is(pg_temp.stripe('evt_sale_refund', 'charge.refunded', '{"object": "charge", "id": "ch_1", "payment_intent": "pi_sale", "refunded": true}'),
          'applied', 'the payment is refunded');
SELECT is((SELECT status FROM api.get_transaction_v1('tia-key', NULL, 'sale')), 'reversed', 'and the transaction reversed');

SELECT is(pg_temp.pay('pi_refund_first'), 'pi_refund_first', 'another payment');
SELECT is((SELECT status FROM api.create_transaction_v1('tia-key', NULL, 'sale-2', 25, 'USD', 'pi_refund_first')), 'pending',
          'with its transaction');
SELECT is(pg_temp.stripe('evt_rf', 'charge.refunded', '{"object": "charge", "id": "ch_2", "payment_intent": "pi_refund_first", "refunded": true}'),
          'applied', 'refunded before its success was seen');
SELECT is((SELECT status FROM api.get_transaction_v1('tia-key', NULL, 'sale-2')), 'reversed',
          'the implied success settled it, the refund reversed it');

SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'the ledger adds up');

SELECT * FROM finish();
ROLLBACK;
