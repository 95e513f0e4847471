-- Finding a consumer's deliveries that used up their attempts without reading all of its
-- pending ones: only a leased delivery (attempts > 0) can have used them up.
-- depends: 0015.transaction-listing

SET LOCAL ROLE tollgate_owner;

CREATE INDEX outbox_deliveries_retrying_idx ON tollgate.outbox_deliveries (consumer, next_attempt_at)
    WHERE status = 'pending' AND attempts > 0;
