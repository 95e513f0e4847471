-- Bounds on money that moves: an overdraft has a limit (minor units) instead of none, a single
-- ledger entry and every balance have a ceiling well inside bigint, a usage event costs at most
-- the largest single amount, and a hold lasts at most a day. With these, no account can push a
-- shared ledger account (revenue, clearing) past bigint and stop everyone else's postings.
-- depends: 0016.outbox-retrying-index

SET LOCAL ROLE tollgate_owner;

-- How far below zero the balance may go, in minor units: 0 for a prepaid wallet, at most
-- 999999999999 (the largest single amount). NULL (no limit) only for Tollgate's own ledger
-- accounts: clearing mirrors what outside parties hold and goes negative by design.
-- allow_negative stays, as what it always meant: overdraft_limit is not 0.
ALTER TABLE tollgate.ledger_accounts ADD COLUMN overdraft_limit bigint DEFAULT 0;
UPDATE tollgate.ledger_accounts
SET overdraft_limit = CASE WHEN NOT allow_negative THEN 0
                           WHEN account_id = '00000000-0000-0000-0000-000000000000' THEN NULL
                           ELSE 999999999999 END
WHERE allow_negative;

ALTER TABLE tollgate.ledger_accounts
    DROP CONSTRAINT ledger_accounts_balance_non_negative,
    -- The name stays (callers know it as insufficient_funds); the rule is now "not below the
    -- overdraft limit".
    ADD CONSTRAINT ledger_accounts_balance_non_negative
        CHECK (overdraft_limit IS NULL OR balance >= -overdraft_limit),
    ADD CONSTRAINT ledger_accounts_overdraft_limit_range
        CHECK (overdraft_limit BETWEEN 0 AND 999999999999),
    ADD CONSTRAINT ledger_accounts_overdraft_bounded
        CHECK (overdraft_limit IS NOT NULL OR account_id = '00000000-0000-0000-0000-000000000000'),
    ADD CONSTRAINT ledger_accounts_overdraft_flag
        CHECK (allow_negative = (overdraft_limit IS NULL OR overdraft_limit > 0)),
    -- 10^18 - 1: far above any real balance, far enough below bigint's 9.2e18 that adding one
    -- entry (below 10^15) can never overflow before this check refuses it.
    ADD CONSTRAINT ledger_accounts_balance_range
        CHECK (balance BETWEEN -999999999999999999 AND 999999999999999999);

COMMENT ON COLUMN tollgate.ledger_accounts.overdraft_limit IS
    'Minor units the balance may go below zero (0: prepaid); NULL only for Tollgate''s own clearing accounts.';

-- One entry moves at most 10^15 - 1 minor units: a single amount is below 10^12, and the
-- largest posting (a usage batch of 1000 events) below 10^15.
ALTER TABLE tollgate.ledger_entries
    ADD CONSTRAINT ledger_entries_amount_range CHECK (amount BETWEEN -999999999999999 AND 999999999999999);

-- A usage event costs at most the largest single amount (exactly; fractions allowed).
ALTER TABLE tollgate.usage_events
    ADD CONSTRAINT usage_events_cost_range CHECK (cost <= 999999999999);

-- A hold reserves credits for at most a day.
ALTER TABLE tollgate.holds
    ADD CONSTRAINT holds_expiry_range CHECK (expires_at <= created_at + interval '1 day');
