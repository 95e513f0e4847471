-- x402 paid retries (docs/X402.md): one settlement per account and payment identifier (the
-- x402 payment-identifier extension's id, or the card payload's paymentId). The identifier is
-- bound to the SHA-256 of the exact payment payload it first came with: the same payload again
-- is answered from the stored response (nothing is charged twice), another payload is refused
-- (TG020). The claim's row lock serialises twins: the second waits, then replays.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
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

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- api: x402 settlements
-- ---------------------------------------------------------------------------------------------

-- Claim p_identifier for the key's account (p_account: admin keys only), bound to
-- p_payload_sha256, and lock it until the caller's transaction ends. Returns the stored
-- response when that payload was settled before, NULL when it is the caller's to settle.
-- The same identifier with another payload: SQLSTATE TG020.
CREATE OR REPLACE FUNCTION api.x402_claim_v1(
    p_api_key text, p_account text, p_identifier text, p_payload_sha256 bytea
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k     tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct  tollgate.accounts := tollgate.account_for(k, p_account);
    claim tollgate.x402_settlements;
BEGIN
    INSERT INTO tollgate.x402_settlements (account_uuid, payment_identifier, payload_sha256)
    VALUES (acct.id, p_identifier, p_payload_sha256)
    ON CONFLICT ON CONSTRAINT x402_settlements_pkey DO NOTHING;
    SELECT s.* INTO STRICT claim
    FROM tollgate.x402_settlements AS s
    WHERE s.account_uuid = acct.id AND s.payment_identifier = p_identifier
    FOR UPDATE;
    IF claim.payload_sha256 <> p_payload_sha256 THEN
        RAISE EXCEPTION 'payment identifier % was used with another payment payload', p_identifier
            USING ERRCODE = 'TG020', CONSTRAINT = 'x402_settlements_same_payload';
    END IF;
    RETURN claim.response;
END
$$;

-- Store the answer of a claimed identifier, in the transaction that claimed it (and placed
-- the hold it names). Settling a settled identifier is refused (TG011). Returns true.
CREATE OR REPLACE FUNCTION api.x402_settle_v1(
    p_api_key text, p_account text, p_identifier text, p_response jsonb
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k    tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct tollgate.accounts := tollgate.account_for(k, p_account);
BEGIN
    UPDATE tollgate.x402_settlements AS s
    SET response = p_response, settled_at = now()
    WHERE s.account_uuid = acct.id AND s.payment_identifier = p_identifier;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment identifier % was not claimed', p_identifier
            USING ERRCODE = 'TG003', CONSTRAINT = 'x402_settlements_claimed';
    END IF;
    RETURN true;
END
$$;

-- A settlement keeps its payload binding, and its response once settled.
CREATE OR REPLACE FUNCTION tollgate.x402_settlements_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.response IS NOT NULL
       OR (NEW.account_uuid, NEW.payment_identifier, NEW.payload_sha256)
          IS DISTINCT FROM (OLD.account_uuid, OLD.payment_identifier, OLD.payload_sha256) THEN
        RAISE EXCEPTION 'x402 settlement % is bound to its payload and its answer', OLD.payment_identifier
            USING ERRCODE = 'TG011', CONSTRAINT = 'x402_settlements_immutable';
    END IF;
    RETURN NEW;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.x402_settlements ---

CREATE OR REPLACE TRIGGER x402_settlements_10_guard
    BEFORE UPDATE ON tollgate.x402_settlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.x402_settlements_guard();

CREATE OR REPLACE TRIGGER x402_settlements_no_delete
    BEFORE DELETE ON tollgate.x402_settlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
