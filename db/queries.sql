-- The queries Tollgate's Python code runs, each loaded by name (db/queries.py).
-- Every one is a single call of a stored function in schema api: the rules live there.

-- name: ping
SELECT 1 AS ok;

-- name: begin_payment
SELECT * FROM api.begin_payment_v1(
    p_api_key         => %(api_key)s::text,
    p_idempotency_key => %(idempotency_key)s::text,
    p_account         => %(account)s::text,
    p_amount          => %(amount)s::bigint,
    p_currency        => %(currency)s::text,
    p_purpose         => %(purpose)s::text,
    p_description     => %(description)s::text,
    p_payment_method  => %(payment_method)s::text
);

-- name: finish_payment
SELECT api.finish_payment_v1(
    p_api_key       => %(api_key)s::text,
    p_payment_id    => %(payment_id)s::uuid,
    p_stripe_id     => %(stripe_id)s::text,
    p_status        => %(status)s::text,
    p_client_secret => %(client_secret)s::text
) AS response;

-- name: get_payment
SELECT * FROM api.get_payment_v1(p_api_key => %(api_key)s::text, p_ref => %(ref)s::text);

-- name: can_continue
SELECT * FROM api.can_continue_v1(
    p_api_key => %(api_key)s::text,
    p_account  => %(account)s::text,
    p_purpose  => %(purpose)s::text
);

-- name: ingest_stripe_event
SELECT * FROM api.ingest_stripe_event_v1(p_event => %(event)s::jsonb);

-- name: create_api_key
SELECT * FROM api.create_api_key_v1(
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

-- name: balances
SELECT * FROM api.balances_v1(p_api_key => %(api_key)s::text, p_account => %(account)s::text);
