-- Privileges, stated in full after every migration run.
--
-- tollgate_app: USAGE on schema api and EXECUTE on the functions listed here; nothing on the
-- tables. A new api function is unusable by the service until it is added to this list.

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- Nobody gets temporary tables by default (the analyst writes nothing, not even those). A
-- database's own ACL is not copied from its template, so this runs on every migrate, as the
-- migrating role (the database's owner or a superuser): earlier files set the role for the
-- whole migration transaction.
RESET ROLE;

DO $temp$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$temp$;

-- Advisory locks are how Tollgate serialises work on one Stripe object, idempotency key or
-- account; anyone who may take them (every role, by default) could hold one and stall that
-- work. Only Tollgate's functions (running as tollgate_owner) take them.
DO $locks$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname ~ '^pg_(try_)?advisory_(xact_)?lock'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO tollgate_owner, tollgate_retention', f);
    END LOOP;
END
$locks$;

-- Large objects are storage outside every table's grants (any role could write and read them
-- back), and pg_notify lets anyone send on Tollgate's channels. Function ACLs live in each
-- database's pg_proc, which a database created from a template copies. Only Tollgate's triggers
-- (running as tollgate_owner) notify. The NOTIFY statement itself cannot be revoked: a
-- notification is only a wake-up carrying ids, and listeners re-read the rows they name.
DO $public$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND (p.proname ~ '^lo_' OR p.proname IN ('loread', 'lowrite', 'pg_notify'))
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$public$;

GRANT EXECUTE ON FUNCTION pg_notify(text, text) TO tollgate_owner;

SET LOCAL ROLE tollgate_owner;

REVOKE ALL ON SCHEMA tollgate, api, reporting FROM PUBLIC;

REVOKE ALL ON ALL TABLES IN SCHEMA tollgate FROM PUBLIC;

REVOKE ALL ON ALL SEQUENCES IN SCHEMA tollgate FROM PUBLIC;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA tollgate, api FROM PUBLIC;

GRANT USAGE ON SCHEMA api TO tollgate_app, tollgate_listener;

GRANT EXECUTE ON FUNCTION
    api.begin_payment_v1(text, text, text, bigint, text, text, text, text),
    api.finish_payment_v1(text, uuid, text, text, text),
    api.stripe_charge_amount_v1(bigint, text),
    api.stripe_payable_v1(bigint, text),
    api.get_payment_v1(text, text),
    api.can_continue_v1(text, text, text),
    api.ingest_stripe_webhook_v1(text, text),
    api.transfer_v1(text, text, text, numeric, text, text),
    api.transfer_batch_v1(text, api.transfer_item_v1[], text),
    api.balances_v1(text, text),
    api.set_allow_negative_v1(text, text, text, boolean),
    api.set_overdraft_limit_v1(text, text, text, numeric),
    api.create_transaction_v1(text, text, text, numeric, text, text),
    api.get_transaction_v1(text, text, text),
    api.whoami_v1(text),
    api.currencies_v1(),
    api.list_transactions_v1(text, text, text, integer, uuid),
    api.move_transaction_v1(text, text, text, text),
    api.authorize_v1(text, text, text, numeric, text, text, integer),
    api.capture_hold_v1(text, uuid, numeric),
    api.release_hold_v1(text, uuid),
    api.get_hold_v1(text, uuid),
    api.set_action_price_v1(text, text, numeric, text, text),
    api.set_metric_price_v1(text, text, numeric, text),
    api.set_spend_cap_v1(text, text, text, text, text, numeric, integer),
    api.record_usage_v1(text, text[], text[], text[], text[], numeric[], timestamptz[]),
    api.record_usage_v2(text, api.usage_event_v1[]),
    api.usage_v1(text, text, text, text, timestamptz, timestamptz),
    api.set_low_balance_v1(text, text, text, numeric),
    api.list_reviews_v1(text, text),
    api.decide_review_v1(text, uuid, text, text),
    api.set_risk_rule_v1(text, text, text, numeric, integer, integer, numeric),
    api.import_reconciliation_v1(text, text, text[], numeric[], text[], date[], text[]),
    api.import_reconciliation_v2(text, text, api.reconciliation_line_v1[]),
    api.begin_refund_v1(text, text, text, numeric, bigint),
    api.finish_refund_v1(text, uuid, text, text),
    api.x402_claim_v1(text, text, text, bytea, text, numeric, bigint, text),
    api.x402_settle_v1(text, text, text, uuid, jsonb),
    -- Reading back what was set, a page at a time
    api.list_actions_v1(text, integer, text),
    api.list_metric_prices_v1(text, integer, text),
    api.list_spend_caps_v1(text, text, integer, uuid),
    api.list_wallets_v1(text, text, integer, text),
    api.list_holds_v1(text, text, text, text, text, integer, uuid),
    api.list_risk_rules_v1(text, text, integer, uuid),
    api.list_account_keys_v1(text, text, integer, uuid),
    api.list_payments_v1(text, text, text, text, integer, uuid),
    api.list_events_v1(text, text, text, integer, bigint),
    -- What /metrics reports of the database
    api.metrics_v1()
TO tollgate_app;

-- Stripe events reach the database from the service only with their signature, which
-- ingest_stripe_webhook_v1 verifies; the unverified entry point is for owner-side callers
-- (`tollgate reconcile stripe`). Granted to tollgate_app up to migration 0016.
REVOKE EXECUTE ON FUNCTION api.ingest_stripe_event_v1(jsonb) FROM tollgate_app;

-- Stored Stripe events are applied by the service's applier (api/applier.py, `tollgate
-- apply-events`), through the same rules whoever calls it; GET /v1/payments/{ref} counts a
-- payment's events not applied yet.
GRANT EXECUTE ON FUNCTION
    api.apply_stripe_events_v1(integer, boolean),
    api.get_payment_v2(text, text)
TO tollgate_app;

-- tollgate_listener: the delivery side of the outbox, nothing else.
GRANT EXECUTE ON FUNCTION
    api.register_consumer_v1(text, boolean),
    api.claim_deliveries_v2(text, integer, interval, integer),
    api.deliveries_done_v2(text, uuid, bigint[]),
    api.release_deliveries_v2(text, uuid, bigint[]),
    api.renew_leases_v2(text, uuid, bigint[], interval),
    api.delivery_failed_v2(text, uuid, bigint, text, integer, interval),
    api.next_delivery_due_v1(text),
    api.dead_deliveries_v1(text),
    api.replay_deliveries_v1(text, uuid)
TO tollgate_listener;

-- Append-only tables: the privileges are revoked from their owner too, so no SECURITY DEFINER
-- function can change or remove a row, and triggers refuse it for everyone else. The owner
-- role could re-grant itself and disable triggers: it is NOLOGIN, and only migrations act as
-- it. Tampering by a superuser is beyond what privileges can stop.
REVOKE UPDATE, DELETE, TRUNCATE
    ON tollgate.audit_log, tollgate.audit_seals, tollgate.ledger_entries, tollgate.usage_events
    FROM tollgate_owner;

-- Rows other tables reference keep UPDATE: foreign key checks lock them FOR KEY SHARE, which
-- needs it. Their triggers refuse updates that are not allowed.
REVOKE DELETE, TRUNCATE
    ON tollgate.outbox, tollgate.payment_events, tollgate.payment_intents, tollgate.transactions,
       tollgate.ledger_accounts, tollgate.ledger_postings, tollgate.holds,
       tollgate.payment_entitlements, tollgate.subscriptions, tollgate.audit_heads
    FROM tollgate_owner;

-- Refunds, disputes and what they took back (db/sql/65-refunds.sql).
REVOKE UPDATE, DELETE, TRUNCATE ON tollgate.payment_takebacks FROM tollgate_owner;

REVOKE DELETE, TRUNCATE ON tollgate.refunds, tollgate.disputes FROM tollgate_owner;

-- Retention (89-retention.sql): tollgate_retention reads and deletes the rows it moves, and
-- writes the archives; tollgate.refuse_change lets it past the append-only triggers of these
-- tables only, for final rows moved to their archive, and it has no privilege on any other
-- table. No other role has INSERT on an archive, the owner included (which, owning them,
-- could re-grant it: see the append-only tables above); analysts read them through the
-- reporting views (95-reporting.sql).
GRANT SELECT, DELETE
    ON tollgate.payment_events, tollgate.usage_events, tollgate.audit_log, tollgate.audit_seals,
       tollgate.outbox, tollgate.outbox_deliveries
    TO tollgate_retention;

GRANT SELECT ON tollgate.outbox_consumers TO tollgate_retention;

GRANT SELECT, INSERT
    ON tollgate.payment_events_archive, tollgate.usage_events_archive, tollgate.audit_log_archive,
       tollgate.audit_seals_archive, tollgate.outbox_archive
    TO tollgate_retention;

REVOKE INSERT, UPDATE, DELETE, TRUNCATE
    ON tollgate.payment_events_archive, tollgate.usage_events_archive, tollgate.audit_log_archive,
       tollgate.audit_seals_archive, tollgate.outbox_archive
    FROM tollgate_owner;
