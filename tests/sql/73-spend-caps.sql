-- Spend caps count every way money leaves credits (holds, usage, transfers), exactly; every
-- single movement, balance and overdraft is bounded, so no account can overflow a shared one;
-- a refused transfer tells nothing about its receiver; a hold lasts at most a day.
BEGIN;
SELECT plan(49);

SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT ok((SELECT count(*) FROM (
    SELECT api.create_api_key_v1(a, a || '-key', false, NULL)
    FROM unnest(ARRAY['uma', 'tia', 'ben', 'eve', 'ovi', 'zed']) a) k) = 6, 'six accounts');

-- Money in: a settled transaction.
CREATE FUNCTION pg_temp.fund(p_account text, p_amount numeric) RETURNS text
LANGUAGE sql AS $$
    SELECT status FROM api.create_transaction_v1('ops-key', p_account, 'fund-' || p_account, p_amount, 'USD', NULL);
    SELECT status FROM api.move_transaction_v1('ops-key', p_account, 'fund-' || p_account, 'settled');
$$;
-- How a statement ends: 'done', or its SQLSTATE and the rule (constraint) it broke. Whatever
-- it wrote is rolled back with it (a subtransaction).
CREATE FUNCTION pg_temp.refusal(p_sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text;
    cn text;
BEGIN
    EXECUTE p_sql;
    RETURN 'done';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, cn = CONSTRAINT_NAME;
    RETURN st || ' ' || coalesce(nullif(cn, ''), '-');
END
$$;
CREATE FUNCTION pg_temp.refusal_text(p_sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text;
    cn text;
    msg text;
BEGIN
    EXECUTE p_sql;
    RETURN 'done';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, cn = CONSTRAINT_NAME, msg = MESSAGE_TEXT;
    RETURN concat_ws(' ', st, cn, msg);
END
$$;
CREATE FUNCTION pg_temp.balance(p_account text) RETURNS bigint
LANGUAGE sql AS $$
    SELECT la.balance FROM tollgate.ledger_accounts la JOIN tollgate.accounts a ON a.id = la.account_uuid
    WHERE a.external_id = p_account AND la.name = 'main' AND la.currency = 'USD'
$$;
CREATE FUNCTION pg_temp.notices(p_account text) RETURNS integer
LANGUAGE sql AS $$
    SELECT count(*)::integer FROM tollgate.outbox o JOIN tollgate.accounts a ON a.id = o.account_uuid
    WHERE a.external_id = p_account AND o.topic = 'spend.threshold_reached'
$$;

-- ---------------------------------------------------------------------------------------------
-- Usage counts toward caps exactly: 50 one-event batches of 0.004 USD against a 0.10 day cap
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT metric FROM api.set_metric_price_v1('ops-key', 'calls.small', 0.004, 'USD')$$,
                  ARRAY['calls.small'], 'a call costs 0.004 USD (0.4 of a cent)');
SELECT is(pg_temp.fund('uma', 1.00), 'settled', 'uma has 1.00');
SELECT results_eq($$SELECT hard_limit FROM api.set_spend_cap_v1('ops-key', 'uma', NULL, 'day', 'USD', 0.10, 80)$$,
                  ARRAY['0.10'], 'uma may spend 0.10 a day');
CREATE TEMP TABLE answers (n integer, outcome text, reason text);
DO $$
BEGIN
    FOR g IN 1 .. 50 LOOP
        INSERT INTO answers
        SELECT g, r.outcome, r.reason
        FROM api.record_usage_v1('uma-key', ARRAY['u' || g], ARRAY[NULL::text], ARRAY[NULL::text],
                                 ARRAY['calls.small'], ARRAY[1::numeric], ARRAY[now()]) r;
    END LOOP;
END
$$;
SELECT results_eq($$SELECT outcome, reason, count(*)::integer FROM answers GROUP BY 1, 2 ORDER BY 1$$,
                  $$VALUES ('accepted', NULL, 25), ('rejected', 'spend_cap_exceeded', 25)$$,
                  'the first 25 calls (0.10) are accepted, every one past the hard cap is refused');
SELECT is((SELECT max(n) FROM answers WHERE outcome = 'accepted'), 25, 'in order');
SELECT is((SELECT tollgate.spent_since(a.id, NULL, 'USD', tollgate.utc_day()) FROM tollgate.accounts a
           WHERE a.external_id = 'uma'), 10.0, 'spent counts what was charged, fractions included: 10 cents');
SELECT is(pg_temp.balance('uma'), 90::bigint, '0.10 was debited');
SELECT is(pg_temp.notices('uma'), 1, 'crossing 80% was announced once');

-- ---------------------------------------------------------------------------------------------
-- Transfers count toward caps, whoever asks, however they are written
-- ---------------------------------------------------------------------------------------------
SELECT is(pg_temp.fund('tia', 50.00), 'settled', 'tia has 50.00');
SELECT results_eq($$SELECT hard_limit FROM api.set_spend_cap_v1('ops-key', 'tia', NULL, 'day', 'USD', 1.00, 80)$$,
                  ARRAY['1.00'], 'tia may spend 1.00 a day');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_v1('tia-key', NULL, 'ben', 50.00, 'USD', 't-all')$$),
          '23514 spend_cap', 'tia cannot transfer its 50.00 away past its 1.00 cap');
SELECT results_eq($$SELECT amount FROM api.transfer_v1('tia-key', NULL, 'ben', 0.60, 'USD', 't-1')$$,
                  ARRAY['0.60'], '0.60 is within it');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_v1('tia-key', NULL, 'ben', 0.50, 'USD', 't-2')$$),
          '23514 spend_cap', '0.50 more would pass it');
SELECT results_eq($$SELECT amount FROM api.transfer_v1('tia-key', NULL, 'ben', 0.40, 'USD', 't-3')$$,
                  ARRAY['0.40'], '0.40 reaches it exactly');
SELECT results_eq($$SELECT replayed, amount FROM api.transfer_v1('tia-key', NULL, 'ben', 0.60, 'USD', 't-1')$$,
                  $$VALUES (true, '0.60')$$, 'a replay still answers with the first transfer');
SELECT is(pg_temp.notices('tia'), 1, 'transfers cross the soft threshold too');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_v1('ops-key', 'tia', 'ben', 0.01, 'USD', 't-4')$$),
          '23514 spend_cap', 'an admin key moving the account''s money is bound by its cap as well');
SELECT results_eq($$SELECT allowed, code FROM api.authorize_v1('tia-key', NULL, 'work.any', 0.01, 'USD', NULL, NULL)$$,
                  $$VALUES (false, 'spend_cap_exceeded')$$, 'holds and transfers share one cap');
SELECT is(pg_temp.refusal($$SELECT tollgate.post(a.id, 'transfer',
                                ARRAY[tollgate.ledger_account(a.id, 'main', 'USD'), tollgate.ledger_account(b.id, 'main', 'USD')],
                                ARRAY[-100::bigint, 100::bigint])
                            FROM tollgate.accounts a, tollgate.accounts b WHERE a.external_id = 'tia' AND b.external_id = 'ben'$$),
          '23514 spend_cap', 'a transfer posted by direct SQL meets the cap too');
SELECT is(pg_temp.balance('tia'), 4900::bigint, 'tia sent exactly 1.00');

-- ---------------------------------------------------------------------------------------------
-- A refused transfer tells no more than a success would
-- ---------------------------------------------------------------------------------------------
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_v1('eve-key', NULL, 'nobody-here', 1, 'USD', 'e-1')$$),
          '23514 ledger_accounts_balance_non_negative', 'from an empty wallet to a missing account: insufficient funds');
SELECT is(pg_temp.refusal_text($$SELECT * FROM api.transfer_v1('eve-key', NULL, 'nobody-here', 1, 'USD', 'e-1')$$),
          pg_temp.refusal_text($$SELECT * FROM api.transfer_v1('eve-key', NULL, 'ben', 1, 'USD', 'e-1')$$),
          'word for word what an existing receiver gets');
SELECT is(pg_temp.refusal_text($$SELECT * FROM api.transfer_v1('tia-key', NULL, 'nobody-here', 1, 'USD', 't-5')$$),
          pg_temp.refusal_text($$SELECT * FROM api.transfer_v1('tia-key', NULL, 'ben', 1, 'USD', 't-5')$$),
          'past a cap: the same answer for both receivers');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_v1('ben-key', NULL, 'nobody-here', 0.01, 'USD', 'b-1')$$),
          'TG003 account_visible', 'a transfer that would succeed learns the account is missing');

-- ---------------------------------------------------------------------------------------------
-- Overdrafts have a limit; no cost, entry or balance can overflow
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT allow_negative FROM api.set_allow_negative_v1('ops-key', 'ovi', 'USD', true)$$, ARRAY[true],
                  'the old switch still allows an overdraft');
SELECT is((SELECT la.overdraft_limit FROM tollgate.ledger_accounts la JOIN tollgate.accounts a ON a.id = la.account_uuid
           WHERE a.external_id = 'ovi' AND la.name = 'main'), 999999999999::bigint,
          'bounded: at most the largest single amount');
SELECT results_eq($$SELECT metric FROM api.set_metric_price_v1('ops-key', 'gpu.year', 9999999999, 'USD')$$,
                  ARRAY['gpu.year'], 'the dearest unit price there is');
CREATE TEMP TABLE big (n integer, outcome text, reason text);
DO $$
BEGIN
    FOR g IN 1 .. 3 LOOP
        INSERT INTO big
        SELECT g, r.outcome, r.reason
        FROM api.record_usage_v1('ovi-key', ARRAY['g' || g], ARRAY[NULL::text], ARRAY[NULL::text],
                                 ARRAY['gpu.year'], ARRAY[3070000::numeric], ARRAY[now()]) r;
    END LOOP;
END
$$;
SELECT results_eq($$SELECT outcome, reason, count(*)::integer FROM big GROUP BY 1, 2$$,
                  $$VALUES ('rejected', 'cost_out_of_range', 3)$$,
                  'three events costing 3e18 minor units each are refused, one by one');
SELECT results_eq($$SELECT outcome, reason FROM api.record_usage_v1('ovi-key', ARRAY['h1', 'h2'], ARRAY[NULL::text, NULL],
                       ARRAY[NULL::text, NULL], ARRAY['gpu.year', 'gpu.year'], ARRAY[1, 1]::numeric[], ARRAY[now(), now()])$$,
                  $$VALUES ('accepted', NULL), ('rejected', 'insufficient_credits')$$,
                  'one at the largest amount fits in the overdraft; the next does not');
SELECT is(pg_temp.balance('ovi'), -999999999900::bigint, 'the overdraft stops at its limit');
SELECT is(pg_temp.fund('zed', 1.00), 'settled', 'zed has 1.00');
SELECT results_eq($$SELECT h.status, h.captured_amount FROM api.capture_hold_v1('zed-key',
                       (SELECT hold_id FROM api.authorize_v1('zed-key', NULL, 'work.any', 0.30, 'USD', NULL, NULL)), NULL) h$$,
                  $$VALUES ('captured', '0.30')$$, 'other accounts'' holds are captured into the same revenue');
SELECT results_eq($$SELECT outcome FROM api.record_usage_v1('zed-key', ARRAY['z1'], ARRAY[NULL::text], ARRAY[NULL::text],
                       ARRAY['calls.small'], ARRAY[10::numeric], ARRAY[now()])$$,
                  ARRAY['accepted'], 'and their usage charged');

SELECT results_eq($$SELECT overdraft_limit, overdraft_limit_minor, allow_negative
                    FROM api.set_overdraft_limit_v1('ops-key', 'zed', 'USD', 2.00)$$,
                  $$VALUES ('2.00', 200::bigint, true)$$, 'an admin gives zed an overdraft of 2.00');
SELECT is(pg_temp.refusal($$SELECT * FROM api.set_overdraft_limit_v1('zed-key', 'zed', 'USD', 5)$$),
          'TG002 admin_key', 'only an admin');
SELECT is(pg_temp.refusal($$SELECT * FROM api.transfer_v1('zed-key', NULL, 'ben', 2.67, 'USD', 'z-1')$$),
          '23514 ledger_accounts_balance_non_negative', 'zed has 0.66 and 2.00 of overdraft: 2.67 is too much');
SELECT results_eq($$SELECT amount FROM api.transfer_v1('zed-key', NULL, 'ben', 2.66, 'USD', 'z-2')$$,
                  ARRAY['2.66'], '2.66 is all of it');
SELECT is(pg_temp.refusal($$SELECT * FROM api.set_overdraft_limit_v1('ops-key', 'zed', 'USD', 1.99)$$),
          '23514 overdraft_in_use', 'the limit cannot drop below what is used');
SELECT is(pg_temp.refusal($$SELECT * FROM api.set_overdraft_limit_v1('ops-key', 'zed', 'USD', 10000000000)$$),
          '23514 overdraft_limit_range', 'nor rise above the largest single amount');
SELECT is(pg_temp.refusal($$UPDATE tollgate.ledger_accounts SET overdraft_limit = NULL, allow_negative = true
                            WHERE account_uuid = (SELECT id FROM tollgate.accounts WHERE external_id = 'zed')$$),
          '23514 ledger_accounts_overdraft_bounded', 'only Tollgate''s own clearing accounts are unbounded');
SELECT is(pg_temp.refusal($$SELECT tollgate.post(a.id, 'transfer',
                                ARRAY[tollgate.ledger_account(a.id, 'main', 'USD'), tollgate.ledger_account(b.id, 'main', 'USD')],
                                ARRAY[-1000000000000000::bigint, 1000000000000000::bigint])
                            FROM tollgate.accounts a, tollgate.accounts b WHERE a.external_id = 'ben' AND b.external_id = 'zed'$$),
          '23514 ledger_entries_amount_range', 'a single entry is bounded, even by direct SQL');
-- Push Tollgate's own EUR accounts to the balance bound: 1000 postings of 10^15 - 1, then one more.
DO $$
BEGIN
    FOR g IN 1 .. 1000 LOOP
        PERFORM tollgate.post('00000000-0000-0000-0000-000000000000', 'settlement',
                              ARRAY[tollgate.clearing_account('EUR'), tollgate.revenue_account('EUR')],
                              ARRAY[-999999999999999::bigint, 999999999999999::bigint]);
    END LOOP;
END
$$;
SELECT is(pg_temp.refusal($$SELECT tollgate.post('00000000-0000-0000-0000-000000000000', 'settlement',
                              ARRAY[tollgate.revenue_account('EUR'), tollgate.clearing_account('EUR')],
                              ARRAY[999999999999999::bigint, -999999999999999::bigint])$$),
          '23514 ledger_accounts_balance_range', 'a balance past 10^18 is refused by name, not by bigint overflow');

-- ---------------------------------------------------------------------------------------------
-- A hold lasts at most a day
-- ---------------------------------------------------------------------------------------------
SELECT is(pg_temp.refusal($$SELECT * FROM api.authorize_v1('ben-key', NULL, 'work.any', 0.01, 'USD', NULL, 86401)$$),
          '23514 holds_expiry_range', 'a hold for a day and a second is refused');
SELECT is(pg_temp.refusal($$SELECT * FROM api.authorize_v1('ben-key', NULL, 'work.any', 0.01, 'USD', NULL, 0)$$),
          '23514 holds_expiry_range', 'and one of no time at all');
SELECT is((SELECT expires_at - now() FROM api.authorize_v1('ops-key', 'ben', 'work.any', 0.01, 'USD', NULL, 86400)),
          interval '1 day', 'a day is the longest');
SELECT is(pg_temp.refusal($$INSERT INTO tollgate.holds (account_uuid, action, ledger_account_id, currency, amount, expires_at)
                            SELECT la.account_uuid, 'work.any', la.id, 'USD', 1, now() + interval '30 days'
                            FROM tollgate.ledger_accounts la JOIN tollgate.accounts a ON a.id = la.account_uuid
                            WHERE a.external_id = 'ben' AND la.name = 'main'$$),
          '23514 holds_expiry_range', 'a hold written by direct SQL is bounded too');

SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$,
                'the ledger adds up');

SELECT * FROM finish();
ROLLBACK;
