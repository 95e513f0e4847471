-- The ledger: exact money, balanced postings, append-only entries, balances moved only by
-- entries, wallets that cannot go negative, idempotent transfers.
BEGIN;
SELECT plan(48);

-- Money at the edge
SELECT results_eq($$SELECT tollgate.to_minor(1250.50, 'USD'), tollgate.to_minor(1250, 'JPY'), tollgate.to_minor(1.234, 'KWD'),
                           tollgate.to_minor(1250.500, 'USD')$$,
                  $$VALUES (125050::bigint, 1250::bigint, 1234::bigint, 125050::bigint)$$,
                  'decimal amounts convert exactly to minor units (trailing zeros are fine)');
SELECT throws_ok($$SELECT tollgate.to_minor(1250.505, 'USD')$$, '23514', 'USD amounts have at most 2 decimals: 1250.505 has more',
                 'a third decimal in USD is refused, not rounded');
SELECT throws_ok($$SELECT tollgate.to_minor(1.5, 'JPY')$$, '23514', NULL, 'JPY has no decimals');
SELECT throws_ok($$SELECT tollgate.to_minor(1.2345, 'KWD')$$, '23514', NULL, 'KWD has three');
SELECT throws_ok($$SELECT tollgate.to_minor(0, 'USD')$$, '23514', NULL, 'zero is refused');
SELECT throws_ok($$SELECT tollgate.to_minor(-1, 'USD')$$, '23514', NULL, 'a negative amount is refused');
SELECT throws_ok($$SELECT tollgate.to_minor(10000000000.00, 'USD')$$, '23514', NULL, 'above the maximum is refused');
SELECT throws_ok($$SELECT tollgate.to_minor(1, 'XYZ')$$, '23503', 'unknown currency XYZ', 'an unknown currency is refused');
SELECT results_eq($$SELECT tollgate.format_minor(125050, 'USD'), tollgate.format_minor(1250, 'JPY'),
                           tollgate.format_minor(1234, 'KWD'), tollgate.format_minor(-5, 'USD')$$,
                  $$VALUES ('1250.50', '1250', '1.234', '-0.05')$$, 'minor units format with the currency''s decimals');

-- Accounts, funded by settled transactions
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ann', 'ann-key', false, NULL)) IS NOT NULL, 'ann');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ben', 'ben-key', false, NULL)) IS NOT NULL, 'ben');
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ops', 'ops-key', true, NULL)) IS NOT NULL, 'an admin');
SELECT is((SELECT status FROM api.create_transaction_v1('ann-key', NULL, 'fund-ann', 100.00, 'USD', NULL)), 'pending', 'ann''s deposit recorded');
SELECT throws_ok($$SELECT * FROM api.move_transaction_v1('ann-key', NULL, 'fund-ann', 'settled')$$, 'TG002', NULL,
                 'an account cannot settle money into its own wallet');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'ann', 'fund-ann', 'settled')), 'settled',
          'the admin (the service that saw the money arrive) settles it');
SELECT results_eq($$SELECT balance, version FROM api.balances_v1('ann-key', NULL) WHERE currency = 'USD'$$,
                  $$VALUES ('100.00', 1::bigint)$$, 'settling credited ann''s balance');

-- Transfers
SELECT results_eq($$SELECT replayed, amount FROM api.transfer_v1('ann-key', NULL, 'ben', 30.25, 'USD', 'tr-1')$$,
                  $$VALUES (false, '30.25')$$, 'ann sends ben 30.25');
SELECT results_eq($$SELECT replayed, amount FROM api.transfer_v1('ann-key', NULL, 'ben', 30.25, 'USD', 'tr-1')$$,
                  $$VALUES (true, '30.25')$$, 'the same transfer again is a replay');
SELECT throws_ok($$SELECT * FROM api.transfer_v1('ann-key', NULL, 'ben', 31, 'USD', 'tr-1')$$, 'TG020', NULL,
                 'the same key for another transfer is refused');
SELECT results_eq($$SELECT account_id, balance FROM api.balances_v1('ops-key', 'ben')$$, $$VALUES ('ben', '30.25')$$,
                  'ben received it once');
SELECT throws_ok($$SELECT * FROM api.transfer_v1('ben-key', NULL, 'ann', 30.26, 'USD', 'tr-2')$$, '23514', NULL,
                 'a wallet cannot go below zero');
SELECT throws_ok($$SELECT * FROM api.transfer_v1('ben-key', 'ann', 'ben', 1, 'USD', 'tr-3')$$, 'TG003', NULL,
                 'a key cannot send from another account');
SELECT throws_ok($$SELECT * FROM api.transfer_v1('ben-key', NULL, 'ben', 1, 'USD', 'tr-4')$$, '23514', NULL,
                 'nor to itself');
SELECT throws_ok($$SELECT * FROM api.transfer_v1('ben-key', NULL, '$system', 1, 'USD', 'tr-5')$$, 'TG003', NULL,
                 'nor to Tollgate''s own clearing account');
SELECT throws_ok($$SELECT * FROM api.set_allow_negative_v1('ben-key', 'ben', 'USD', true)$$, 'TG002', NULL,
                 'only an admin allows overdrafts');
SELECT results_eq($$SELECT allow_negative FROM api.set_allow_negative_v1('ops-key', 'ben', 'USD', true)$$, ARRAY[true],
                  'an admin may');
SELECT results_eq($$SELECT amount FROM api.transfer_v1('ben-key', NULL, 'ann', 50, 'USD', 'tr-6')$$, ARRAY['50.00'],
                  'then ben may go negative');
SELECT results_eq($$SELECT balance FROM api.balances_v1('ben-key', NULL)$$, ARRAY['-19.75'], 'ben owes 19.75');
SELECT is((SELECT count(*)::int FROM tollgate.audit_log WHERE entity = 'ledger_account' AND action = 'allow_negative'), 1,
          'the overdraft change is audited');

-- What the ledger holds
SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'balances, chains, postings and currencies all add up');
SELECT results_eq($$SELECT sum(balance)::bigint FROM tollgate.ledger_accounts WHERE currency = 'USD'$$, ARRAY[0::bigint],
                  'money is neither created nor destroyed');

-- What nobody may do
SELECT throws_ok($$UPDATE tollgate.ledger_accounts SET balance = balance + 100$$, 'TG012', NULL,
                 'a balance moves only through entries');
SELECT throws_ok($$UPDATE tollgate.ledger_accounts SET balance = balance + 100, version = version + 1$$, 'TG012', NULL,
                 'even with its version stepped: no entry explains it');
INSERT INTO tollgate.ledger_accounts (account_uuid, name, currency, balance, version)
SELECT id, 'stash', 'USD', 50000, 7 FROM tollgate.accounts WHERE external_id = 'ann';
SELECT results_eq($$SELECT balance, version FROM tollgate.ledger_accounts WHERE name = 'stash'$$,
                  $$VALUES (0::bigint, 0::bigint)$$, 'a ledger account is born empty, whatever the INSERT says');
SELECT throws_ok($$UPDATE tollgate.ledger_entries SET amount = 1$$, 'TG012', NULL, 'entries cannot be edited');
SELECT throws_ok($$DELETE FROM tollgate.ledger_entries$$, 'TG012', NULL, 'nor deleted');
SELECT throws_ok($$DELETE FROM tollgate.ledger_postings$$, 'TG012', NULL, 'postings cannot be deleted');
SET CONSTRAINTS ALL IMMEDIATE;
SELECT throws_ok(
    $$WITH p AS (INSERT INTO tollgate.ledger_postings (account_uuid, kind) SELECT id, 'transfer' FROM tollgate.accounts WHERE external_id = 'ann' RETURNING id)
      INSERT INTO tollgate.ledger_entries (posting_id, ledger_account_id, amount)
      SELECT p.id, la.id, 500 FROM p, tollgate.ledger_accounts la JOIN tollgate.accounts a ON a.id = la.account_uuid WHERE a.external_id = 'ann'$$,
    'TG040', NULL, 'an unbalanced posting is refused');
SET CONSTRAINTS ALL DEFERRED;

-- A posting and all its entries are written by one statement; each entry continues its account's chain.
CREATE FUNCTION pg_temp.ann_la(p_name text) RETURNS uuid
LANGUAGE sql AS $$
    SELECT la.id FROM tollgate.ledger_accounts la JOIN tollgate.accounts a ON a.id = la.account_uuid
    WHERE a.external_id = 'ann' AND la.name = p_name AND la.currency = 'USD'
$$;
SELECT lives_ok(
    $$WITH p AS (INSERT INTO tollgate.ledger_postings (account_uuid, kind) SELECT id, 'transfer' FROM tollgate.accounts WHERE external_id = 'ann' RETURNING id)
      INSERT INTO tollgate.ledger_entries (posting_id, ledger_account_id, amount)
      SELECT p.id, x.la, x.amount FROM p, (VALUES (pg_temp.ann_la('main'), -500::bigint), (pg_temp.ann_la('stash'), 500::bigint)) x (la, amount)$$,
    'direct SQL may write a balanced posting with its entries in one statement');
SELECT throws_ok(
    $$INSERT INTO tollgate.ledger_entries (posting_id, ledger_account_id, amount)
      SELECT e.posting_id, e.ledger_account_id, e.amount FROM tollgate.ledger_entries e
      WHERE e.posting_id = (SELECT posting_id FROM tollgate.ledger_entries WHERE ledger_account_id = pg_temp.ann_la('stash'))$$,
    'TG012', NULL, 'a second statement cannot add to its entries, even balanced and in the same transaction');
SELECT throws_ok($$INSERT INTO tollgate.ledger_postings (account_uuid, kind) SELECT id, 'transfer' FROM tollgate.accounts WHERE external_id = 'ann'$$,
                 'TG040', NULL, 'a posting without entries is refused when its statement ends');
SELECT throws_ok(
    $$WITH p AS (INSERT INTO tollgate.ledger_postings (account_uuid, kind) SELECT id, 'transfer' FROM tollgate.accounts WHERE external_id = 'ann' RETURNING id)
      INSERT INTO tollgate.ledger_entries (posting_id, account_uuid, ledger_account_id, currency, amount, balance_before, balance_after, account_version)
      SELECT p.id, la.account_uuid, la.id, la.currency, x.amount, la.balance + 1000000, la.balance + 1000000 + x.amount, la.version + 1
      FROM p, (VALUES ('main', -500::bigint), ('stash', 500::bigint)) x (name, amount) JOIN tollgate.ledger_accounts la ON la.id = pg_temp.ann_la(x.name)$$,
    'TG012', NULL, 'entries whose balance_before is not their account''s balance are refused (money from nowhere)');
SELECT throws_ok(
    $$WITH p AS (INSERT INTO tollgate.ledger_postings (account_uuid, kind) SELECT id, 'transfer' FROM tollgate.accounts WHERE external_id = 'ann' RETURNING id)
      INSERT INTO tollgate.ledger_entries (posting_id, account_uuid, ledger_account_id, currency, amount, balance_before, balance_after, account_version)
      SELECT p.id, la.account_uuid, la.id, la.currency, x.amount, la.balance, la.balance + x.amount, la.version + 2
      FROM p, (VALUES ('main', -500::bigint), ('stash', 500::bigint)) x (name, amount) JOIN tollgate.ledger_accounts la ON la.id = pg_temp.ann_la(x.name)$$,
    'TG012', NULL, 'and so are entries that skip a version');
SELECT throws_ok($$SELECT tollgate.post(a.id, 'transfer', ARRAY[pg_temp.ann_la('stash'), pg_temp.ann_la('stash')], ARRAY[-600::bigint, 600::bigint])
                   FROM tollgate.accounts a WHERE a.external_id = 'ann'$$,
                 '23514', NULL, 'every entry''s balance stays within the overdraft limit, not only the last one''s');
SELECT throws_ok($$UPDATE tollgate.ledger_accounts la SET balance = e.balance_after, version = e.account_version
                   FROM tollgate.ledger_entries e
                   WHERE la.id = pg_temp.ann_la('main') AND e.ledger_account_id = la.id AND e.account_version = 1$$,
                 'TG012', NULL, 'a balance never moves back to an earlier entry''s');
SELECT is_empty($$SELECT * FROM tollgate.ledger_discrepancies()$$, 'the ledger still adds up');

SET LOCAL ROLE tollgate_app;
SELECT throws_ok($$SELECT * FROM tollgate.ledger_entries$$, '42501', NULL, 'the service cannot read entries');
SELECT throws_ok($$SELECT tollgate.post(gen_random_uuid(), 'transfer', '{}', '{}')$$, '42501', NULL,
                 'nor post directly');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
