-- Reading back: every api.list_*_v1 authenticates the key itself and answers within what the
-- key may see (its own account; admin keys any account they name), a page at a time after the
-- key of the last row of the previous page. A cursor naming a row the key cannot see in that
-- list is refused (page_cursor) the same way whether or not the row exists. Risk rules are for
-- admin keys only; keys are listed by prefix, never with their hash.
BEGIN;
SELECT plan(59);

SELECT ok((SELECT count(*) FROM (
    SELECT api.create_api_key_v1(a, a || '-key', a = 'ops', NULL)
    FROM unnest(ARRAY['ops', 'ann', 'bob']) a) k) = 3, 'an admin (ops) and two accounts');

-- What there is to read: prices, credits and holds, caps, rules, payments, events.
SELECT ok((SELECT count(*) FROM (
    SELECT api.set_action_price_v1('ops-key', a, 0.50, 'USD', 'a ' || a)
    FROM unnest(ARRAY['report.generate', 'image.render', 'code.review']) a) p) = 3, 'three priced actions');
SELECT is((SELECT metric FROM api.set_metric_price_v1('ops-key', 'tokens', 0.00002, 'USD')), 'tokens',
          'a metric priced at a fraction of a cent');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'ann', 'fund-ann', 2.00, 'USD', NULL)), 'pending',
          'money for ann');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'ann', 'fund-ann', 'settled')), 'settled', 'settled');
SELECT is((SELECT status FROM api.create_transaction_v1('ops-key', 'bob', 'fund-bob', 1.00, 'USD', NULL)), 'pending',
          'money for bob');
SELECT is((SELECT status FROM api.move_transaction_v1('ops-key', 'bob', 'fund-bob', 'settled')), 'settled', 'settled');
CREATE TEMP TABLE held AS
SELECT a.hold_id, a.agent FROM unnest(ARRAY['a1', 'a2', 'a1']) WITH ORDINALITY AS g (agent, n),
     LATERAL (SELECT hold_id, g.agent FROM api.authorize_v1('ann-key', NULL, 'report.generate', NULL, NULL, g.agent, NULL)) a;
SELECT is((SELECT count(hold_id)::integer FROM held), 3, 'ann holds three runs (agents a1, a2, a1)');
SELECT is((SELECT status FROM api.release_hold_v1('ann-key', (SELECT hold_id FROM held WHERE agent = 'a2'))), 'released',
          'and releases the one of a2');
SELECT is((SELECT hold_id FROM api.authorize_v1('bob-key', NULL, 'report.generate', NULL, NULL, NULL, NULL)) IS NOT NULL,
          true, 'bob holds one');
SELECT ok((SELECT count(*) FROM (
    SELECT api.set_spend_cap_v1('ops-key', c.account, c.agent, c.period, 'USD', 5.00, 80)
    FROM (VALUES ('ann', 'a1', 'month'), ('ann', NULL, 'day'), ('ann', NULL, 'month'), ('bob', NULL, 'day'))
         AS c (account, agent, period)) s) = 4, 'three caps of ann (one of agent a1), one of bob');
SELECT ok((SELECT count(*) FROM (
    SELECT api.set_risk_rule_v1('ops-key', r.account, 'USD', r.max_amount, NULL, NULL, NULL)
    FROM (VALUES (NULL, 500.00), ('ann', 100.00)) AS r (account, max_amount)) s) = 2,
    'a default risk rule and one of ann');
INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status, purpose)
SELECT a.id, p.stripe_id, 500, 'USD', 'requires_payment_method', p.purpose
FROM tollgate.accounts a,
     (VALUES ('ann', 'pi_ann_1', 'credits'), ('ann', 'pi_ann_2', 'report.generate'), ('bob', 'pi_bob_1', 'credits'))
         AS p (account, stripe_id, purpose)
WHERE a.external_id = p.account;

-- ---------------------------------------------------------------------------------------------
-- Every list authenticates the key and bounds the page
-- ---------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM api.list_actions_v1('nobody', 10, NULL)$$, 'TG001', NULL, 'a list needs a valid key');
SELECT throws_ok($$SELECT * FROM api.list_events_v1('nobody', 'ann', NULL, 10, NULL)$$, 'TG001', NULL, 'every list');
SELECT throws_ok($$SELECT * FROM api.list_actions_v1('ann-key', 0, NULL)$$, '23514', NULL, 'a page holds at least a row');
SELECT throws_ok($$SELECT * FROM api.list_payments_v1('ann-key', NULL, NULL, NULL, 501, NULL)$$, '23514', NULL,
                 'and at most 500');
SELECT throws_ok($$SELECT * FROM api.list_wallets_v1('ann-key', NULL, NULL, NULL)$$, '23514', NULL, 'a limit is required');

-- ---------------------------------------------------------------------------------------------
-- Prices: any key
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT action, price, price_minor, description FROM api.list_actions_v1('bob-key', 2, NULL)$$,
                  $$VALUES ('code.review', '0.50', 50::bigint, 'a code.review'), ('image.render', '0.50', 50, 'a image.render')$$,
                  'any key reads prices, by name, a page at a time');
SELECT results_eq($$SELECT action FROM api.list_actions_v1('bob-key', 2, 'image.render')$$, ARRAY['report.generate'],
                  'the next page starts after the last name of the previous one');
SELECT results_eq($$SELECT metric, unit_price FROM api.list_metric_prices_v1('ann-key', 10, NULL)$$,
                  $$VALUES ('tokens', 0.00002::numeric)$$, 'a metric''s price per unit, exactly as it was set');

-- ---------------------------------------------------------------------------------------------
-- Spend caps: the account's own key, or an admin key
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT account_id, agent_id, period, hard_limit, hard_limit_minor FROM api.list_spend_caps_v1('ann-key', 'ann', 10, NULL)$$,
                  $$VALUES ('ann', NULL, 'day', '5.00', 500::bigint), ('ann', NULL, 'month', '5.00', 500),
                           ('ann', 'a1', 'month', '5.00', 500)$$,
                  'ann reads her caps: the account''s own first, then each agent''s');
SELECT results_eq($$SELECT account_id FROM api.list_spend_caps_v1('bob-key', NULL, 10, NULL)$$, ARRAY['bob'],
                  'bob reads only his');
SELECT throws_ok($$SELECT * FROM api.list_spend_caps_v1('bob-key', 'ann', 10, NULL)$$, 'TG003', NULL,
                 'naming another account is "not found"');
SELECT is((SELECT count(*)::integer FROM api.list_spend_caps_v1('ops-key', 'ann', 10, NULL)), 3,
          'an admin key reads any account''s');
SELECT results_eq($$SELECT period FROM api.list_spend_caps_v1('ann-key', NULL, 1,
                      (SELECT id FROM api.list_spend_caps_v1('ann-key', NULL, 1, NULL)))$$,
                  ARRAY['month'], 'a page after the first cap is the second');
SELECT throws_ok($$SELECT * FROM api.list_spend_caps_v1('ann-key', NULL, 1,
                      (SELECT id FROM api.list_spend_caps_v1('bob-key', NULL, 1, NULL)))$$,
                 '23514', 'the cursor names no spend cap of this list (' ||
                 (SELECT id FROM api.list_spend_caps_v1('bob-key', NULL, 1, NULL)) || ')',
                 'a cursor naming another account''s cap is refused, telling nothing of it');
SELECT throws_ok($$SELECT * FROM api.list_spend_caps_v1('ann-key', NULL, 1, gen_random_uuid())$$,
                 '23514', NULL, 'as is one naming nothing');

-- ---------------------------------------------------------------------------------------------
-- Wallets: balance, held, available
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT account_id, currency, balance, held, held_minor, available, available_minor, overdraft_limit
                    FROM api.list_wallets_v1('ann-key', NULL, 10, NULL)$$,
                  $$VALUES ('ann', 'USD', '2.00', '1.00', 100::bigint, '1.00', 100::bigint, '0.00')$$,
                  'ann''s wallet: 2.00, of which two active holds keep 1.00');
SELECT is((SELECT available FROM api.list_wallets_v1('ops-key', 'bob', 10, NULL)), '0.50', 'an admin key reads bob''s');
SELECT throws_ok($$SELECT * FROM api.list_wallets_v1('bob-key', 'ann', 10, NULL)$$, 'TG003', NULL, 'bob cannot read ann''s');
SELECT is_empty($$SELECT * FROM api.list_wallets_v1('ann-key', NULL, 10, 'USD')$$, 'after her last currency: nothing');

-- ---------------------------------------------------------------------------------------------
-- Holds: filters, pages, scope
-- ---------------------------------------------------------------------------------------------
SELECT is((SELECT count(*)::integer FROM api.list_holds_v1('ann-key', NULL, NULL, NULL, NULL, 10, NULL)), 3,
          'ann lists her three holds');
SELECT results_eq($$SELECT agent_id, status FROM api.list_holds_v1('ann-key', NULL, 'active', NULL, NULL, 10, NULL)$$,
                  $$VALUES ('a1', 'active'), ('a1', 'active')$$, 'of one status');
SELECT is((SELECT count(*)::integer FROM api.list_holds_v1('ann-key', NULL, NULL, NULL, 'a2', 10, NULL)), 1, 'of one agent');
SELECT is((SELECT count(*)::integer FROM api.list_holds_v1('ann-key', NULL, NULL, 'image.render', NULL, 10, NULL)), 0,
          'of one action');
SELECT throws_ok($$SELECT * FROM api.list_holds_v1('ann-key', NULL, 'gone', NULL, NULL, 10, NULL)$$, '22P02', NULL,
                 'a status that does not exist is refused');
SELECT results_eq($$SELECT account_id FROM api.list_holds_v1('bob-key', NULL, NULL, NULL, NULL, 10, NULL)$$, ARRAY['bob'],
                  'bob lists only his');
SELECT throws_ok($$SELECT * FROM api.list_holds_v1('bob-key', 'ann', NULL, NULL, NULL, 10, NULL)$$, 'TG003', NULL,
                 'and cannot name ann');
SELECT is((SELECT count(*)::integer FROM api.list_holds_v1('ops-key', 'ann', NULL, NULL, NULL, 10, NULL)), 3,
          'an admin key names her');
-- Made in one transaction, the holds share created_at: the id orders them, and pages neither
-- repeat nor skip one.
SELECT results_eq($$WITH RECURSIVE walk (n, id) AS (
                        SELECT 1, (SELECT id FROM api.list_holds_v1('ann-key', NULL, NULL, NULL, NULL, 1, NULL))
                        UNION ALL
                        SELECT w.n + 1, (SELECT id FROM api.list_holds_v1('ann-key', NULL, NULL, NULL, NULL, 1, w.id))
                        FROM walk w WHERE w.id IS NOT NULL)
                    SELECT id FROM walk WHERE id IS NOT NULL ORDER BY n$$,
                  $$SELECT id FROM api.list_holds_v1('ann-key', NULL, NULL, NULL, NULL, 10, NULL)$$,
                  'a page at a time, every hold once, in the order of one page');
SELECT throws_ok($$SELECT * FROM api.list_holds_v1('ann-key', NULL, NULL, NULL, NULL, 1,
                      (SELECT id FROM api.list_holds_v1('bob-key', NULL, NULL, NULL, NULL, 1, NULL)))$$,
                 '23514', NULL, 'a cursor naming bob''s hold is refused to ann');

-- ---------------------------------------------------------------------------------------------
-- Risk rules: admin keys only
-- ---------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM api.list_risk_rules_v1('ann-key', 'ann', 10, NULL)$$, 'TG002', NULL,
                 'an account cannot read its review thresholds');
SELECT results_eq($$SELECT account_id, currency, max_amount, max_amount_minor FROM api.list_risk_rules_v1('ops-key', NULL, 10, NULL)$$,
                  $$VALUES (NULL, 'USD', '500.00', 50000::bigint), ('ann', 'USD', '100.00', 10000)$$,
                  'an admin reads every rule, the defaults first');
SELECT results_eq($$SELECT account_id FROM api.list_risk_rules_v1('ops-key', 'ann', 10, NULL)$$, ARRAY['ann'],
                  'or one account''s own');

-- ---------------------------------------------------------------------------------------------
-- Keys: by prefix, never the hash
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT account_id, key_prefix, is_admin FROM api.list_account_keys_v1('ann-key', NULL, 10, NULL)$$,
                  $$VALUES ('ann', 'ann-key', false)$$, 'ann reads her keys by prefix');
SELECT is_empty($$SELECT a FROM pg_proc p, unnest(p.proargnames) a
                  WHERE p.oid = 'api.list_account_keys_v1(text, text, integer, uuid)'::regprocedure AND a ~ 'hash'$$,
                'no hash among what it answers');
SELECT throws_ok($$SELECT * FROM api.list_account_keys_v1('bob-key', 'ann', 10, NULL)$$, 'TG003', NULL,
                 'bob cannot read ann''s keys');
SELECT results_eq($$SELECT key_prefix FROM api.list_account_keys_v1('ops-key', 'ann', 10, NULL)$$, ARRAY['ann-key'],
                  'an admin key can');

-- ---------------------------------------------------------------------------------------------
-- Payments
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT stripe_id FROM api.list_payments_v1('ann-key', NULL, NULL, NULL, 10, NULL) ORDER BY 1$$,
                  ARRAY['pi_ann_1', 'pi_ann_2'], 'ann lists her payments');
SELECT results_eq($$SELECT stripe_id FROM api.list_payments_v1('ann-key', NULL, 'requires_payment_method', 'credits', 10, NULL)$$,
                  ARRAY['pi_ann_1'], 'of one status and purpose');
SELECT throws_ok($$SELECT * FROM api.list_payments_v1('bob-key', 'ann', NULL, NULL, 10, NULL)$$, 'TG003', NULL,
                 'bob cannot list hers');
SELECT throws_ok($$SELECT * FROM api.list_payments_v1('ann-key', NULL, NULL, NULL, 10,
                      (SELECT id FROM tollgate.payment_intents WHERE stripe_id = 'pi_bob_1'))$$,
                 '23514', NULL, 'nor can she page after his');

-- ---------------------------------------------------------------------------------------------
-- Events: what listeners receive, of the account
-- ---------------------------------------------------------------------------------------------
SELECT results_eq($$SELECT topic, account_id, payload ->> 'reference' FROM api.list_events_v1('ann-key', NULL, NULL, 10, NULL)$$,
                  $$VALUES ('transaction.settled', 'ann', 'fund-ann')$$, 'ann reads her events');
SELECT is_empty($$SELECT * FROM api.list_events_v1('ann-key', NULL, 'credits.low', 10, NULL)$$, 'of one type');
SELECT is_empty($$SELECT * FROM api.list_events_v1('ann-key', NULL, NULL, 10,
                      (SELECT outbox_id FROM api.list_events_v1('ann-key', NULL, NULL, 10, NULL)))$$,
                'nothing before her first');
SELECT throws_ok($$SELECT * FROM api.list_events_v1('bob-key', 'ann', NULL, 10, NULL)$$, 'TG003', NULL,
                 'bob cannot read ann''s events');
SELECT results_eq($$SELECT account_id FROM api.list_events_v1('bob-key', NULL, NULL, 10, 9223372036854775807)$$, ARRAY['bob'],
                  'and any position he gives pages through his own only');

-- ---------------------------------------------------------------------------------------------
-- Transactions follow the same rule for their cursor, and the service may call every list
-- ---------------------------------------------------------------------------------------------
SELECT throws_ok($$SELECT * FROM api.list_transactions_v1('ann-key', NULL, NULL, 10,
                      (SELECT id FROM tollgate.transactions WHERE reference = 'fund-bob'))$$,
                 '23514', NULL, 'a transaction page after another account''s transaction is refused');
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p
                  WHERE p.pronamespace = 'api'::regnamespace AND p.proname ~ '^list_' AND p.proname <> 'list_api_keys_v1'
                    AND NOT has_function_privilege('tollgate_app', p.oid, 'EXECUTE')$$,
                'tollgate_app may execute every list');

SELECT * FROM finish();
ROLLBACK;
