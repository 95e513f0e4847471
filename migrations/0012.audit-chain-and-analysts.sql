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

ALTER TABLE tollgate.audit_log
    -- Why, in a person's words (a reviewer's decision, for instance).
    ADD COLUMN note  text   CONSTRAINT audit_log_note_length CHECK (length(note) <= 2000),
    -- The writing transaction (pg_current_xact_id()), so its seal finds its rows at COMMIT.
    ADD COLUMN xact  bigint;

CREATE INDEX audit_log_xact_idx ON tollgate.audit_log (xact);

CREATE TABLE tollgate.audit_heads (
    account_id  uuid        PRIMARY KEY CONSTRAINT audit_heads_account_id_fkey REFERENCES tollgate.accounts,
    rows        bigint      NOT NULL CONSTRAINT audit_heads_rows_non_negative CHECK (rows >= 0),
    last_hash   bytea       NOT NULL
);

COMMENT ON TABLE tollgate.audit_heads IS 'The end of each account''s audit hash chain: its length and last hash.';

-- No foreign keys: one to audit_log would lock the row FOR KEY SHARE, which takes UPDATE
-- privilege, and audit_log has none for anyone; the account is the audit row's, checked there.
-- verify_audit_chain() pairs seals with rows instead.
CREATE TABLE tollgate.audit_seals (
    account_id  uuid        NOT NULL,
    seq         bigint      NOT NULL CONSTRAINT audit_seals_seq_positive CHECK (seq > 0),
    audit_id    bigint      NOT NULL CONSTRAINT audit_seals_audit_id_key UNIQUE,
    prev_hash   bytea       NOT NULL,
    row_hash    bytea       NOT NULL,
    CONSTRAINT audit_seals_pkey PRIMARY KEY (account_id, seq)
);

COMMENT ON TABLE tollgate.audit_seals IS 'Each audit row''s place in its account''s hash chain, written when its transaction commits.';

-- The rows written before the chain existed are sealed now, in (account, id) order.
-- tollgate.audit_row_hash is defined again, identically, in db/sql/85-audit.sql.
CREATE FUNCTION tollgate.audit_row_hash(p_prev bytea, p_seq bigint, r tollgate.audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(p_prev || convert_to(jsonb_build_array(
        p_seq, r.id, r.account_id, r.entity, r.entity_id, r.action, r.old_value, r.new_value,
        r.actor, r.db_role, (extract(epoch FROM r.at) * 1000000)::bigint, r.note)::text, 'UTF8'))
$$;

DO $backfill$
DECLARE
    r     tollgate.audit_log;
    acct  uuid;
    n     bigint;
    hash  bytea;
    next  bytea;
BEGIN
    FOR r IN SELECT * FROM tollgate.audit_log ORDER BY account_id, id LOOP
        IF acct IS DISTINCT FROM r.account_id THEN
            IF acct IS NOT NULL THEN
                INSERT INTO tollgate.audit_heads VALUES (acct, n, hash);
            END IF;
            acct := r.account_id;
            n := 0;
            hash := sha256(convert_to('tollgate audit chain ' || acct, 'UTF8'));
        END IF;
        n := n + 1;
        next := tollgate.audit_row_hash(hash, n, r);
        INSERT INTO tollgate.audit_seals VALUES (acct, n, r.id, hash, next);
        hash := next;
    END LOOP;
    IF acct IS NOT NULL THEN
        INSERT INTO tollgate.audit_heads VALUES (acct, n, hash);
    END IF;
END
$backfill$;
