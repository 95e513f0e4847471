-- Moving money from another service, in SQL: settle a transaction, transfer, read balances,
-- and what a refusal looks like. Run on a fresh database (the output is
-- 01-transfers.sql.out, recorded by `make record-examples`) with
--
--   psql -X -a -v VERBOSITY=verbose -v SHOW_CONTEXT=never -d <database> < 01-transfers.sql
--
-- First, as an operator (what `tollgate keys create` does; the database keeps only each key's
-- SHA-256): an admin key, and a key for each of two accounts. Real keys are random: `tg_` and
-- 43 more characters.
SELECT
    k.account_id,
    k.is_admin,
    new_key.key_id
FROM (
    VALUES
    ('ops', 'tg_example_ops', TRUE),
    ('user_1', 'tg_example_user_1', FALSE),
    ('user_2', 'tg_example_user_2', FALSE)
) AS k (account_id, api_key, is_admin)
CROSS JOIN LATERAL api.create_api_key_v2(k.account_id, k.api_key, k.is_admin, 'example') AS new_key;

-- From here on, as the service: the role `tollgate_app` may execute the functions of schema
-- `api` and nothing else (the service's pool sets the same role).
SET ROLE tollgate_app;

-- 100.00 USD arrive for user_1: a pending transaction, settled by an admin key.
SELECT reference, amount, amount_minor, currency, status
FROM api.create_transaction_v1('tg_example_user_1', 'user_1', 'order-1042', 100.00, 'USD', NULL);

SELECT reference, amount, status
FROM api.move_transaction_v1('tg_example_ops', 'user_1', 'order-1042', 'settled');

-- A transfer in one statement, idempotent on its key (it also answers `created_at`, left out
-- here so that the recorded output does not change from run to run):
SELECT replayed, posting_id, from_account, to_account, amount, currency
FROM api.transfer_v1('tg_example_user_1', 'user_1', 'user_2', 12.50, 'USD', 'payout-2026-11-001');

-- The same call again answers the first transfer (replayed, the same posting) and moves
-- nothing more:
SELECT replayed, posting_id, amount, currency
FROM api.transfer_v1('tg_example_user_1', 'user_1', 'user_2', 12.50, 'USD', 'payout-2026-11-001');

SELECT account_id, name, currency, balance, balance_minor
FROM api.balances_v1('tg_example_user_1', 'user_1');

SELECT account_id, name, currency, balance, balance_minor
FROM api.balances_v1('tg_example_user_2', 'user_2');

-- Refusals are errors: a SQLSTATE (class TG for Tollgate's own rules) and, for a named rule,
-- its CONSTRAINT. The HTTP API answers with the code db/errors.py maps them to (README's
-- error table): here idempotency_key_reused, insufficient_funds, invalid_amount, not_found.
SELECT replayed
FROM api.transfer_v1('tg_example_user_1', 'user_1', 'user_2', 13.00, 'USD', 'payout-2026-11-001');

SELECT replayed
FROM api.transfer_v1('tg_example_user_1', 'user_1', 'user_2', 500.00, 'USD', 'payout-2026-11-002');

SELECT replayed
FROM api.transfer_v1('tg_example_user_1', 'user_1', 'user_2', 1.005, 'USD', 'payout-2026-11-003');

SELECT balance FROM api.balances_v1('tg_example_user_2', 'user_1');

-- And the tables are not the service's to read:
SELECT count(*) FROM tollgate.ledger_entries;
