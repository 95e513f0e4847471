-- The usage event format checks, same rules, cheaper: each length is checked apart from its
-- pattern. A bounded repetition ({1,128}) makes PostgreSQL's regex engine about 20x slower
-- per row, and every recorded event went through three of them.
-- depends: 0031.transfer-batches

SET LOCAL ROLE tollgate_owner;

ALTER TABLE tollgate.usage_events
    DROP CONSTRAINT usage_events_id_format,
    ADD CONSTRAINT usage_events_id_format CHECK (id ~ '^[\x21-\x7e]+$' AND length(id) <= 128),
    DROP CONSTRAINT usage_events_agent_id_format,
    ADD CONSTRAINT usage_events_agent_id_format
        CHECK (agent_id ~ '^([A-Za-z0-9][A-Za-z0-9_.:@-]*)?$' AND length(agent_id) <= 128),
    DROP CONSTRAINT usage_events_metric_format,
    ADD CONSTRAINT usage_events_metric_format CHECK (metric ~ '^[a-z][a-z0-9_.:-]*$' AND length(metric) <= 100);
