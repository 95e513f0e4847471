-- Privileges, stated in full after every migration run.
--
-- tollgate_app: USAGE on schema api and EXECUTE on the functions listed here; nothing on the
-- tables. A new api function is unusable by the service until it is added to this list.

SET LOCAL ROLE tollgate_owner;

REVOKE ALL ON SCHEMA tollgate, api FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA tollgate FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tollgate FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA tollgate, api FROM PUBLIC;

GRANT USAGE ON SCHEMA api TO tollgate_app;
GRANT EXECUTE ON FUNCTION
    api.begin_payment_v1(bytea, text, text, bigint, text, text, text, text),
    api.finish_payment_v1(bytea, uuid, text, text, text),
    api.get_payment_v1(bytea, text),
    api.can_continue_v1(bytea, text, text),
    api.ingest_stripe_event_v1(jsonb)
TO tollgate_app;

-- Append-only tables: not even their owner (and so no SECURITY DEFINER function) may change
-- or remove a row. Triggers refuse it as well, for superusers.
REVOKE UPDATE, DELETE, TRUNCATE ON tollgate.audit_log, tollgate.outbox FROM tollgate_owner;
REVOKE DELETE, TRUNCATE ON tollgate.payment_events, tollgate.payment_intents FROM tollgate_owner;
