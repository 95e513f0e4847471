-- Entitlements from one-off payments: a succeeded payment for an action (its purpose) entitles
-- one run of that action. The row is written when the payment succeeds
-- (tollgate.payment_entitlement_follow), used up by api.authorize_v1, taken back when the
-- payment is refunded (65-refunds.sql), and held while the payment is under review or disputed.

-- ===== Tables: created once, on a fresh database; a change to them is a migration =====
SET LOCAL ROLE tollgate_owner;

CREATE TABLE tollgate.payment_entitlements (
    payment_intent_id uuid        PRIMARY KEY CONSTRAINT payment_entitlements_payment_intent_id_fkey REFERENCES tollgate.payment_intents,
    account_uuid        uuid        NOT NULL CONSTRAINT payment_entitlements_account_uuid_fkey REFERENCES tollgate.accounts,
    action            tollgate.purpose NOT NULL,
    uses_left         integer     NOT NULL CONSTRAINT payment_entitlements_uses_left_range CHECK (uses_left >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    used_at           timestamptz,
    -- Whether a run is left: the usable index's condition. A use changes uses_left but not this,
    -- so it updates the row in place (a HOT update: no new index entries), where a condition on
    -- uses_left itself would add an entry to every index at every use.
    usable            boolean     NOT NULL GENERATED ALWAYS AS (uses_left > 0) STORED
) WITH (fillfactor = 90);

CREATE INDEX payment_entitlements_usable_idx ON tollgate.payment_entitlements (account_uuid, action, created_at)
    WHERE usable;

-- ===== Functions and views: re-applied by every migrate =====
SET LOCAL ROLE tollgate_owner;

-- ---------------------------------------------------------------------------------------------
-- Entitlements from payments and subscriptions
-- ---------------------------------------------------------------------------------------------

-- A payment for an action that succeeds entitles one run of it, if it paid at least the
-- action's price in its currency (an unpriced action takes any payment); a full refund takes it
-- back (a partial one or a lost dispute: tollgate.take_back, 65-refunds.sql).
CREATE OR REPLACE FUNCTION tollgate.payment_entitlement_follow() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status = OLD.status OR NEW.purpose IS NULL OR NEW.purpose = 'credits' THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'succeeded' THEN
        INSERT INTO tollgate.payment_entitlements (payment_intent_id, account_uuid, action, uses_left)
        SELECT NEW.id, NEW.account_uuid, NEW.purpose, 1
        WHERE NOT EXISTS (SELECT FROM tollgate.actions a
                          WHERE a.name = NEW.purpose AND (a.currency <> NEW.currency OR a.price > NEW.amount))
        ON CONFLICT ON CONSTRAINT payment_entitlements_pkey DO NOTHING;
    ELSIF NEW.status = 'refunded' THEN
        UPDATE tollgate.payment_entitlements SET uses_left = 0 WHERE payment_intent_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

-- Entitlements only get used up.
CREATE OR REPLACE FUNCTION tollgate.payment_entitlements_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.payment_intent_id, NEW.account_uuid, NEW.action, NEW.created_at)
       IS DISTINCT FROM (OLD.payment_intent_id, OLD.account_uuid, OLD.action, OLD.created_at)
       OR NEW.uses_left > OLD.uses_left THEN
        RAISE EXCEPTION 'entitlement from payment %: only uses_left may change, and only down', OLD.payment_intent_id
            USING ERRCODE = 'TG011', CONSTRAINT = 'payment_entitlements_only_used_up',
                  SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$;

-- ===== Triggers: re-applied by every migrate, after every file's functions =====
SET LOCAL ROLE tollgate_owner;

-- --- tollgate.payment_entitlements ---

CREATE OR REPLACE TRIGGER payment_entitlements_10_guard
    BEFORE UPDATE ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_entitlements_guard();

CREATE OR REPLACE TRIGGER payment_entitlements_25_review_gate
    BEFORE UPDATE ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.entitlements_review_gate();

CREATE OR REPLACE TRIGGER payment_entitlements_26_dispute_gate
    BEFORE UPDATE ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.entitlements_dispute_gate();

CREATE OR REPLACE TRIGGER payment_entitlements_50_audit
    AFTER INSERT OR UPDATE OF uses_left ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.payment_entitlements_audit();

CREATE OR REPLACE TRIGGER payment_entitlements_no_delete
    BEFORE DELETE ON tollgate.payment_entitlements
    FOR EACH ROW EXECUTE FUNCTION tollgate.refuse_change();
