-- Structure: schemas, tables, keys, the account on every table, api functions.
BEGIN;
SELECT plan(42);

SELECT has_schema('tollgate');
SELECT has_schema('api');

SELECT has_table('tollgate', t, format('table tollgate.%s exists', t))
FROM unnest(ARRAY['accounts', 'api_keys', 'currencies', 'payment_statuses', 'payment_transitions',
                  'payment_intents', 'idempotency_keys', 'payment_events', 'outbox', 'audit_log']) AS t;

-- Every table that holds customer data says which account it belongs to.
SELECT col_not_null('tollgate', t, 'account_uuid', format('tollgate.%s.account_uuid is NOT NULL', t))
FROM unnest(ARRAY['api_keys', 'payment_intents', 'idempotency_keys', 'outbox', 'audit_log']) AS t;
SELECT has_column('tollgate', 'payment_events', 'account_uuid',
                  'payment_events.account_uuid exists (NULL until the event is matched)');

SELECT col_is_pk('tollgate', 'accounts', 'id', 'accounts.id is the primary key');
SELECT col_is_pk('tollgate', 'payment_intents', 'id', 'payment_intents.id is the primary key');
SELECT col_is_pk('tollgate', 'payment_events', 'id', 'payment_events.id is the primary key');
SELECT col_is_pk('tollgate', 'idempotency_keys', ARRAY['account_uuid', 'key'], 'idempotency keys are unique per account');
SELECT col_is_pk('tollgate', 'payment_transitions', ARRAY['from_status', 'to_status'], 'a transition is a pair of statuses');
SELECT col_is_unique('tollgate', 'payment_intents', 'stripe_id', 'payment_intents.stripe_id is unique');
SELECT col_is_unique('tollgate', 'accounts', 'external_id', 'accounts.external_id is unique');
SELECT col_is_unique('tollgate', 'api_keys', 'key_hash', 'api_keys.key_hash is unique');

SELECT fk_ok('tollgate', 'payment_intents', 'account_uuid', 'tollgate', 'accounts', 'id');
SELECT fk_ok('tollgate', 'payment_intents', 'currency', 'tollgate', 'currencies', 'code');
SELECT col_type_is('tollgate', 'payment_intents', 'amount', 'tollgate', 'payment_amount',
                   'payment amounts are integer minor units (domain over bigint)');
SELECT hasnt_column('tollgate', 'api_keys', 'key', 'API keys are never stored, only their hash');

SELECT enum_has_labels('tollgate', 'payment_status', ARRAY[
    'requires_payment_method', 'requires_confirmation', 'requires_action', 'processing',
    'requires_capture', 'succeeded', 'canceled', 'refunded']);

SELECT has_index('tollgate', 'payment_intents', 'payment_intents_account_latest_idx',
                 ARRAY['account_uuid', 'created_at', 'id'], 'can_continue has an index');

SELECT has_trigger('tollgate', 'payment_intents', 'payment_intents_20_transition', 'trigger payment_intents_20_transition exists');
SELECT has_trigger('tollgate', 'payment_intents', 'payment_intents_50_status_changed', 'trigger payment_intents_50_status_changed exists');
SELECT has_trigger('tollgate', 'outbox', 'outbox_notify', 'trigger outbox_notify exists');

SELECT is_definer('api', f, format('api.%s runs as its owner', f))
FROM unnest(ARRAY['begin_payment_v1', 'finish_payment_v1', 'get_payment_v1', 'can_continue_v1',
                  'ingest_stripe_event_v1']) AS f;

SELECT function_returns('api', 'ingest_stripe_event_v1', ARRAY['jsonb'], 'setof record');
SELECT function_returns('api', 'can_continue_v1', ARRAY['text', 'text', 'text'], 'setof record');

SELECT * FROM finish();
ROLLBACK;
