-- Metered usage and the gating decision, in SQL. Run on a fresh database (the output is
-- 02-usage.sql.out, recorded by `make record-examples`) with
--
--   psql -X -a -v VERBOSITY=verbose -v SHOW_CONTEXT=never -d <database> < 02-usage.sql
--
-- As an operator: an admin key and an account's key (see 01-transfers.sql).
SELECT
    k.account_id,
    k.is_admin,
    new_key.key_id
FROM (
    VALUES
    ('ops', 'tg_example_ops', TRUE),
    ('shop', 'tg_example_shop', FALSE)
) AS k (account_id, api_key, is_admin)
CROSS JOIN LATERAL api.create_api_key_v2(k.account_id, k.api_key, k.is_admin, 'example') AS new_key;

SET ROLE tollgate_app;

-- Admin configuration: a price per token, a price per run of an action.
SELECT * FROM api.set_metric_price_v1('tg_example_ops', 'tokens', 0.0001, 'USD');

SELECT * FROM api.set_action_price_v1('tg_example_ops', 'report.generate', 0.50, 'USD', 'one report');

-- The account has no credits yet: authorize answers "not allowed" as a row, with the reason
-- and the price (the HTTP API turns it into a 402 with the payment to make).
SELECT allowed, via, code, price, currency
FROM api.authorize_v1('tg_example_shop', 'shop', 'report.generate', NULL, NULL, NULL, NULL);

-- 5.00 USD of credits arrive (a settled transaction).
SELECT reference, amount, status
FROM api.create_transaction_v1('tg_example_shop', 'shop', 'credits-1', 5.00, 'USD', NULL);

SELECT reference, amount, status
FROM api.move_transaction_v1('tg_example_ops', 'shop', 'credits-1', 'settled');

-- Now allowed via credits: 0.50 is held until the work is captured or released (the hold's
-- `expires_at` is left out: it changes from run to run).
SELECT allowed, via, hold_id, remaining, currency, price
FROM api.authorize_v1('tg_example_shop', 'shop', 'report.generate', NULL, NULL, 'agent-7', 60);

-- A usage batch: one row of api.usage_event_v1 per event (id, account, agent, metric,
-- quantity, occurred_at), each answered on its own. Priced events are paid from credits in
-- the same transaction, exactly (305 tokens at 0.0001 cost 0.0305); a metric without a price
-- is recorded and costs nothing.
SELECT *
FROM api.record_usage_v2(
    'tg_example_shop',
    ARRAY[
        ('e-1', NULL, 'agent-7', 'tokens', 1200, now()),
        ('e-2', NULL, 'agent-7', 'tokens', 305, now()),
        ('e-3', NULL, 'agent-7', 'pages', 12, now())
    ]::api.usage_event_v1 []
);

-- An id recorded before is a duplicate (not charged twice); an event costing more than the
-- credits left beside the hold is rejected, and so is a quantity below zero.
SELECT *
FROM api.record_usage_v2(
    'tg_example_shop',
    ARRAY[
        ('e-1', NULL, 'agent-7', 'tokens', 1200, now()),
        ('e-4', NULL, 'agent-7', 'tokens', 50000, now()),
        ('e-5', NULL, NULL, 'tokens', -1, now())
    ]::api.usage_event_v1 []
);

-- What was used, per metric (the period's start is left out: it is today).
SELECT metric, events, quantity_sum, quantity_max, cost, currency
FROM api.usage_v1('tg_example_shop', 'shop', NULL, 'day', NULL, NULL);

-- 5.00 less 0.15: whole minor units are posted, the 0.0005 left over is carried to the
-- account's next batch. The hold is spent only when captured.
SELECT account_id, name, currency, balance, balance_minor
FROM api.balances_v1('tg_example_shop', 'shop');
