-- x402 paid retries: one settlement per account and payment identifier, bound to its payload
-- (db/sql/76-paid-retries.sql; the functions and triggers are re-applied after every migration run).
-- depends: 0035.entitlement-uses-in-place

SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.x402_settlements (
    account_uuid       uuid        NOT NULL CONSTRAINT x402_settlements_account_uuid_fkey REFERENCES tollgate.accounts,
    -- The client's identifier: 16 to 128 of A-Z a-z 0-9 _ - (the extension's format).
    payment_identifier text        NOT NULL CONSTRAINT x402_settlements_identifier_format CHECK (payment_identifier ~ '^[A-Za-z0-9_-]{16,128}$'),
    -- SHA-256 of the payment payload, canonical JSON (sorted keys, no spaces).
    payload_sha256     bytea       NOT NULL CONSTRAINT x402_settlements_payload_sha256_length CHECK (length(payload_sha256) = 32),
    -- The answer as it was sent (body and PAYMENT-RESPONSE); NULL until the payment settled.
    response           jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    settled_at         timestamptz,
    CONSTRAINT x402_settlements_pkey PRIMARY KEY (account_uuid, payment_identifier),
    CONSTRAINT x402_settlements_settled_has_response CHECK ((response IS NULL) = (settled_at IS NULL))
);
