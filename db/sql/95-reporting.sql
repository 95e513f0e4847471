-- Views for analysts (schema reporting; docs/ANALYSTS.md explains each column). They read
-- tables with their owner's rights, so tollgate_analyst needs nothing but SELECT on them; but
-- a function a view calls is checked against the reader, so the views do their arithmetic
-- inline and call only verify_audit_chain (granted below). They leave out API key hashes and
-- raw Stripe payloads. Amounts come in minor units (*_minor) and as
-- decimals in the currency's units.

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Status changes of payments, from the audit trail (archived rows included).
CREATE OR REPLACE VIEW reporting.payment_status_changes AS
SELECT l.entity_id::uuid AS payment_id, a.external_id AS account_id, l.old_value AS from_status,
       l.new_value AS to_status, l.actor, l.at
FROM (SELECT t.entity, t.entity_id, t.account_uuid, t.old_value, t.new_value, t.actor, t.at FROM tollgate.audit_log t
      UNION ALL
      SELECT r.entity, r.entity_id, r.account_uuid, r.old_value, r.new_value, r.actor, r.at
      FROM tollgate.audit_log_archive r) l
JOIN tollgate.accounts a ON a.id = l.account_uuid
WHERE l.entity = 'payment_intent';

CREATE OR REPLACE VIEW reporting.payments AS
SELECT p.id AS payment_id,
       a.external_id AS account_id,
       p.stripe_id,
       p.amount::bigint AS amount_minor,
       round(p.amount / 10::numeric ^ cur.exponent, cur.exponent) AS amount,
       p.currency,
       p.status::text AS status,
       p.purpose,
       p.created_at,
       p.updated_at,
       (SELECT min(c.at) FROM reporting.payment_status_changes c
        WHERE c.payment_id = p.id AND c.to_status = 'succeeded') AS succeeded_at,
       (SELECT min(c.at) FROM reporting.payment_status_changes c
        WHERE c.payment_id = p.id AND c.to_status = 'refunded') AS refunded_at,
       (SELECT jsonb_agg(jsonb_build_object('status', c.to_status, 'at', c.at, 'by', c.actor) ORDER BY c.at)
        FROM reporting.payment_status_changes c WHERE c.payment_id = p.id) AS status_history
FROM tollgate.payment_intents p
JOIN tollgate.accounts a ON a.id = p.account_uuid
JOIN tollgate.currencies cur ON cur.code = p.currency;

CREATE OR REPLACE VIEW reporting.refunds AS
SELECT payment_id, account_id, stripe_id, amount_minor, amount, currency, purpose, refunded_at
FROM reporting.payments WHERE refunded_at IS NOT NULL;

-- Per UTC day and currency: what succeeded, what was refunded, and the difference.
CREATE OR REPLACE VIEW reporting.daily_revenue AS
WITH moves AS (
    SELECT (p.succeeded_at AT TIME ZONE 'UTC')::date AS day, p.currency, p.amount_minor AS gross, 0::bigint AS refunded, 1 AS n
    FROM reporting.payments p WHERE p.succeeded_at IS NOT NULL
    UNION ALL
    SELECT (p.refunded_at AT TIME ZONE 'UTC')::date, p.currency, 0, p.amount_minor, 0
    FROM reporting.payments p WHERE p.refunded_at IS NOT NULL
)
SELECT day, currency, sum(n)::bigint AS payments_succeeded, sum(gross)::bigint AS gross_minor,
       sum(refunded)::bigint AS refunded_minor, (sum(gross) - sum(refunded))::bigint AS net_minor
FROM moves GROUP BY day, currency;

-- Per UTC day of creation: how many payments were created, and how far they got.
CREATE OR REPLACE VIEW reporting.payment_funnel AS
SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS created,
       count(*) FILTER (WHERE succeeded_at IS NOT NULL) AS succeeded,
       count(*) FILTER (WHERE status = 'canceled') AS canceled,
       count(*) FILTER (WHERE status NOT IN ('succeeded', 'refunded', 'canceled')) AS still_open,
       round(count(*) FILTER (WHERE succeeded_at IS NOT NULL)::numeric / count(*), 4) AS conversion
FROM reporting.payments GROUP BY 1;

CREATE OR REPLACE VIEW reporting.transactions AS
SELECT t.id AS transaction_id, a.external_id AS account_id, t.reference, t.amount::bigint AS amount_minor,
       round(t.amount / 10::numeric ^ cur.exponent, cur.exponent) AS amount, t.currency, t.status::text AS status,
       t.payment_intent_id AS payment_id,
       EXISTS (SELECT FROM tollgate.reviews r
               WHERE (r.transaction_id = t.id OR r.payment_intent_id = t.payment_intent_id)
                 AND r.status IN ('open', 'rejected')) AS held_for_review,
       t.created_at, t.updated_at
FROM tollgate.transactions t
JOIN tollgate.accounts a ON a.id = t.account_uuid
JOIN tollgate.currencies cur ON cur.code = t.currency;

CREATE OR REPLACE VIEW reporting.ledger_balances AS
SELECT a.external_id AS account_id, la.name AS ledger_account, la.currency, la.balance AS balance_minor,
       round(la.balance / 10::numeric ^ cur.exponent, cur.exponent) AS balance, la.version AS entries,
       la.allow_negative,
       (SELECT max(e.created_at) FROM tollgate.ledger_entries e WHERE e.ledger_account_id = la.id) AS last_entry_at
FROM tollgate.ledger_accounts la
JOIN tollgate.accounts a ON a.id = la.account_uuid
JOIN tollgate.currencies cur ON cur.code = la.currency;

-- Credits: an account's main balance, what holds keep for authorized work, what is left.
CREATE OR REPLACE VIEW reporting.credit_balances AS
SELECT a.external_id AS account_id, la.currency, la.balance AS balance_minor,
       coalesce(h.held, 0)::bigint AS held_minor, (la.balance - coalesce(h.held, 0))::bigint AS available_minor,
       la.allow_negative, la.low_balance AS low_balance_minor
FROM tollgate.ledger_accounts la
JOIN tollgate.accounts a ON a.id = la.account_uuid
LEFT JOIN LATERAL (SELECT sum(x.amount) AS held FROM tollgate.holds x
                   WHERE x.ledger_account_id = la.id AND x.status = 'active' AND x.expires_at > now()) h ON true
WHERE la.name = 'main' AND la.account_uuid <> '00000000-0000-0000-0000-000000000000';

CREATE OR REPLACE VIEW reporting.reconciliation_mismatches AS
WITH coverage AS (  -- the days each source's lines cover
    SELECT DISTINCT b.source, l.happened_on AS day
    FROM tollgate.reconciliation_lines l JOIN tollgate.reconciliation_batches b ON b.id = l.batch_id
)
SELECT b.source, l.batch_id, l.line_no, l.reference, a.external_id AS account_id, l.amount AS amount_minor,
       l.currency, l.happened_on AS day, l.status::text AS status, l.note
FROM tollgate.reconciliation_lines l
JOIN tollgate.reconciliation_batches b ON b.id = l.batch_id
LEFT JOIN tollgate.accounts a ON a.id = l.account_uuid
WHERE l.status <> 'matched'
UNION ALL
SELECT c.source, NULL, NULL, t.reference, a.external_id, t.amount::bigint, t.currency,
       (p.created_at AT TIME ZONE 'UTC')::date, 'missing_theirs', 'settled here, on no line of ' || c.source
FROM tollgate.transactions t
JOIN tollgate.accounts a ON a.id = t.account_uuid
JOIN tollgate.ledger_postings p ON p.id = t.settlement_posting_id
JOIN coverage c ON c.day = (p.created_at AT TIME ZONE 'UTC')::date
WHERE t.status = 'settled'
  AND NOT EXISTS (SELECT FROM tollgate.reconciliation_lines l2
                  JOIN tollgate.reconciliation_batches b2 ON b2.id = l2.batch_id
                  WHERE l2.transaction_id = t.id AND b2.source = c.source);  -- a mismatched line shows once, above

CREATE OR REPLACE VIEW reporting.open_reviews AS
SELECT v.id AS review_id, v.account_id, v.subject, v.subject_ref, v.rules, v.detail, v.created_at,
       now() - v.created_at AS waiting
FROM tollgate.review_v1 v WHERE v.status = 'open';

-- The whole trail: live rows and those retention archived (with their seals).
CREATE OR REPLACE VIEW reporting.audit_trail AS
SELECT l.id AS audit_id, a.external_id AS account_id, s.seq, l.entity, l.entity_id, l.action,
       l.old_value, l.new_value, l.actor, l.db_role, l.at, l.note
FROM tollgate.audit_log l
JOIN tollgate.accounts a ON a.id = l.account_uuid
LEFT JOIN tollgate.audit_seals s ON s.audit_id = l.id
UNION ALL
SELECT l.id, a.external_id, s.seq, l.entity, l.entity_id, l.action,
       l.old_value, l.new_value, l.actor, l.db_role, l.at, l.note
FROM tollgate.audit_log_archive l
JOIN tollgate.accounts a ON a.id = l.account_uuid
LEFT JOIN tollgate.audit_seals_archive s ON s.audit_id = l.id;

CREATE OR REPLACE VIEW reporting.audit_chain_problems AS
SELECT a.external_id AS account_id, v.problem, v.seq, v.audit_id
FROM tollgate.verify_audit_chain() v LEFT JOIN tollgate.accounts a ON a.id = v.account_uuid;

-- One line each, for \dv+ in psql; docs/ANALYSTS.md has every column.
COMMENT ON VIEW reporting.payments IS 'One row per payment (a Stripe PaymentIntent), with its status history.';

COMMENT ON VIEW reporting.payment_status_changes IS 'Every status change of a payment: from, to, who, when.';

COMMENT ON VIEW reporting.refunds IS 'Payments refunded in full.';

COMMENT ON VIEW reporting.daily_revenue IS 'Per UTC day and currency: succeeded, refunded and net, in minor units.';

COMMENT ON VIEW reporting.payment_funnel IS 'Per UTC day of creation: payments created, succeeded, canceled, open; conversion.';

COMMENT ON VIEW reporting.transactions IS 'The ledger of record: one row per transaction, with its status and review hold.';

COMMENT ON VIEW reporting.ledger_balances IS 'Every ledger account with its balance, as the sum of its entries.';

COMMENT ON VIEW reporting.credit_balances IS 'Prepaid credits per account and currency: balance, held, available.';

COMMENT ON VIEW reporting.reconciliation_mismatches IS 'Imported settlement lines that did not match, and settled transactions no line covers.';

COMMENT ON VIEW reporting.open_reviews IS 'Risk reviews waiting for a decision.';

COMMENT ON VIEW reporting.audit_trail IS 'Every audited change, per account in a numbered hash chain.';

COMMENT ON VIEW reporting.audit_chain_problems IS 'Empty when the audit chain is intact; else each broken, altered or missing entry.';

-- The analyst role reads the reporting views, and nothing else.
REVOKE ALL ON ALL TABLES IN SCHEMA reporting FROM PUBLIC;

GRANT USAGE ON SCHEMA reporting TO tollgate_analyst;

GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO tollgate_analyst;

GRANT EXECUTE ON FUNCTION tollgate.verify_audit_chain() TO tollgate_analyst;
