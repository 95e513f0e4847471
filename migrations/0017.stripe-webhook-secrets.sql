-- Stripe webhook signing secrets, so PostgreSQL verifies a webhook's Stripe-Signature itself
-- (db/sql/41-webhook-signatures.sql) instead of trusting the service to have done it.
-- depends: 0016.outbox-retrying-index

SET LOCAL ROLE tollgate_owner;

-- The signing secrets (whsec_...) of Tollgate's Stripe webhook endpoints. Several may be active
-- at once: while Stripe rolls a secret over it signs with both, and either verifies. A removed
-- secret is deleted, not kept. Operator-wide (one endpoint serves every account); only
-- tollgate_owner reads it, through the functions the `tollgate webhook-secret` command calls.
-- The secret itself is not stored: only the two HMAC-SHA256 key blocks derived from it
-- (RFC 2104), which verify a signature with two sha256() calls and no per-request XOR. They
-- are as secret as the secret.
CREATE TABLE tollgate.stripe_webhook_secrets (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The first characters of the secret ("whsec_" and four more), to tell secrets apart.
    prefix      text        NOT NULL
                CONSTRAINT stripe_webhook_secrets_prefix_length CHECK (length(prefix) BETWEEN 4 AND 16),
    -- The key padded to SHA-256's 64-byte block, XOR 0x36 (inner) and XOR 0x5c (outer).
    inner_key   bytea       NOT NULL
                CONSTRAINT stripe_webhook_secrets_inner_key_length CHECK (octet_length(inner_key) = 64),
    outer_key   bytea       NOT NULL
                CONSTRAINT stripe_webhook_secrets_outer_key_length CHECK (octet_length(outer_key) = 64),
    label       text        CONSTRAINT stripe_webhook_secrets_label_length CHECK (length(label) <= 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The same secret is registered once (adding it again is a no-op).
    CONSTRAINT stripe_webhook_secrets_inner_key_key UNIQUE (inner_key)
);

COMMENT ON TABLE tollgate.stripe_webhook_secrets IS
    'Active Stripe webhook signing secrets, as HMAC-SHA256 key blocks; read by tollgate_owner only.';
