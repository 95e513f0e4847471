-- What an operator checks, in SQL: the ledger agrees with itself, the audit trail is intact,
-- and the outbox holds the events. Run on a fresh database (the output is
-- 03-operators.sql.out, recorded by `make record-examples`) with
--
--   psql -X -a -v VERBOSITY=verbose -v SHOW_CONTEXT=never -d <database> < 03-operators.sql
--
-- Something to check first: a settled transaction and a transfer, made as in 01-transfers.sql.
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

SET ROLE tollgate_app;

SELECT reference, status
FROM api.create_transaction_v1('tg_example_user_1', 'user_1', 'order-1042', 100.00, 'USD', NULL);

SELECT reference, status
FROM api.move_transaction_v1('tg_example_ops', 'user_1', 'order-1042', 'settled');

SELECT replayed, amount, currency
FROM api.transfer_v1('tg_example_user_1', 'user_1', 'user_2', 12.50, 'USD', 'payout-2026-11-001');

-- The rest as Tollgate's owner (what `tollgate migrate` runs as; no superuser needed).
RESET ROLE;
SET ROLE tollgate_owner;

-- Every way the ledger could disagree with itself (balances against their entries, entries
-- chained on the ones before, postings and currencies summing to zero): no rows.
SELECT * FROM tollgate.ledger_discrepancies();

-- The audit trail's hash chains, recomputed:
SELECT * FROM tollgate.verify_audit_chain();   -- or reporting.audit_chain_problems; no rows: intact

-- The ledger accounts, balances in minor units: each account's wallet (`main`), and
-- Tollgate's clearing account for the currency (owned by `$system`), which mirrors the money
-- held outside. The version counts the entries of each.
SELECT
    a.external_id AS account_id,
    l.name,
    l.currency,
    l.balance AS balance_minor,
    l.version
FROM tollgate.ledger_accounts AS l
INNER JOIN tollgate.accounts AS a ON l.account_uuid = a.id
ORDER BY l.name, a.external_id;

-- The outbox, written in the same transactions: what `tollgate listen` delivers, and what a
-- `LISTEN` notification only points at (read the row it names).
SELECT
    a.external_id AS account_id,
    o.topic,
    o.payload
FROM tollgate.outbox AS o
INNER JOIN tollgate.accounts AS a ON o.account_uuid = a.id
ORDER BY o.id;
