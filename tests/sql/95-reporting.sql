-- The analyst role: every reporting view readable, every write, DDL and other object refused.
BEGIN;
SELECT plan(91);

-- Something to read: an account, a payment, a transaction.
SELECT ok((SELECT key_id FROM api.create_api_key_v1('ada', 'ada-key', true, NULL)) IS NOT NULL, 'an account');
SELECT is((SELECT status FROM api.create_transaction_v1('ada-key', NULL, 'inv-1', 12, 'USD', NULL)), 'pending', 'a transaction');
SELECT is(api.finish_payment_v1('ada-key',
              (SELECT payment_id FROM api.begin_payment_v1('ada-key', 'k-1', NULL, 500, 'USD', 'report.generate', NULL, NULL)),
              'pi_ada', 'requires_payment_method', NULL) ->> 'stripe_id', 'pi_ada', 'a payment');

SET LOCAL ROLE tollgate_analyst;

SELECT is((SELECT count(*)::int FROM pg_views WHERE schemaname = 'reporting'), 13, 'thirteen reporting views');
-- Each view read in full, as the analyst (13 tests).
SELECT lives_ok(format('SELECT * FROM reporting.%I', viewname), 'the analyst reads reporting.' || viewname)
FROM pg_views WHERE schemaname = 'reporting' ORDER BY viewname;
SELECT results_eq($$SELECT account_id, reference, amount_minor, amount, status FROM reporting.transactions$$,
                  $$VALUES ('ada', 'inv-1', 1200::bigint, 12.00, 'pending')$$, 'and sees the data through them');

-- Writes and DDL
SELECT is_empty($$SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'reporting'
                    AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')$$,
                'no privilege but SELECT on any view');
-- Refused by the grants, not by the views' shape: an INSERT into a view that joins tables fails
-- with 55000 (not updatable) before privileges are looked at, whatever was granted. LOCK ... IN
-- ROW EXCLUSIVE MODE is checked against INSERT, UPDATE, DELETE and TRUNCATE alone (13 tests).
SELECT throws_ok(format('LOCK TABLE reporting.%I IN ROW EXCLUSIVE MODE', viewname), '42501', NULL,
                 'the analyst holds no write privilege on reporting.' || viewname)
FROM pg_views WHERE schemaname = 'reporting' ORDER BY viewname;
SELECT throws_ok($$SELECT lo_create(0)$$, '42501', NULL, 'no large objects');
SELECT throws_ok($$SELECT lo_from_bytea(0, '\x00')$$, '42501', NULL, 'of any kind');
SELECT throws_ok($$SELECT pg_notify('payment_settled', '{"payment_id": "forged"}')$$, '42501', NULL,
                 'no notifications (a listener could take one for Tollgate''s word)');
SELECT throws_ok($$CREATE TABLE reporting.mine (x int)$$, '42501', NULL, 'no tables in reporting');
SELECT throws_ok($$CREATE TABLE public.mine (x int)$$, '42501', NULL, 'nor in public');
SELECT throws_ok($$CREATE TEMP TABLE mine (x int)$$, '42501', NULL, 'nor temporary ones');
SELECT throws_ok($$CREATE VIEW reporting.mine AS SELECT 1$$, '42501', NULL, 'no views');
SELECT throws_ok($$ALTER VIEW reporting.payments RENAME TO old_payments$$, '42501', NULL, 'no ALTER');
SELECT throws_ok($$DROP VIEW reporting.payments$$, '42501', NULL, 'no DROP');
SELECT throws_ok($$CREATE FUNCTION reporting.f() RETURNS int LANGUAGE sql AS 'SELECT 1'$$, '42501', NULL, 'no functions');

-- Nothing behind the views
SELECT throws_ok($$SELECT * FROM tollgate.api_keys$$, '42501', NULL, 'no API key hashes');
SELECT throws_ok($$SELECT payload FROM tollgate.payment_events$$, '42501', NULL, 'no raw Stripe payloads');
SELECT throws_ok($$SELECT * FROM tollgate.transactions$$, '42501', NULL, 'no tables');
SELECT throws_ok($$SELECT * FROM api.list_reviews_v1('ada-key', NULL)$$, '42501', NULL, 'no service functions');
SELECT throws_ok($$SELECT tollgate.set_actor('db:someone')$$, '42501', NULL, 'no internal functions');
SELECT is(has_schema_privilege('tollgate_analyst', 'tollgate', 'USAGE'), false, 'not even the tollgate schema');
SELECT throws_ok($$SELECT pg_advisory_lock(1)$$, '42501', NULL, 'no advisory locks (they could stall Tollgate''s work)');
SELECT throws_ok($$SELECT pg_try_advisory_xact_lock(hashtextextended('tollgate:stripe:pi_ada', 0))$$, '42501', NULL,
                 'of any kind');

RESET ROLE;
-- Each view's privileges, exactly: SELECT for the analyst; none for the service and the
-- listener (3 x 13 tests).
SELECT table_privs_are('reporting', viewname, r, CASE WHEN r = 'tollgate_analyst' THEN ARRAY['SELECT'] ELSE ARRAY[]::text[] END,
                       format('%s: %s on reporting.%s', r, CASE WHEN r = 'tollgate_analyst' THEN 'SELECT only' ELSE 'nothing' END, viewname))
FROM pg_views, unnest(ARRAY['tollgate_analyst', 'tollgate_app', 'tollgate_listener']) AS r
WHERE schemaname = 'reporting' ORDER BY r, viewname;
-- Grants the role holds, in full: SELECT on reporting views, nothing else.
SELECT is_empty($$SELECT table_schema, table_name, privilege_type FROM information_schema.role_table_grants
                  WHERE grantee = 'tollgate_analyst' AND NOT (table_schema = 'reporting' AND privilege_type = 'SELECT')$$,
                'the analyst holds only SELECT on reporting');
SELECT is_empty($$SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'reporting' AND c.relkind <> 'v'$$, 'reporting holds views only');

SELECT * FROM finish();
ROLLBACK;
