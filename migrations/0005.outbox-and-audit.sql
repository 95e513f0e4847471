-- The outbox (durable announcements, written in the transaction that makes the change) and
-- the append-only audit trail of status changes.
-- depends: 0004.payments

SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.outbox (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Stable id consumers use to recognise a redelivery.
    event_id    uuid        NOT NULL DEFAULT gen_random_uuid() CONSTRAINT outbox_event_id_key UNIQUE,
    account_id  uuid        NOT NULL CONSTRAINT outbox_account_id_fkey REFERENCES tollgate.accounts,
    -- e.g. payment.settled; NOTIFY goes to the channel named like the topic with _ for .
    topic       text        NOT NULL CONSTRAINT outbox_topic_format CHECK (topic ~ '^[a-z_]+\.[a-z_]+$'),
    -- Ids, not documents: small enough for a NOTIFY payload (limit 8000 bytes).
    payload     jsonb       NOT NULL CONSTRAINT outbox_payload_size CHECK (octet_length(payload::text) <= 2000),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_account_id_idx ON tollgate.outbox (account_id, id);

COMMENT ON TABLE tollgate.outbox IS 'Append-only announcements of settled and refunded payments; NOTIFY is only the wake-up.';

CREATE TABLE tollgate.audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  uuid        NOT NULL CONSTRAINT audit_log_account_id_fkey REFERENCES tollgate.accounts,
    -- What changed: the table's entity name and the row's id.
    entity      text        NOT NULL,
    entity_id   text        NOT NULL,
    action      text        NOT NULL,
    old_value   text,
    new_value   text,
    -- Who: "key:<api key id>", "stripe:<event id>", or the database role for direct SQL.
    actor       text        NOT NULL,
    -- The login role of the session, whatever actor it claims: a change made from psql
    -- shows here even if the session set tollgate.actor itself.
    db_role     text        NOT NULL DEFAULT session_user,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_entity_idx ON tollgate.audit_log (entity, entity_id, id);
CREATE INDEX audit_log_account_id_idx ON tollgate.audit_log (account_id, id);

COMMENT ON TABLE tollgate.audit_log IS 'Append-only trail of every status change: what, old -> new, when and who.';
