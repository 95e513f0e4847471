-- The queries Tollgate's Python code runs, each loaded by name (db/queries.py).
-- Every one is a single call of a stored function: api.* for the service, tollgate.* for the
-- operator commands of the CLI (run as the migrating role). The rules live in those functions.

-- name: ping
SELECT 1 AS ok;

-- name: wal_written
-- The primary's WAL position after a caller's writes: a standby that has replayed up to it
-- shows them (api/reads.py).
SELECT pg_current_wal_lsn()::text AS lsn;

-- name: wal_replayed
-- How far a hot standby has replayed; NULL on a server that is not in recovery.
SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS lsn;

-- name: begin_payment
-- stripe_amount: what Stripe's API is sent (its units are not always ISO's), converted in SQL.
SELECT b.*, CASE WHEN NOT b.replayed THEN api.stripe_charge_amount_v1(b.amount, b.currency) END
       AS stripe_amount
FROM api.begin_payment_v1(
    p_api_key         => %(api_key)s::text,
    p_idempotency_key => %(idempotency_key)s::text,
    p_account         => %(account)s::text,
    p_amount          => %(amount)s::bigint,
    p_currency        => %(currency)s::text,
    p_purpose         => %(purpose)s::text,
    p_description     => %(description)s::text,
    p_payment_method  => %(payment_method)s::text
) AS b;

-- name: finish_payment
SELECT api.finish_payment_v1(
    p_api_key       => %(api_key)s::text,
    p_payment_id    => %(payment_id)s::uuid,
    p_stripe_id     => %(stripe_id)s::text,
    p_status        => %(status)s::text,
    p_client_secret => %(client_secret)s::text
) AS response;

-- name: begin_refund
SELECT * FROM api.begin_refund_v1(
    p_api_key         => %(api_key)s::text,
    p_payment         => %(payment)s::text,
    p_idempotency_key => %(idempotency_key)s::text,
    p_amount          => %(amount)s::numeric,
    p_amount_minor    => %(amount_minor)s::bigint
);

-- name: finish_refund
SELECT api.finish_refund_v1(
    p_api_key   => %(api_key)s::text,
    p_refund_id => %(refund_id)s::uuid,
    p_stripe_id => %(stripe_id)s::text,
    p_status    => %(status)s::text
) AS response;

-- name: get_payment
SELECT * FROM api.get_payment_v1(p_api_key => %(api_key)s::text, p_ref => %(ref)s::text);

-- name: can_continue
SELECT * FROM api.can_continue_v1(
    p_api_key => %(api_key)s::text,
    p_account  => %(account)s::text,
    p_purpose  => %(purpose)s::text
);

-- name: ingest_stripe_webhook
SELECT * FROM api.ingest_stripe_webhook_v1(
    p_payload   => %(payload)s::text,
    p_signature => %(signature)s::text
);

-- name: ingest_stripe_event
SELECT * FROM api.ingest_stripe_event_v1(p_event => %(event)s::jsonb);

-- name: apply_stripe_events
SELECT api.apply_stripe_events_v1(p_limit => %(limit)s::integer, p_isolate => %(isolate)s::boolean) AS events;

-- name: get_payment_with_events
SELECT * FROM api.get_payment_v2(p_api_key => %(api_key)s::text, p_ref => %(ref)s::text);

-- name: operator_add_webhook_secret
SELECT * FROM tollgate.add_stripe_webhook_secret(p_secret => %(secret)s::text, p_label => %(label)s::text);

-- name: operator_list_webhook_secrets
SELECT * FROM tollgate.list_stripe_webhook_secrets();

-- name: operator_remove_webhook_secret
SELECT tollgate.remove_stripe_webhook_secret(p_secret_id => %(secret_id)s::uuid) AS removed;

-- name: create_api_key
SELECT * FROM api.create_api_key_v2(
    p_account  => %(account)s::text,
    p_api_key  => %(api_key)s::text,
    p_is_admin => %(is_admin)s::boolean,
    p_label    => %(label)s::text
);

-- name: revoke_api_key
SELECT api.revoke_api_key_v1(p_key_id => %(key_id)s::uuid) AS revoked;

-- name: list_api_keys
SELECT * FROM api.list_api_keys_v1(p_account => %(account)s::text);

-- name: create_transaction
SELECT * FROM api.create_transaction_v1(
    p_api_key   => %(api_key)s::text,
    p_account   => %(account)s::text,
    p_reference => %(reference)s::text,
    p_amount    => %(amount)s::numeric,
    p_currency  => %(currency)s::text,
    p_payment   => %(payment)s::text
);

-- name: get_transaction
SELECT * FROM api.get_transaction_v1(
    p_api_key   => %(api_key)s::text,
    p_account   => %(account)s::text,
    p_reference => %(reference)s::text
);

-- name: list_transactions
SELECT * FROM api.list_transactions_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_status  => %(status)s::text,
    p_limit   => %(limit)s::integer,
    p_before  => %(before)s::uuid
);

-- name: move_transaction
SELECT * FROM api.move_transaction_v1(
    p_api_key   => %(api_key)s::text,
    p_account   => %(account)s::text,
    p_reference => %(reference)s::text,
    p_status    => %(status)s::text
);

-- name: transfer
SELECT * FROM api.transfer_v1(
    p_api_key         => %(api_key)s::text,
    p_from_account    => %(from_account)s::text,
    p_to_account      => %(to_account)s::text,
    p_amount          => %(amount)s::numeric,
    p_currency        => %(currency)s::text,
    p_idempotency_key => %(idempotency_key)s::text
);

-- name: transfer_batch
SELECT * FROM api.transfer_batch_v1(
    p_api_key         => %(api_key)s::text,
    p_transfers       => %(transfers)b::api.transfer_item_v1[],
    p_idempotency_key => %(idempotency_key)s::text
);

-- name: balances
SELECT * FROM api.balances_v1(p_api_key => %(api_key)s::text, p_account => %(account)s::text);

-- name: authorize
-- pay / pay_minor: what a payment for the price asks of Stripe (its minimum charge, its units).
SELECT a.*, p.amount AS pay, p.amount_minor AS pay_minor
FROM api.authorize_v1(
    p_api_key      => %(api_key)s::text,
    p_account      => %(account)s::text,
    p_action       => %(action)s::text,
    p_cost         => %(cost)s::numeric,
    p_currency     => %(currency)s::text,
    p_agent        => %(agent)s::text,
    p_hold_seconds => %(hold_seconds)s::integer
) AS a
LEFT JOIN LATERAL api.stripe_payable_v1(a.price_minor, a.currency) AS p ON true;

-- name: capture_hold
SELECT * FROM api.capture_hold_v1(
    p_api_key => %(api_key)s::text, p_hold_id => %(hold_id)s::uuid, p_amount => %(amount)s::numeric
);

-- name: release_hold
SELECT * FROM api.release_hold_v1(p_api_key => %(api_key)s::text, p_hold_id => %(hold_id)s::uuid);

-- name: get_hold
SELECT * FROM api.get_hold_v1(p_api_key => %(api_key)s::text, p_hold_id => %(hold_id)s::uuid);

-- name: record_usage
SELECT * FROM api.record_usage_v2(
    p_api_key => %(api_key)s::text,
    p_events  => %(events)b::api.usage_event_v1[]
);

-- name: record_usage_receipt
-- The same call, answered as the JSON of the HTTP route's receipt (api.models.UsageReceipt;
-- index is the position in the batch, from 0): PostgreSQL builds it in one pass, where the
-- service would build 2,000 objects for a batch of 1,000 events. The events come as one
-- binary array per field, made into api.usage_event_v1 here: psycopg sends those arrays in C,
-- about a fifth of the time it takes to send the composites.
SELECT json_build_object(
    'accepted', count(*) FILTER (WHERE r.outcome = 'accepted'),
    'duplicates', count(*) FILTER (WHERE r.outcome = 'duplicate'),
    'rejected', count(*) FILTER (WHERE r.outcome = 'rejected'),
    'results', json_agg(json_build_object(
        'index', r.ord - 1, 'id', r.id, 'outcome', r.outcome, 'reason', r.reason, 'cost', r.cost,
        'currency', r.currency
    ) ORDER BY r.ord)
)::text AS receipt
FROM api.record_usage_v2(
    p_api_key => %(api_key)s::text,
    p_events  => array(
        SELECT row(e.id, e.account, e.agent, e.metric, e.quantity, e.occurred_at)::api.usage_event_v1
        FROM unnest(
            %(ids)b::text[], %(accounts)b::text[], %(agents)b::text[], %(metrics)b::text[],
            %(quantities)b::numeric[], %(occurred_at)b::timestamptz[]
        ) WITH ORDINALITY AS e (id, account, agent, metric, quantity, occurred_at, ord)
        ORDER BY e.ord
    )
) AS r;

-- name: usage
SELECT * FROM api.usage_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_metric  => %(metric)s::text,
    p_period  => %(period)s::text,
    p_from    => %(start)s::timestamptz,
    p_to      => %(end)s::timestamptz
);

-- name: set_action_price
SELECT * FROM api.set_action_price_v1(
    p_api_key     => %(api_key)s::text,
    p_action      => %(action)s::text,
    p_price       => %(price)s::numeric,
    p_currency    => %(currency)s::text,
    p_description => %(description)s::text
);

-- name: set_metric_price
SELECT * FROM api.set_metric_price_v1(
    p_api_key    => %(api_key)s::text,
    p_metric     => %(metric)s::text,
    p_unit_price => %(unit_price)s::numeric,
    p_currency   => %(currency)s::text
);

-- name: set_spend_cap
SELECT * FROM api.set_spend_cap_v1(
    p_api_key    => %(api_key)s::text,
    p_account    => %(account)s::text,
    p_agent      => %(agent)s::text,
    p_period     => %(period)s::text,
    p_currency   => %(currency)s::text,
    p_hard_limit => %(hard_limit)s::numeric,
    p_soft_pct   => %(soft_pct)s::integer
);

-- name: operator_set_action_price
SELECT * FROM tollgate.set_action_price(
    p_action      => %(action)s::text,
    p_price       => %(price)s::numeric,
    p_currency    => %(currency)s::text,
    p_description => %(description)s::text
);

-- name: set_low_balance
SELECT * FROM api.set_low_balance_v1(
    p_api_key   => %(api_key)s::text,
    p_account   => %(account)s::text,
    p_currency  => %(currency)s::text,
    p_threshold => %(threshold)s::numeric
);

-- name: set_allow_negative
SELECT * FROM api.set_allow_negative_v1(
    p_api_key  => %(api_key)s::text,
    p_account  => %(account)s::text,
    p_currency => %(currency)s::text,
    p_allow    => %(allow)s::boolean
);

-- name: set_overdraft_limit
SELECT * FROM api.set_overdraft_limit_v1(
    p_api_key  => %(api_key)s::text,
    p_account  => %(account)s::text,
    p_currency => %(currency)s::text,
    p_limit    => %(limit)s::numeric
);

-- name: register_consumer
SELECT * FROM api.register_consumer_v1(p_consumer => %(consumer)s::text, p_from_start => %(from_start)s::boolean);

-- name: claim_deliveries
-- The event under the names of the JSON handlers send on (db/listener.py's OutboxEvent).
SELECT
    d.lease_token,
    d.outbox_id,
    d.event_id AS id,
    d.topic AS type,
    d.account_id,
    d.payload AS data,
    d.created_at AS created,
    d.attempt
FROM api.claim_deliveries_v2(
    p_consumer     => %(consumer)s::text,
    p_limit        => %(limit)s::integer,
    p_lease        => %(lease)s::interval,
    p_max_attempts => %(max_attempts)s::integer
) AS d;

-- name: renew_leases
SELECT api.renew_leases_v2(
    p_consumer    => %(consumer)s::text,
    p_lease_token => %(lease_token)s::uuid,
    p_outbox_ids  => %(outbox_ids)s::bigint[],
    p_lease       => %(lease)s::interval
) AS count;

-- name: release_deliveries
SELECT api.release_deliveries_v2(
    p_consumer => %(consumer)s::text, p_lease_token => %(lease_token)s::uuid, p_outbox_ids => %(outbox_ids)s::bigint[]
) AS count;

-- name: unregister_consumer
SELECT api.unregister_consumer_v1(p_consumer => %(consumer)s::text) AS count;

-- name: prune_deliveries
SELECT api.prune_deliveries_v1(p_older_than => %(older_than)s::interval) AS count;

-- name: archive_batch
SELECT retention.archive_batch(
    p_kind => %(kind)s::text, p_older_than => %(older_than)s::interval, p_batch => %(batch)s::integer
) AS count;

-- name: deliveries_done
SELECT api.deliveries_done_v2(
    p_consumer => %(consumer)s::text, p_lease_token => %(lease_token)s::uuid, p_outbox_ids => %(outbox_ids)s::bigint[]
) AS count;

-- name: delivery_failed
SELECT api.delivery_failed_v2(
    p_consumer     => %(consumer)s::text,
    p_lease_token  => %(lease_token)s::uuid,
    p_outbox_id    => %(outbox_id)s::bigint,
    p_error        => %(error)s::text,
    p_max_attempts => %(max_attempts)s::integer,
    p_retry_base   => %(retry_base)s::interval
) AS status;

-- name: next_delivery_due
SELECT api.next_delivery_due_v1(p_consumer => %(consumer)s::text) AS due;

-- name: dead_deliveries
SELECT * FROM api.dead_deliveries_v1(p_consumer => %(consumer)s::text);

-- name: replay_deliveries
SELECT api.replay_deliveries_v1(p_consumer => %(consumer)s::text, p_event_id => %(event_id)s::uuid) AS count;

-- name: list_reviews
SELECT * FROM api.list_reviews_v1(p_api_key => %(api_key)s::text, p_status => %(status)s::text);

-- name: decide_review
SELECT * FROM api.decide_review_v1(
    p_api_key   => %(api_key)s::text,
    p_review_id => %(review_id)s::uuid,
    p_decision  => %(decision)s::text,
    p_note      => %(note)s::text
);

-- name: set_risk_rule
SELECT * FROM api.set_risk_rule_v1(
    p_api_key          => %(api_key)s::text,
    p_account          => %(account)s::text,
    p_currency         => %(currency)s::text,
    p_max_amount       => %(max_amount)s::numeric,
    p_velocity_count   => %(velocity_count)s::integer,
    p_velocity_seconds => %(velocity_seconds)s::integer,
    p_first_amount_max => %(first_amount_max)s::numeric
);

-- name: import_reconciliation
SELECT * FROM api.import_reconciliation_v2(
    p_api_key => %(api_key)s::text,
    p_source  => %(source)s::text,
    p_lines   => %(lines)b::api.reconciliation_line_v1[]
);

-- name: operator_import_reconciliation
SELECT * FROM tollgate.import_reconciliation(
    p_source      => %(source)s::text,
    p_imported_by => 'db:' || session_user,
    p_lines       => %(lines)b::api.reconciliation_line_v1[]
);

-- name: operator_stripe_states
-- Tollgate's record of these Stripe objects (its PaymentIntents and subscriptions), one line
-- each: what `tollgate reconcile stripe` compares before and after applying Stripe's state.
SELECT stripe_id, concat_ws(' ', status, 'refunded', amount_refunded) AS state
FROM tollgate.payment_intents WHERE stripe_id = ANY (%(stripe_ids)s::text[])
UNION ALL
SELECT stripe_id, concat_ws(' ', status, plan, 'until', current_period_end) AS state
FROM tollgate.subscriptions WHERE stripe_id = ANY (%(stripe_ids)s::text[]);

-- name: whoami
SELECT * FROM api.whoami_v1(p_api_key => %(api_key)s::text);

-- name: metrics
SELECT metric, labels, value FROM api.metrics_v1();

-- name: currencies
SELECT * FROM api.currencies_v1();

-- name: list_actions
-- Every list: a page of at most limit rows after the key of the last row of the previous page
-- (NULL: from the start).
SELECT * FROM api.list_actions_v1(
    p_api_key => %(api_key)s::text, p_limit => %(limit)s::integer, p_after => %(after)s::text
);

-- name: list_metric_prices
SELECT * FROM api.list_metric_prices_v1(
    p_api_key => %(api_key)s::text, p_limit => %(limit)s::integer, p_after => %(after)s::text
);

-- name: list_spend_caps
SELECT * FROM api.list_spend_caps_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_limit   => %(limit)s::integer,
    p_after   => %(after)s::uuid
);

-- name: list_wallets
SELECT * FROM api.list_wallets_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_limit   => %(limit)s::integer,
    p_after   => %(after)s::text
);

-- name: list_holds
SELECT * FROM api.list_holds_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_status  => %(status)s::text,
    p_action  => %(action)s::text,
    p_agent   => %(agent)s::text,
    p_limit   => %(limit)s::integer,
    p_after   => %(after)s::uuid
);

-- name: list_risk_rules
SELECT * FROM api.list_risk_rules_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_limit   => %(limit)s::integer,
    p_after   => %(after)s::uuid
);

-- name: list_account_keys
SELECT * FROM api.list_account_keys_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_limit   => %(limit)s::integer,
    p_after   => %(after)s::uuid
);

-- name: list_payments
SELECT * FROM api.list_payments_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_status  => %(status)s::text,
    p_purpose => %(purpose)s::text,
    p_limit   => %(limit)s::integer,
    p_after   => %(after)s::uuid
);

-- name: list_events
-- The event under the names of the JSON listeners receive (db/listener.py's OutboxEvent).
SELECT e.outbox_id, e.event_id AS id, e.topic AS type, e.account_id, e.payload AS data, e.created_at AS created
FROM api.list_events_v1(
    p_api_key => %(api_key)s::text,
    p_account => %(account)s::text,
    p_topic   => %(topic)s::text,
    p_limit   => %(limit)s::integer,
    p_after   => %(after)s::bigint
) AS e;

-- name: x402_claim
SELECT api.x402_claim_v1(
    p_api_key        => %(api_key)s::text,
    p_account        => %(account)s::text,
    p_identifier     => %(identifier)s::text,
    p_payload_sha256 => %(payload_sha256)s::bytea,
    p_action         => %(action)s::text,
    p_cost           => %(cost)s::numeric,
    p_cost_minor     => %(cost_minor)s::bigint,
    p_currency       => %(currency)s::text
) AS response;

-- name: x402_settle
SELECT api.x402_settle_v1(
    p_api_key    => %(api_key)s::text,
    p_account    => %(account)s::text,
    p_identifier => %(identifier)s::text,
    p_hold_id    => %(hold_id)s::uuid,
    p_response   => %(response)s::jsonb
) AS settled;
