-- The analyst role, and a hash chain over the audit trail.
--
-- tollgate_analyst  NOLOGIN. SELECT on the views of schema reporting, nothing else; `tollgate
--                   analyst url` makes a read-only login role that is a member of it.
--
-- The audit trail gets one hash chain per account: each row hashes its content and its
-- predecessor's hash (seq numbers the rows of a chain), and audit_heads keeps each chain's
-- length and last hash. An edited, removed or reordered row breaks the chain; a trimmed tail
-- disagrees with the head. tollgate.verify_audit_chain() says where.
-- depends: 0011.outbox-delivery

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_analyst') THEN
        CREATE ROLE tollgate_analyst NOLOGIN;
    END IF;
END
$roles$;

SET LOCAL ROLE tollgate_owner;

ALTER TABLE tollgate.audit_log
    ADD COLUMN seq       bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN row_hash  bytea,
    -- Why, in a person's words (a reviewer's decision, for instance).
    ADD COLUMN note      text CONSTRAINT audit_log_note_length CHECK (length(note) <= 2000),
    ADD CONSTRAINT audit_log_account_seq_key UNIQUE (account_id, seq);

CREATE TABLE tollgate.audit_heads (
    account_id  uuid        PRIMARY KEY CONSTRAINT audit_heads_account_id_fkey REFERENCES tollgate.accounts,
    rows        bigint      NOT NULL CONSTRAINT audit_heads_rows_non_negative CHECK (rows >= 0),
    last_hash   bytea       NOT NULL
);

COMMENT ON TABLE tollgate.audit_heads IS 'The end of each account''s audit hash chain: its length and last hash.';
