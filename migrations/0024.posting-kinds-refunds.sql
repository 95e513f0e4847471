-- Posting kinds for what a refund or a dispute does to credits (db/sql/65-refunds.sql). An enum
-- addition gets a migration of its own.
--   refund          - credits a refunded or lost-dispute payment granted, taken back: from the
--                     disputed (frozen) credits, the wallet, and as a recorded debt for the rest
--   dispute         - credits frozen while a dispute is open, or released when it is won
--   debt_repayment  - money that arrived for an account pays its recorded debt first
-- depends: 0023.stripe-currency-rules

SET LOCAL ROLE tollgate_owner;

ALTER TYPE tollgate.posting_kind ADD VALUE 'refund';
ALTER TYPE tollgate.posting_kind ADD VALUE 'dispute';
ALTER TYPE tollgate.posting_kind ADD VALUE 'debt_repayment';
