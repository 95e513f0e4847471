-- The analyst role, and a hash chain over the audit trail.
--
-- tollgate_analyst  NOLOGIN. SELECT on the views of schema reporting, nothing else; `tollgate
--                   analyst url` makes a read-only login role that is a member of it.
--
-- The audit trail gets one hash chain per account. Rows are sealed at COMMIT: a seal gives an
-- audit row its number in its account's chain (seq) and a hash of its content and the previous
-- seal's hash; audit_heads keeps each chain's length and last hash. An edited, removed or
-- reordered row breaks the chain; a trimmed tail disagrees with the head.
-- tollgate.verify_audit_chain() says where.
-- depends: 0011.outbox-delivery

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_analyst') THEN
        CREATE ROLE tollgate_analyst NOLOGIN;
    END IF;
END
$roles$;

SET LOCAL ROLE tollgate_owner;

-- Why, in a person's words (a reviewer's decision, for instance).
ALTER TABLE tollgate.audit_log
    ADD COLUMN note text CONSTRAINT audit_log_note_length CHECK (length(note) <= 2000);

CREATE TABLE tollgate.audit_heads (
    account_id  uuid        PRIMARY KEY CONSTRAINT audit_heads_account_id_fkey REFERENCES tollgate.accounts,
    rows        bigint      NOT NULL CONSTRAINT audit_heads_rows_non_negative CHECK (rows >= 0),
    last_hash   bytea       NOT NULL
);

COMMENT ON TABLE tollgate.audit_heads IS 'The end of each account''s audit hash chain: its length and last hash.';

-- No foreign key to audit_log: checking one locks the row FOR KEY SHARE, which takes UPDATE
-- privilege, and audit_log has none for anyone. verify_audit_chain() pairs them instead.
CREATE TABLE tollgate.audit_seals (
    account_id  uuid        NOT NULL CONSTRAINT audit_seals_account_id_fkey REFERENCES tollgate.accounts,
    seq         bigint      NOT NULL CONSTRAINT audit_seals_seq_positive CHECK (seq > 0),
    audit_id    bigint      NOT NULL CONSTRAINT audit_seals_audit_id_key UNIQUE,
    prev_hash   bytea       NOT NULL,
    row_hash    bytea       NOT NULL,
    CONSTRAINT audit_seals_pkey PRIMARY KEY (account_id, seq)
);

COMMENT ON TABLE tollgate.audit_seals IS 'Each audit row''s place in its account''s hash chain, written when its transaction commits.';
