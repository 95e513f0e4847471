-- Ledger history for bench/ledger.py (parameters: accounts, postings): %(accounts)s accounts,
-- each with a USD wallet, and %(postings)s settlements from the USD clearing account into
-- them, two entries each, spread over the accounts. Written in bulk with triggers off
-- (session_replication_role = replica, superuser only), so every entry's balance_before,
-- balance_after and account_version are computed here as the triggers would have: each
-- ledger account's chain continues from its balance and version at the start, in insertion
-- order. tollgate.ledger_discrepancies() after the run checks that this was done right.
SET session_replication_role = replica;

INSERT INTO tollgate.accounts (external_id)
SELECT 'hist_' || i FROM generate_series(1, %(accounts)s) i;

INSERT INTO tollgate.ledger_accounts (account_uuid, name, currency)
SELECT a.id, 'main', 'USD' FROM tollgate.accounts a WHERE a.external_id LIKE 'hist\_%%';

CREATE TEMPORARY TABLE hist_postings ON COMMIT DROP AS
SELECT g, gen_random_uuid() AS posting_id, 'hist_' || (g %% %(accounts)s + 1) AS external_id,
       1 + (g::bigint * 7919) %% 10000 AS amount
FROM generate_series(1, %(postings)s) g;

INSERT INTO tollgate.ledger_postings (id, account_uuid, kind)
SELECT h.posting_id, a.id, 'settlement'
FROM hist_postings h JOIN tollgate.accounts a ON a.external_id = h.external_id
ORDER BY h.g;

CREATE TEMPORARY TABLE hist_entries ON COMMIT DROP AS
SELECT e.g, e.side, e.posting_id, e.ledger_account_id, e.amount,
       sum(e.amount) OVER w AS moved, row_number() OVER w AS n
FROM (SELECT h.g, 0 AS side, h.posting_id, tollgate.clearing_account('USD') AS ledger_account_id,
             -h.amount AS amount
      FROM hist_postings h
      UNION ALL
      SELECT h.g, 1, h.posting_id, la.id, h.amount
      FROM hist_postings h
      JOIN tollgate.accounts a ON a.external_id = h.external_id
      JOIN tollgate.ledger_accounts la ON la.account_uuid = a.id AND la.name = 'main' AND la.currency = 'USD'
     ) e
WINDOW w AS (PARTITION BY e.ledger_account_id ORDER BY e.g, e.side);

INSERT INTO tollgate.ledger_entries (account_uuid, posting_id, ledger_account_id, currency, amount,
                                     balance_before, balance_after, account_version)
SELECT la.account_uuid, e.posting_id, e.ledger_account_id, 'USD', e.amount,
       la.balance + e.moved - e.amount, la.balance + e.moved, la.version + e.n
FROM hist_entries e JOIN tollgate.ledger_accounts la ON la.id = e.ledger_account_id
ORDER BY e.g, e.side;

UPDATE tollgate.ledger_accounts la SET balance = la.balance + t.moved, version = la.version + t.n
FROM (SELECT e.ledger_account_id, sum(e.amount) AS moved, count(*) AS n
      FROM hist_entries e GROUP BY e.ledger_account_id) t
WHERE la.id = t.ledger_account_id;

SET session_replication_role = origin;
