-- Batches of transfers (api.transfer_batch_v1): all or none, every rule of a single transfer
-- per element (scope, funds less holds within overdraft limits, spend caps, idempotency, the
-- audit chain), a refusal names its transfer and says nothing about a receiver.
BEGIN;
SELECT plan(31);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT count(*) FROM (
    SELECT api.create_api_key_v1(a, a || '-key', false, NULL)
    FROM unnest(ARRAY['ann', 'ben', 'cal', 'dot']) a) k) = 4, 'four accounts');

CREATE FUNCTION pg_temp.fund(p_account text, p_amount numeric) RETURNS text
LANGUAGE sql AS $$
    SELECT status FROM api.create_transaction_v1('ops-key', p_account, 'fund-' || p_account, p_amount, 'USD', NULL);
    SELECT status FROM api.move_transaction_v1('ops-key', p_account, 'fund-' || p_account, 'settled');
$$;
-- A transfer of a batch: amount in USD units.
CREATE FUNCTION pg_temp.t(p_from text, p_to text, p_amount numeric) RETURNS api.transfer_item_v1
LANGUAGE sql AS $$ SELECT ROW(p_from, p_to, p_amount, NULL, 'USD')::api.transfer_item_v1 $$;
-- How a statement ends: 'done', or its SQLSTATE, rule and message (rolled back with it).
CREATE FUNCTION pg_temp.refusal(p_sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text;
    cn text;
    mt text;
BEGIN
    EXECUTE p_sql;
    RETURN 'done';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, cn = CONSTRAINT_NAME, mt = MESSAGE_TEXT;
    RETURN st || ' ' || coalesce(nullif(cn, ''), '-') || ' ' || mt;
END
$$;
CREATE FUNCTION pg_temp.usd(p_account text) RETURNS text
LANGUAGE sql AS $$ SELECT balance FROM api.balances_v1('ops-key', p_account) WHERE currency = 'USD' AND name = 'main' $$;

SELECT is(pg_temp.fund('ann', 100.00), 'settled', 'ann has 100.00');

-- A batch: amount or amount_minor per transfer, both answered; a posting per transfer.
SELECT results_eq(
    $$SELECT ord, replayed, from_account, to_account, amount, amount_minor
      FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1.50),
                                                  ROW(NULL, 'cal', NULL, 250, 'USD')::api.transfer_item_v1], 'b-1')$$,
    $$VALUES (1, false, 'ann', 'ben', '1.50', 150::bigint), (2, false, 'ann', 'cal', '2.50', 250::bigint)$$,
    'ann sends ben 1.50 and cal 2.50 in one batch');
SELECT results_eq($$SELECT pg_temp.usd('ann'), pg_temp.usd('ben'), pg_temp.usd('cal')$$,
                  $$VALUES ('96.00', '1.50', '2.50')$$, 'both transfers moved money');
SELECT results_eq(
    $$SELECT idempotency_key, kind::text FROM tollgate.ledger_postings
      WHERE idempotency_key LIKE 'b-1/%' ORDER BY idempotency_key$$,
    $$VALUES ('b-1/1', 'transfer'), ('b-1/2', 'transfer')$$, 'each transfer is a posting of its own, keyed by position');

-- Idempotency
SELECT results_eq(
    $$SELECT replayed, posting_id FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1.50),
                                                  ROW(NULL, 'cal', NULL, 250, 'USD')::api.transfer_item_v1], 'b-1')$$,
    $$SELECT true, id FROM tollgate.ledger_postings WHERE idempotency_key LIKE 'b-1/%' ORDER BY idempotency_key$$,
    'the same batch again is a replay with the first postings');
SELECT is(pg_temp.usd('ann'), '96.00', 'a replay moves nothing');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1.50),
                                                  pg_temp.t(NULL, 'cal', 2.51)], 'b-1')$$),
          'TG020 idempotency_key_same_request transfer 2: idempotency key b-1 was used with a different batch',
          'another batch under the key is refused, naming the first transfer that differs');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1.50)], 'b-1')$$),
          'TG020 idempotency_key_same_request transfer 1: idempotency key b-1 was used with a different batch',
          'a shorter batch under the key is another batch');

-- All or none
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 50),
                                                  pg_temp.t(NULL, 'cal', 46.01)], 'b-2')$$),
          '23514 ledger_accounts_balance_non_negative transfer 2: 46.01 USD cannot leave the balance of ann: 46.00 USD available',
          'the second transfer overdraws: the batch is refused, naming it');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 50),
                                                  pg_temp.t(NULL, 'cal', 46.01)], 'b-2')$$) LIKE '23514 %', true,
          'as SQLSTATE 23514');
SELECT results_eq($$SELECT pg_temp.usd('ann'), pg_temp.usd('ben')$$, $$VALUES ('96.00', '1.50')$$,
                  'nothing of a refused batch moved');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1),
                                                  pg_temp.t(NULL, 'nobody', 1)], 'b-3')$$),
          'TG003 account_visible transfer 2: account nobody not found', 'an unknown receiver refuses the batch');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'nobody', 1),
                                                  pg_temp.t(NULL, 'ben', 96)], 'b-3')$$),
          '23514 ledger_accounts_balance_non_negative transfer 2: 96.00 USD cannot leave the balance of ann: 95.00 USD available',
          'funds are checked for the whole batch before any receiver: the refusal says nothing about nobody');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1),
                                                  pg_temp.t(NULL, 'ann', 1)], 'b-4')$$),
          '23514 transfer_distinct_accounts transfer 2: a transfer needs two different accounts', 'not to itself');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1.005)], 'b-4')$$),
          '23514 amount_decimals transfer 1: USD amounts have at most 2 decimals: 1.005 has more', 'amounts are exact');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key',
              ARRAY[ROW(NULL, 'ben', 1, 100, 'USD')::api.transfer_item_v1], 'b-4')$$),
          '23514 transfer_amount_one transfer 1: a transfer gives amount or amount_minor: one of them',
          'amount or amount_minor, not both');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[]::api.transfer_item_v1[], 'b-4')$$),
          '23514 transfer_batch_size a batch holds 1 to 1000 transfers, not 0', 'a batch is not empty');

-- Scope: a key moves its own account's money; an admin key any account's.
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 1),
                                                  pg_temp.t('ben', 'cal', 1)], 'b-5')$$),
          'TG003 account_visible transfer 2: account ben not found', 'ann cannot move ben''s money');
SELECT results_eq(
    $$SELECT from_account, to_account, amount FROM api.transfer_batch_v1('ops-key',
          ARRAY[pg_temp.t('ann', 'dot', 10), pg_temp.t('dot', 'cal', 10), pg_temp.t('cal', 'ben', 12.50)], 'b-6')$$,
    $$VALUES ('ann', 'dot', '10.00'), ('dot', 'cal', '10.00'), ('cal', 'ben', '12.50')$$,
    'an admin key moves any accounts'' money, in order: dot passes on what it just received');
SELECT results_eq($$SELECT pg_temp.usd('ann'), pg_temp.usd('ben'), pg_temp.usd('cal'), pg_temp.usd('dot')$$,
                  $$VALUES ('86.00', '14.00', '0.00', '0.00')$$, 'the chain moved the money');

-- Overdraft limits and holds
SELECT is((SELECT overdraft_limit FROM api.set_overdraft_limit_v1('ops-key', 'ben', 'USD', 5)), '5.00', 'ben may go 5.00 below zero');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ben-key', ARRAY[pg_temp.t(NULL, 'cal', 19), pg_temp.t(NULL, 'cal', 0.01)], 'b-7')$$),
          '23514 ledger_accounts_balance_non_negative transfer 2: 0.01 USD cannot leave the balance of ben: 0.00 USD available',
          'not past the overdraft limit');
SELECT is((SELECT count(*)::integer FROM api.transfer_batch_v1('ben-key', ARRAY[pg_temp.t(NULL, 'cal', 9), pg_temp.t(NULL, 'cal', 10)], 'b-7')),
          2, 'down to the overdraft limit');
SELECT ok((SELECT allowed FROM api.authorize_v1('ops-key', 'ann', 'work.any', 80, 'USD', NULL, NULL)), 'ann holds 80.00 for work');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 3), pg_temp.t(NULL, 'ben', 4)], 'b-8')$$),
          '23514 ledger_accounts_balance_non_negative transfer 2: the balance would no longer cover the credits held for authorized work',
          'credits held are not the sender''s to transfer');

-- Spend caps count the batch's transfers together.
SELECT is((SELECT hard_limit FROM api.set_spend_cap_v1('ops-key', 'ann', NULL, 'day', 'USD', 97, 80)), '97.00', 'ann may spend 97.00 a day');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_batch_v1('ann-key', ARRAY[pg_temp.t(NULL, 'ben', 2), pg_temp.t(NULL, 'ben', 2)], 'b-9')$$)
          LIKE '23514 spend_cap transfer 2: the day cap of 97.00 USD is reached%', true,
          'the second transfer passes the cap (80 held and 14.00 sent today, + 2 + 2 > 97)');

-- The ledger and the audit chain hold.
SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'the ledger agrees with itself');
SELECT is((SELECT count(*)::integer FROM tollgate.audit_log l JOIN tollgate.ledger_postings p
            ON l.entity = 'ledger_posting' AND l.entity_id = p.id::text AND l.account_uuid = p.account_uuid
            WHERE p.idempotency_key ~ '^b-[0-9]+/'), 7, 'each posted transfer is in its sender''s audit chain');

SELECT * FROM finish();
ROLLBACK;
