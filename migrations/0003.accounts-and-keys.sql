-- Accounts and API keys.
-- depends: 0002.currencies

SET LOCAL ROLE tollgate_owner;

-- The customer an agent acts for. Agents and their builders know it by external_id
-- (e.g. "user_123"); everything else refers to the uuid.
CREATE TABLE tollgate.accounts (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id text        NOT NULL
                CONSTRAINT accounts_external_id_key UNIQUE
                CONSTRAINT accounts_external_id_format
                    CHECK (external_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE tollgate.accounts IS 'The customers agents act for. external_id is the caller''s own id.';

-- Bearer keys for agents. Only the SHA-256 of a key is stored: keys are 256-bit random
-- strings, so a fast hash is enough and lets a request authenticate with one index lookup.
CREATE TABLE tollgate.api_keys (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id  uuid        NOT NULL CONSTRAINT api_keys_account_id_fkey REFERENCES tollgate.accounts,
    -- An admin key may act for every account; any other key only for account_id.
    is_admin    boolean     NOT NULL DEFAULT false,
    key_hash    bytea       NOT NULL
                CONSTRAINT api_keys_key_hash_key UNIQUE
                CONSTRAINT api_keys_key_hash_length CHECK (octet_length(key_hash) = 32),
    -- The first characters of the key, to tell keys apart in listings and logs.
    key_prefix  text        NOT NULL CONSTRAINT api_keys_key_prefix_length CHECK (length(key_prefix) BETWEEN 4 AND 16),
    label       text        CONSTRAINT api_keys_label_length CHECK (length(label) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT api_keys_revoked_after_created CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);

CREATE INDEX api_keys_account_id_idx ON tollgate.api_keys (account_id);

COMMENT ON TABLE tollgate.api_keys IS 'Agent API keys; only a SHA-256 hash of each key is kept.';
