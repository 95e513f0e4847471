-- Seed data for bench/gating.py (parameters: accounts, payments). Payment rows are written
-- with their triggers off: the benchmark measures authorization over a large table, and the
-- entitlements the triggers would have made are written below.
ALTER TABLE tollgate.payment_intents DISABLE TRIGGER USER;
INSERT INTO tollgate.accounts (external_id) SELECT 'acct_' || i FROM generate_series(1, %(accounts)s) i;
INSERT INTO tollgate.payment_intents (account_uuid, stripe_id, amount, currency, status, purpose, created_at, updated_at)
SELECT a.id, 'pi_bench_' || g, 50, 'USD',
       CASE WHEN g %% 2 = 0 THEN 'succeeded' ELSE 'canceled' END::tollgate.payment_status,
       'report.generate', now() - make_interval(secs => g), now()
FROM generate_series(1, %(payments)s) g
JOIN tollgate.accounts a ON a.external_id = 'acct_' || (g %% %(accounts)s + 1);
ALTER TABLE tollgate.payment_intents ENABLE TRIGGER USER;
-- Half the accounts with a succeeded payment (odd numbers) have paid for the action, with
-- more uses than the run can take.
INSERT INTO tollgate.payment_entitlements (payment_intent_id, account_uuid, action, uses_left)
SELECT DISTINCT ON (p.account_uuid) p.id, p.account_uuid, p.purpose, 1000000000
FROM tollgate.payment_intents p JOIN tollgate.accounts a ON a.id = p.account_uuid
WHERE p.status = 'succeeded' AND a.external_id ~ '^acct_[0-9]*[13579]$'
ORDER BY p.account_uuid, p.created_at DESC;
