-- Seed data for bench/http.py (parameters: accounts, payments), written in bulk with triggers
-- and foreign-key checks off (session_replication_role = replica, superuser only): the
-- benchmark measures authorization over large tables, not the seeding. An account's id is
-- derived from its external id, so payments need no lookup, and payments are written in the
-- order of the indexes that start with the account. Entitlements are written as the payment
-- triggers would have made them, without the audit rows those would have written (a
-- benchmark's seed, not a ledger of record): 10,000,000 payments take minutes, not an hour.
SET session_replication_role = replica;
SET work_mem = '512MB';
INSERT INTO tollgate.accounts (id, external_id)
SELECT md5('acct_' || i)::uuid, 'acct_' || i FROM generate_series(1, %(accounts)s) i;
INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status, purpose, created_at, updated_at)
SELECT md5('acct_' || (g %% %(accounts)s + 1))::uuid, 'pi_bench_' || g, 50, 'USD',
       CASE WHEN g %% 2 = 0 THEN 'succeeded' ELSE 'canceled' END::tollgate.payment_status,
       'report.generate', now() - make_interval(secs => g), now()
FROM generate_series(1, %(payments)s) g
ORDER BY 1, 7 DESC;
-- Half the accounts with a succeeded payment (odd numbers) have paid for the action, with
-- more uses than the run can take.
INSERT INTO tollgate.payment_entitlements (payment_intent_id, account_uuid, action, uses_left)
SELECT DISTINCT ON (p.account_uuid) p.id, p.account_uuid, p.purpose, 1000000000
FROM tollgate.payment_intents p JOIN tollgate.accounts a ON a.id = p.account_uuid
WHERE p.status = 'succeeded' AND a.external_id ~ '^acct_[0-9]*[13579]$'
ORDER BY p.account_uuid, p.created_at DESC;
RESET work_mem;
SET session_replication_role = origin;
