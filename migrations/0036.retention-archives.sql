-- Retention: archive tables beside the tables that only grow (payment_events, usage_events,
-- audit_log and audit_seals, outbox), the role that alone moves rows into them
-- (tollgate_retention, owner of schema retention: db/sql/89-retention.sql), and BRIN indexes
-- on the arrival time of Stripe and usage events, so retention finds old rows without a
-- B-tree that every insert would pay for.
-- depends: 0035.entitlement-uses-in-place

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_retention') THEN
        CREATE ROLE tollgate_retention NOLOGIN;
    END IF;
END
$roles$;

-- The migrating role creates the retention functions as tollgate_retention.
GRANT tollgate_retention TO CURRENT_USER;

CREATE SCHEMA retention AUTHORIZATION tollgate_retention;

COMMENT ON SCHEMA retention IS 'Retention: moving old rows in a final state to the archive tables. No grants.';

SET LOCAL ROLE tollgate_owner;

CREATE INDEX payment_events_received_at_brin ON tollgate.payment_events USING brin (received_at);

CREATE TABLE tollgate.payment_events_archive (
    id                 text        CONSTRAINT payment_events_archive_pkey PRIMARY KEY,
    account_uuid         uuid        CONSTRAINT payment_events_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    type               text        NOT NULL,
    stripe_object_id   text,
    target_status      tollgate.payment_status,
    stripe_created     timestamptz NOT NULL,
    payload            jsonb       NOT NULL,
    state              tollgate.event_state NOT NULL,
    note               text,
    payment_intent_id  uuid,
    received_at        timestamptz NOT NULL,
    processed_at       timestamptz NOT NULL,
    subscription_id    uuid
);

CREATE INDEX payment_events_archive_payment_intent_idx ON tollgate.payment_events_archive (payment_intent_id);

COMMENT ON TABLE tollgate.payment_events_archive IS
    'Stripe events in a final state moved out of payment_events by retention; append-only.';

CREATE INDEX usage_events_received_at_brin ON tollgate.usage_events USING brin (received_at);

CREATE TABLE tollgate.usage_events_archive (
    account_uuid   uuid        NOT NULL CONSTRAINT usage_events_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    id           text        NOT NULL,
    agent_id     text        NOT NULL,
    metric       text        NOT NULL,
    quantity     numeric     NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    cost         numeric,
    currency     text,
    posting_id   uuid,
    CONSTRAINT usage_events_archive_pkey PRIMARY KEY (account_uuid, id)
);

CREATE INDEX usage_events_archive_metric_time_idx ON tollgate.usage_events_archive (account_uuid, metric, occurred_at);

COMMENT ON TABLE tollgate.usage_events_archive IS 'Usage events moved out of usage_events by retention; append-only.';

CREATE TABLE tollgate.outbox_archive (
    id          bigint      CONSTRAINT outbox_archive_pkey PRIMARY KEY,
    event_id    uuid        NOT NULL CONSTRAINT outbox_archive_event_id_key UNIQUE,
    account_uuid  uuid        NOT NULL CONSTRAINT outbox_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    topic       text        NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    xact_id     xid8
);

CREATE INDEX outbox_archive_account_uuid_idx ON tollgate.outbox_archive (account_uuid, id);

COMMENT ON TABLE tollgate.outbox_archive IS 'Outbox events every consumer received, moved out of outbox by retention; append-only.';

CREATE TABLE tollgate.audit_log_archive (
    id          bigint      CONSTRAINT audit_log_archive_pkey PRIMARY KEY,
    account_uuid  uuid        NOT NULL CONSTRAINT audit_log_archive_account_uuid_fkey REFERENCES tollgate.accounts,
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    action      text        NOT NULL,
    old_value   text,
    new_value   text,
    actor       text        NOT NULL,
    db_role     text        NOT NULL,
    at          timestamptz NOT NULL,
    note        text,
    xact        bigint
);

CREATE INDEX audit_log_archive_entity_idx ON tollgate.audit_log_archive (entity, entity_id, id);
CREATE INDEX audit_log_archive_account_uuid_idx ON tollgate.audit_log_archive (account_uuid, id);

COMMENT ON TABLE tollgate.audit_log_archive IS 'Sealed audit rows moved out of audit_log by retention; append-only, still chained.';

CREATE TABLE tollgate.audit_seals_archive (
    account_uuid  uuid        NOT NULL,
    seq         bigint      NOT NULL,
    audit_id    bigint      NOT NULL CONSTRAINT audit_seals_archive_audit_id_key UNIQUE,
    prev_hash   bytea       NOT NULL,
    row_hash    bytea       NOT NULL,
    CONSTRAINT audit_seals_archive_pkey PRIMARY KEY (account_uuid, seq)
);

COMMENT ON TABLE tollgate.audit_seals_archive IS 'The seals of archived audit rows, moved with them by retention; append-only.';
