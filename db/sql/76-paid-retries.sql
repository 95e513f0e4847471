-- x402 paid retries (docs/X402.md): one settlement per account and payment identifier (the
-- x402 payment-identifier extension's id, or the card payload's paymentId). The identifier is
-- bound to the SHA-256 of the exact payment payload it first came with and to the request it
-- paid for (action, cost, currency as asked): the same payload for the same request again is
-- answered from the stored response only while the hold it placed is active (a retry after a
-- lost answer); once that hold is captured, released or expired the payment is used (TG022).
-- Another payload or another request is refused (TG020). The stored answer is checked by the
-- database against the hold the same transaction placed. The claim's row lock serialises
-- twins: the second waits, then replays.

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
    CONSTRAINT x402_settlements_settled_has_response CHECK ((response IS NULL) = (settled_at IS NULL)),
    -- What was asked (action, cost, cost_minor, currency), built by api.x402_claim_v1; NULL on
    -- settlements made before it was kept, which are never replayed.
    request            jsonb,
    -- The hold the settlement placed, checked by api.x402_settle_v1.
    hold_id            uuid        CONSTRAINT x402_settlements_hold_id_fkey REFERENCES tollgate.holds,
    CONSTRAINT x402_settlements_one_per_hold UNIQUE (account_uuid, hold_id)
);

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- api: x402 settlements
-- ---------------------------------------------------------------------------------------------

-- Claim p_identifier for the key's account (p_account: admin keys only), bound to
-- p_payload_sha256 and to the request (p_action, p_cost or p_cost_minor, p_currency, as asked),
-- and lock it until the caller's transaction ends. Returns NULL when it is the caller's to
-- settle; the stored response when that payload was settled for that request and its hold is
-- still active. The same identifier with another payload or request: TG020. A settled one
-- whose hold was captured, released or has expired (or was settled before holds were
-- recorded): TG022 (the payment was used).
CREATE OR REPLACE FUNCTION api.x402_claim_v1(
    p_api_key text, p_account text, p_identifier text, p_payload_sha256 bytea,
    p_action text, p_cost numeric, p_cost_minor bigint, p_currency text
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k     tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct  tollgate.accounts := tollgate.account_for(k, p_account);
    asked jsonb := jsonb_build_object(
        'action', p_action, 'cost', p_cost, 'cost_minor', p_cost_minor, 'currency', upper(p_currency)
    );
    claim tollgate.x402_settlements;
    held  tollgate.holds;
BEGIN
    INSERT INTO tollgate.x402_settlements (account_uuid, payment_identifier, payload_sha256, request)
    VALUES (acct.id, p_identifier, p_payload_sha256, asked)
    ON CONFLICT ON CONSTRAINT x402_settlements_pkey DO NOTHING;
    SELECT s.* INTO STRICT claim
    FROM tollgate.x402_settlements AS s
    WHERE s.account_uuid = acct.id AND s.payment_identifier = p_identifier
    FOR UPDATE;
    IF claim.payload_sha256 <> p_payload_sha256 THEN
        RAISE EXCEPTION 'payment identifier % was used with another payment payload', p_identifier
            USING ERRCODE = 'TG020', CONSTRAINT = 'x402_settlements_same_payload';
    END IF;
    IF claim.request IS NOT NULL AND claim.request <> asked THEN
        RAISE EXCEPTION 'payment identifier % was used for another request (action, cost or currency)', p_identifier
            USING ERRCODE = 'TG020', CONSTRAINT = 'x402_settlements_same_request';
    ELSIF claim.request IS NULL AND claim.response IS NULL THEN  -- claimed before requests were kept
        UPDATE tollgate.x402_settlements AS s SET request = asked
        WHERE s.account_uuid = acct.id AND s.payment_identifier = p_identifier;
    END IF;
    IF claim.response IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT h.* INTO held FROM tollgate.holds AS h WHERE h.id = claim.hold_id;
    IF held.id IS NULL OR held.status <> 'active' OR held.expires_at <= now() THEN
        RAISE EXCEPTION 'payment % was already used: its hold is %; pay again with a new payment identifier',
            p_identifier, CASE WHEN held.status = 'active' THEN 'expired' ELSE coalesce(held.status::text, 'not recorded') END
            USING ERRCODE = 'TG022', CONSTRAINT = 'x402_settlements_used';
    END IF;
    RETURN claim.response;
END
$$;

-- Store the answer of a claimed identifier: p_response is the authorization the same
-- transaction made, which placed hold p_hold_id. The database checks what matters: the hold
-- is the claim's account's, active, for the claimed action, and was placed in this
-- transaction (its row's xmin is this transaction's id); the body allows the run on that
-- hold and that account. Settling a settled identifier is refused (TG011). Returns true.
CREATE OR REPLACE FUNCTION api.x402_settle_v1(
    p_api_key text, p_account text, p_identifier text, p_hold_id uuid, p_response jsonb
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k     tollgate.api_keys := tollgate.authenticate(p_api_key);
    acct  tollgate.accounts := tollgate.account_for(k, p_account);
    claim tollgate.x402_settlements;
    body  jsonb := p_response -> 'body';
BEGIN
    SELECT s.* INTO claim
    FROM tollgate.x402_settlements AS s
    WHERE s.account_uuid = acct.id AND s.payment_identifier = p_identifier
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment identifier % was not claimed', p_identifier
            USING ERRCODE = 'TG003', CONSTRAINT = 'x402_settlements_claimed';
    END IF;
    IF NOT EXISTS (
        SELECT FROM tollgate.holds AS h
        WHERE h.id = p_hold_id
          AND h.account_uuid = acct.id
          AND h.status = 'active'
          AND h.action = claim.request ->> 'action'
          AND h.xmin = pg_current_xact_id()::xid
    ) THEN
        RAISE EXCEPTION 'hold % is not an active hold of this account for % placed in this transaction',
            p_hold_id, claim.request ->> 'action'
            USING ERRCODE = 'TG003', CONSTRAINT = 'x402_settlements_own_hold';
    END IF;
    IF jsonb_typeof(body) IS DISTINCT FROM 'object'
       OR body -> 'allowed' IS DISTINCT FROM 'true'::jsonb
       OR body ->> 'hold_id' IS DISTINCT FROM p_hold_id::text
       OR body ->> 'account_id' IS DISTINCT FROM acct.external_id
       OR body ->> 'action' IS DISTINCT FROM claim.request ->> 'action'
       OR jsonb_typeof(p_response -> 'payment_response') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'the answer must allow % on hold % of account %, with its PAYMENT-RESPONSE',
            claim.request ->> 'action', p_hold_id, acct.external_id
            USING ERRCODE = '23514', CONSTRAINT = 'x402_settlements_answer';
    END IF;
    UPDATE tollgate.x402_settlements AS s
    SET response = p_response, hold_id = p_hold_id, settled_at = now()
    WHERE s.account_uuid = acct.id AND s.payment_identifier = p_identifier;
    RETURN true;
END
$$;

-- A settlement keeps its payload and request binding, and its response and hold once settled.
CREATE OR REPLACE FUNCTION tollgate.x402_settlements_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF OLD.response IS NOT NULL
       OR (NEW.account_uuid, NEW.payment_identifier, NEW.payload_sha256)
          IS DISTINCT FROM (OLD.account_uuid, OLD.payment_identifier, OLD.payload_sha256)
       OR (OLD.request IS NOT NULL AND NEW.request IS DISTINCT FROM OLD.request) THEN
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
